package vmessclient

import (
	"fmt"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// packetConn is a client UDP tunnel to one destination: one datagram per
// body chunk.
type packetConn struct {
	c   *conn
	dst protocols.Addr
	max int
}

var _ tunnel.PacketConn = (*packetConn)(nil)

// WritePacket seals b as one request chunk (the first carries the request
// header). Another destination gives an error wrapping
// tunnel.ErrOtherDestination; an empty datagram is not sent, since an
// empty chunk ends the body.
func (p *packetConn) WritePacket(b []byte, to protocols.Addr) error {
	if to != p.dst {
		return fmt.Errorf("vmess: UDP tunnel to %v cannot send to %v: %w", p.dst, to, tunnel.ErrOtherDestination)
	}
	if len(b) == 0 {
		return nil
	}
	if len(b) > p.max {
		return fmt.Errorf("vmess: UDP datagram of %d bytes is longer than a chunk carries (%d)", len(b), p.max)
	}
	_, err := p.c.Write(b)
	return err
}

// ReadPacket returns the next reply chunk, from the tunnel's destination.
func (p *packetConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	if !p.c.resDone.Load() {
		if err := p.c.readResponse(); err != nil {
			return 0, protocols.Addr{}, err
		}
	}
	n, err := p.c.r.ReadChunk(b)
	if err != nil {
		return 0, protocols.Addr{}, err
	}
	return n, p.dst, nil
}

// Close closes the carrier; a pending ReadPacket returns.
func (p *packetConn) Close() error { return p.c.Close() }
