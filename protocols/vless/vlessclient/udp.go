package vlessclient

import (
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/v0udp"
)

// packetConn is a client UDP tunnel to one destination.
type packetConn struct {
	carrier net.Conn
	dst     protocols.Addr
	w       v0udp.Writer
	r       v0udp.Reader

	resOnce sync.Once
	resErr  error // reading the response header; set in resOnce
}

var _ tunnel.PacketConn = (*packetConn)(nil)

func newPacketConn(carrier net.Conn, hdr []byte, dst protocols.Addr) *packetConn {
	return &packetConn{carrier: carrier, dst: dst,
		w: v0udp.Writer{W: carrier, Prefix: hdr}, r: v0udp.Reader{R: carrier}}
}

// WritePacket sends b to the tunnel's destination (the first one carries
// the request header). Another destination gives an error wrapping
// tunnel.ErrOtherDestination and sends nothing.
func (p *packetConn) WritePacket(b []byte, to protocols.Addr) error {
	if to != p.dst {
		return fmt.Errorf("vless: UDP tunnel to %v cannot send to %v: %w", p.dst, to, tunnel.ErrOtherDestination)
	}
	return p.w.WritePacket(b)
}

// ReadPacket returns the next reply, from the tunnel's destination.
func (p *packetConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	p.resOnce.Do(func() { p.resErr = p.readResponse() })
	if p.resErr != nil {
		return 0, protocols.Addr{}, p.resErr
	}
	n, err := p.r.ReadPacket(b)
	if err != nil {
		return 0, protocols.Addr{}, err
	}
	return n, p.dst, nil
}

// readResponse reads and checks the response header: version, addons
// length, addons.
func (p *packetConn) readResponse() error {
	var buf [vless.MaxResponseLen]byte
	if _, err := io.ReadFull(p.carrier, buf[:2]); err != nil {
		if err == io.EOF {
			return err // closed before any reply, as V2Ray does when it has none
		}
		return fmt.Errorf("vless: UDP response header: %w", err)
	}
	n := 2 + int(buf[1])
	if _, err := io.ReadFull(p.carrier, buf[2:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("vless: UDP response header: %w", err)
	}
	if _, _, err := vless.ParseResponse(buf[:n]); err != nil {
		return fmt.Errorf("vless: UDP response header: %w", err)
	}
	return nil
}

// Close closes the carrier; a pending ReadPacket returns.
func (p *packetConn) Close() error { return p.carrier.Close() }
