package vlessserver

import (
	"fmt"
	"net"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/internal/v0udp"
)

// packetConn is a version 0 UDP tunnel handed to the Handler: one
// destination (the request's target), each datagram length-framed both
// ways. It reads through conn (so the payload that came with the header
// goes first) and writes through it (so the response header goes with the
// first reply).
type packetConn struct {
	c      net.Conn
	target protocols.Addr
	r      v0udp.Reader
	w      v0udp.Writer
}

var _ tunnel.PacketConn = (*packetConn)(nil)

func newPacketConn(carrier net.Conn, pending []byte, target protocols.Addr) *packetConn {
	c := newConn(carrier, pending)
	return &packetConn{c: c, target: target, r: v0udp.Reader{R: c}, w: v0udp.Writer{W: c}}
}

// ReadPacket returns the client's next datagram; its destination is always
// the tunnel's target.
func (p *packetConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	n, err := p.r.ReadPacket(b)
	if err != nil {
		return 0, protocols.Addr{}, err
	}
	return n, p.target, nil
}

// WritePacket sends a reply to the client. VLESS v0 frames carry no
// address, so from is not sent: the client takes every reply as coming
// from its target.
func (p *packetConn) WritePacket(b []byte, from protocols.Addr) error {
	if err := p.w.WritePacket(b); err != nil {
		return fmt.Errorf("vless: UDP reply from %v: %w", from, err)
	}
	return nil
}

// Close closes the carrier (sending the response header first if no reply
// did, as V2Ray's client expects one).
func (p *packetConn) Close() error { return p.c.Close() }
