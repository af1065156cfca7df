package vlessserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/v0udp"
	"github.com/portico-gw/portico/protocols/vless/internal/v1io"
)

// associationPrefix starts every Request.Association this server makes, so
// that its keys cannot collide with another protocol's in the gateway's
// table.
const associationPrefix = "vless1\x00"

// serveUDPV1 hands a v1 UDP tunnel (docs/protocols/vless-v1.md section 9)
// to h and closes conn when h returns: a UDP tunnel has no end marker, so
// the connection is never reused after it. The padding has been skipped;
// the first datagram may already be in br.
func (s *Server) serveUDPV1(ctx context.Context, conn net.Conn, br *v1io.Reader, hdr *vless.RequestV1, acct *account, h tunnel.Handler) error {
	req := s.request(conn, acct, hdr.Target)
	req.Network = protocols.NetworkUDP
	var pc tunnel.PacketConn
	if hdr.UDPMulti {
		req.Association = associationKey(hdr, req)
		pc = &multiPacketConn{udpCarrier: udpCarrier{conn: conn}, target: hdr.Target, r: v0udp.Reader{R: br}}
	} else {
		pc = &classicPacketConn{udpCarrier: udpCarrier{conn: conn}, br: br}
	}
	s.log.Debug("vless: UDP tunnel", "inbound", s.inbound, "user", acct.label, "target", hdr.Target.String(),
		"version", 1, "udp_multi", hdr.UDPMulti, "association", hdr.HasAssociation)
	err := h.HandlePacket(ctx, pc, req)
	pc.Close()
	if err != nil {
		return fmt.Errorf("vless: UDP tunnel to %v for %s: %w", hdr.Target, acct.label, err)
	}
	return nil
}

// associationKey groups the udp_multi tunnels of one client association:
// the user and the association id the client sent, or, from a client that
// sends none (verysimple), the user and the client's IP — the best a
// server can do, since such a client opens a tunnel per remote with
// nothing in common but its address. Without a known IP the tunnel is an
// association of its own (empty key).
func associationKey(hdr *vless.RequestV1, req tunnel.Request) string {
	if hdr.HasAssociation {
		return associationPrefix + string(hdr.ID[:]) + string(hdr.Association[:])
	}
	ip := req.Source.Addr()
	if !ip.IsValid() {
		return ""
	}
	return associationPrefix + string(hdr.ID[:]) + "\x00ip\x00" + ip.Unmap().String()
}

// udpCarrier is what both v1 server packet conns share: the carrier, a
// write lock (several outbound conns of the gateway may reply at once),
// the write buffer it guards, and Close.
type udpCarrier struct {
	conn net.Conn

	wmu  sync.Mutex
	wbuf []byte // guarded by wmu

	closeOnce sync.Once
	closeErr  error
}

// write sends one frame built by appendFrame into the reused buffer; wmu
// is held for the whole write so that frames never interleave.
func (u *udpCarrier) write(appendFrame func([]byte) ([]byte, error)) error {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	b, err := appendFrame(u.wbuf[:0])
	if err != nil {
		return err
	}
	u.wbuf = b
	if _, err := u.conn.Write(b); err != nil {
		return fmt.Errorf("vless: UDP reply: %w", err)
	}
	return nil
}

// Close closes the carrier; a pending ReadPacket returns.
func (u *udpCarrier) Close() error {
	u.closeOnce.Do(func() { u.closeErr = u.conn.Close() })
	return u.closeErr
}

// MultiSource reports that every reply tells the client its source
// (classic frames carry it, udp_multi flag 1 does), so the gateway may
// pass on datagrams from remotes the client never sent to.
func (u *udpCarrier) MultiSource() bool { return true }

// multiPacketConn is a udp_multi tunnel: the client sends length ‖ payload
// to the tunnel's remote (the header's target); replies are tagged flag 0
// (from the remote) or flag 1 with their source.
type multiPacketConn struct {
	udpCarrier
	target protocols.Addr
	r      v0udp.Reader // through the header's buffered reader: the first datagram came with it

	// remoteIP is, for a domain target, the source of the first reply
	// sent with flag 0; guarded by wmu.
	remoteIP protocols.Addr
}

var (
	_ tunnel.PacketConn  = (*multiPacketConn)(nil)
	_ tunnel.MultiSource = (*multiPacketConn)(nil)
	_ tunnel.PacketConn  = (*classicPacketConn)(nil)
	_ tunnel.MultiSource = (*classicPacketConn)(nil)
)

