package vmessserver

import (
	"fmt"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// packetConn is a VMess UDP tunnel handed to the Handler: one destination
// (the request's target), one datagram per body chunk both ways, as
// V2Ray's packet body (its AuthenticationReader/Writer with
// TransferTypePacket).
type packetConn struct {
	c      *conn
	target protocols.Addr
	max    int
}

var _ tunnel.PacketConn = (*packetConn)(nil)

// ReadPacket returns the next request chunk as a datagram to the target.
func (p *packetConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	n, err := p.c.r.ReadChunk(b)
	if err != nil {
		return 0, protocols.Addr{}, err
	}
	return n, p.target, nil
}

// WritePacket seals b as one response chunk (the response header goes with
// the first). from is not carried: VMess chunks have no address. An empty
// datagram is not sent, since an empty chunk ends the body.
func (p *packetConn) WritePacket(b []byte, from protocols.Addr) error {
	if len(b) == 0 {
		return nil
	}
	if len(b) > p.max {
		return fmt.Errorf("vmess: UDP reply of %d bytes is longer than a chunk carries (%d)", len(b), p.max)
	}
	if _, err := p.c.w.Write(b); err != nil {
		return err
	}
	return nil
}

// Close closes the carrier.
func (p *packetConn) Close() error { return p.c.Close() }
