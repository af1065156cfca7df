package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Direct dials destinations from this machine. Domain targets are resolved
// by net.Dialer, which races IPv6 and IPv4 (happy eyeballs, RFC 8305).
type Direct struct {
	// Timeout bounds one dial, DNS included. Zero means 10 s.
	Timeout time.Duration
	// Bind is the local address to dial from; the zero value lets the
	// system choose.
	Bind netip.Addr

	nat natTable // shared UDP mappings (full cone)
}

// DialStream implements tunnel.Dialer.
func (d *Direct) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	nd := d.dialer()
	c, err := nd.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}
	return c, nil
}

// DialPacket implements tunnel.Dialer: it opens an unconnected UDP socket
// (on Bind when set) for one association. The conn sends to any
// destination, resolving a name once per association (IPv4 preferred), and
// accepts replies only from IPs it has sent to (address-dependent
// filtering, RFC 4787 §5). dst is not contacted until the first
// WritePacket.
//
// The router's policy in ctx changes that for a full-cone gateway: with
// anySource the conn accepts datagrams from anyone, and with a mapping key
// the tunnels of one association share one socket (a view on it each).
func (d *Direct) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	pol := packetPolicyFrom(ctx)
	if pol.mapping != "" {
		v, err := d.nat.join(pol.mapping, d.Bind, timeout)
		if err != nil {
			return nil, fmt.Errorf("direct: udp for %v: %w", dst, err)
		}
		return v, nil
	}
	pc, err := newDirectPacketConn(d.Bind, timeout, pol.anySource)
	if err != nil {
		return nil, fmt.Errorf("direct: udp for %v: %w", dst, err)
	}
	return pc, nil
}

func (d *Direct) dialer() *net.Dialer {
	nd := &net.Dialer{Timeout: d.Timeout, KeepAlive: 30 * time.Second}
	if nd.Timeout == 0 {
		nd.Timeout = 10 * time.Second
	}
	if d.Bind.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: d.Bind.AsSlice()}
	}
	return nd
}

// Block refuses every destination with an error wrapping
// protocols.ErrBlocked.
type Block struct{}

// DialStream implements tunnel.Dialer.
func (Block) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	return nil, fmt.Errorf("block: %v: %w", dst, protocols.ErrBlocked)
}

// DialPacket implements tunnel.Dialer.
func (Block) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	return nil, fmt.Errorf("block: %v: %w", dst, protocols.ErrBlocked)
}