// ReadPacket returns the client's next datagram, always to the tunnel's
// remote. The carrier ending inside a frame gives an error wrapping
// io.ErrUnexpectedEOF.
func (p *multiPacketConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	n, err := p.r.ReadPacket(b)
	if err != nil {
		if err == io.EOF {
			return 0, protocols.Addr{}, err
		}
		return 0, protocols.Addr{}, fmt.Errorf("vless: udp_multi tunnel to %v: %w", p.target, err)
	}
	return n, p.target, nil
}

// WritePacket sends a reply from from. It goes with flag 0 when from is the
// tunnel's remote: equal to the target, or, for a domain target (whose IP
// the client never learns), the source of the first reply — the first
// reply on a tunnel is as a rule the answer of the host the client asked
// for, and fixing it once keeps every later datagram from that address on
// flag 0, as verysimple's client expects. Any other source goes with flag 1
// and its address, which the client treats as another remote.
func (p *multiPacketConn) WritePacket(b []byte, from protocols.Addr) error {
	if from.Domain == "" && from.IP.Is4In6() {
		from.IP = from.IP.Unmap() // a dual-stack socket's view of an IPv4 remote
	}
	return p.write(func(buf []byte) ([]byte, error) {
		other := from != p.target
		if other && p.target.IsDomain() {
			if !p.remoteIP.IsValid() {
				p.remoteIP = from
			}
			other = from != p.remoteIP
		}
		out, err := vless.AppendMultiPacket(buf, b, from, other)
		if err != nil {
			return buf, fmt.Errorf("vless: UDP reply from %v: %w", from, err)
		}
		return out, nil
	})
}

// classicPacketConn is a classic v1 UDP tunnel: every frame, both ways,
// carries an address, so the tunnel is an association of its own with any
// number of remotes.
type classicPacketConn struct {
	udpCarrier
	br *v1io.Reader // the header's buffered reader: the first datagram came with it
}

// classicPrefix is a classic frame up to its payload.
type classicPrefix struct {
	addr protocols.Addr
	size int
}

// parseClassicPrefix reads a classic frame's address and length only, so
// that the payload can go straight into the caller's buffer.
func parseClassicPrefix(b []byte) (classicPrefix, int, error) {
	addr, n, err := protocols.VAddr.Parse(b)
	if err != nil {
		if err == protocols.ErrNeedMore {
			return classicPrefix{}, 0, err
		}
		return classicPrefix{}, 0, fmt.Errorf("vless: UDP packet address: %w", err)
	}
	if len(b) < n+vless.PacketHeaderLen {
		return classicPrefix{}, 0, protocols.ErrNeedMore
	}
	return classicPrefix{addr: addr, size: int(binary.BigEndian.Uint16(b[n:]))}, n + vless.PacketHeaderLen, nil
}

// ReadPacket returns the client's next datagram and its destination. A
// payload longer than b is cut, the rest dropped. The carrier ending
// between frames gives io.EOF; inside one, an error wrapping
// io.ErrUnexpectedEOF; a bad address, one wrapping protocols.ErrBadAddr.
func (p *classicPacketConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	pre, err := v1io.ReadMsg(p.br, parseClassicPrefix)
	if err != nil {
		if err == io.EOF && len(p.br.Buffered()) == 0 {
			return 0, protocols.Addr{}, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, protocols.Addr{}, fmt.Errorf("vless: classic UDP frame: %w", err)
	}
	m := min(pre.size, len(b))
	if _, err := io.ReadFull(p.br, b[:m]); err != nil {
		return 0, protocols.Addr{}, fmt.Errorf("vless: classic UDP frame of %d bytes to %v cut short: %w", pre.size, pre.addr, unexpected(err))
	}
	if err := p.br.Skip(pre.size - m); err != nil {
		return 0, protocols.Addr{}, fmt.Errorf("vless: classic UDP frame of %d bytes to %v cut short: %w", pre.size, pre.addr, err)
	}
	return m, pre.addr, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WritePacket sends a reply to the client in a classic frame naming from.
func (p *classicPacketConn) WritePacket(b []byte, from protocols.Addr) error {
	return p.write(func(buf []byte) ([]byte, error) {
		out, err := vless.AppendPacketV1(buf, b, from)
		if err != nil {
			return buf, fmt.Errorf("vless: UDP reply from %v: %w", from, err)
		}
		return out, nil
	})
}
