package socks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// UDPFirstPacketTimeout is how long a UDP association waits for the
// client's first datagram before it gives up and closes the control
// connection. After the first datagram the handler's idle timeout rules.
const UDPFirstPacketTimeout = 60 * time.Second

// serveUDP runs a UDP ASSOCIATE (RFC 1928 §6, §7): it opens a UDP socket on
// the control connection's local IP, replies with its address, waits for
// the first datagram from the client's IP, and hands the association to
// h.HandlePacket with Target set to that datagram's destination. The
// association ends when the control connection closes (RFC 1928 §6), when
// the handler returns, or when ctx is done; conn is closed in every case.
func (s *Server) serveUDP(ctx context.Context, conn net.Conn, req tunnel.Request, h tunnel.Handler) error {
	log := s.logger()
	fail := func(rep byte, err error) error {
		_, _ = conn.Write(AppendReply(nil, rep, zeroBind))
		_ = conn.Close()
		return err
	}
	local, ok := conn.LocalAddr().(*net.TCPAddr)
	if !ok || !req.Source.IsValid() {
		return fail(ReplyGeneralFailure, fmt.Errorf("socks: UDP associate needs a TCP control connection, not %T", conn.LocalAddr()))
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: local.IP, Zone: local.Zone})
	if err != nil {
		return fail(ReplyGeneralFailure, fmt.Errorf("socks: UDP associate: listen: %w", err))
	}
	bound := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	bind := protocols.AddrFromAddrPort(bound)
	a := &udpAssoc{udp: udp, clientIP: req.Source.Addr().Unmap(), log: log}
	if ap, ok := req.Target.AddrPort(); ok && !ap.Addr().IsUnspecified() && ap.Port() != 0 {
		// The client named its source; hold it to that.
		a.clientPort = ap.Port()
	}
	if _, err := conn.Write(AppendReply(nil, ReplySucceeded, bind)); err != nil {
		udp.Close()
		_ = conn.Close()
		return fmt.Errorf("socks: UDP associate: write reply: %w", err)
	}
	log.Debug("socks udp associate", "user", req.User, "source", req.Source.String(), "relay", bound.String())

	// The control connection carries nothing more; its end is the
	// association's end.
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				a.Close()
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { a.Close(); _ = conn.Close() })
	defer func() {
		stop()
		a.Close()
		_ = conn.Close()
		<-watched
	}()

	_ = udp.SetReadDeadline(time.Now().Add(UDPFirstPacketTimeout))
	if err := a.readFirst(); err != nil {
		return fmt.Errorf("socks: UDP associate: waiting for the first datagram: %w", err)
	}
	_ = udp.SetReadDeadline(time.Time{})
	req.Target = a.first.dst
	if err := h.HandlePacket(ctx, a, req); err != nil {
		return fmt.Errorf("socks: UDP association from %v: %w", req.Source, err)
	}
	return nil
}

// udpAssoc is the server's side of one UDP association, handed to the
// handler as a tunnel.PacketConn: ReadPacket yields the client's datagrams
// (payload and destination), WritePacket sends a reply to the client with
// the header naming its source.
//
// Accepted: datagrams from the control connection's peer IP (and the port
// the request named, if any) with FRAG 0 and a well-formed header. Others
// are dropped and counted; the first fragment is logged (a warning) once
// per association.
// Replies go to where the client's latest accepted datagram came from.
type udpAssoc struct {
	udp        *net.UDPConn
	clientIP   netip.Addr
	clientPort uint16 // 0: any
	log        *slog.Logger

	first struct {
		buf []byte // the first datagram's payload, until ReadPacket takes it
		dst protocols.Addr
	}
	firstTaken bool // guarded by ReadPacket's caller (one reader)

	peer       atomic.Pointer[netip.AddrPort]
	fragments  atomic.Int64
	strangers  atomic.Int64
	malformed  atomic.Int64
	fragLogged atomic.Bool

	wmu  sync.Mutex
	wbuf []byte // guarded by wmu

	closeOnce sync.Once
}

// Dropped reports how many datagrams were dropped, by reason.
func (a *udpAssoc) Dropped() (fragments, strangers, malformed int64) {
	return a.fragments.Load(), a.strangers.Load(), a.malformed.Load()
}

func (a *udpAssoc) readFirst() error {
	buf := make([]byte, 64<<10)
	n, dst, err := a.read(buf)
	if err != nil {
		return err
	}
	a.first.buf, a.first.dst = buf[:n], dst
	return nil
}

// read reads datagrams into b until one is accepted, moves its data to the
// start of b and returns its length and destination.
func (a *udpAssoc) read(b []byte) (int, protocols.Addr, error) {
	for {
		n, src, err := a.udp.ReadFromUDPAddrPort(b)
		if err != nil {
			return 0, protocols.Addr{}, err
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if src.Addr() != a.clientIP || (a.clientPort != 0 && src.Port() != a.clientPort) {
			a.strangers.Add(1)
			continue
		}
		frag, dst, hn, err := ParseUDPHeader(b[:n])
		if err == nil {
			dst, err = normalizeTarget(dst)
		}
		if err != nil {
			a.malformed.Add(1)
			continue
		}
		if frag != 0 {
			if a.fragments.Add(1) == 1 && a.fragLogged.CompareAndSwap(false, true) {
				a.log.Warn("socks udp: dropping fragmented datagrams (FRAG != 0): reassembly is not supported; this is logged once per association", "client", src.String())
			}
			continue
		}
		a.peer.Store(&src)
		return copy(b, b[hn:n]), dst, nil
	}
}

// ReadPacket implements tunnel.PacketConn.
func (a *udpAssoc) ReadPacket(b []byte) (int, protocols.Addr, error) {
	if !a.firstTaken {
		a.firstTaken = true
		n := copy(b, a.first.buf)
		dst := a.first.dst
		a.first.buf = nil
		return n, dst, nil
	}
	n, dst, err := a.read(b)
	if err != nil {
		return 0, protocols.Addr{}, fmt.Errorf("socks: UDP relay: %w", err)
	}
	return n, dst, nil
}

// MultiSource implements tunnel.MultiSource: every SOCKS5 UDP header
// names the datagram's source.
func (a *udpAssoc) MultiSource() bool { return true }

// WritePacket implements tunnel.PacketConn: it sends b to the client with
// a header saying it came from from.
func (a *udpAssoc) WritePacket(b []byte, from protocols.Addr) error {
	peer := a.peer.Load()
	if peer == nil {
		return errors.New("socks: UDP relay: no datagram from the client yet")
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	out, err := AppendUDPHeader(a.wbuf[:0], 0, from)
	if err != nil {
		return err
	}
	out = append(out, b...)
	a.wbuf = out
	if _, err := a.udp.WriteToUDPAddrPort(out, *peer); err != nil {
		return fmt.Errorf("socks: UDP relay: send to client: %w", err)
	}
	return nil
}

// Close implements tunnel.PacketConn.
func (a *udpAssoc) Close() error {
	a.closeOnce.Do(func() { a.udp.Close() })
	return nil
}

// UDPClient is the client side of a SOCKS5 UDP association, made by
// [DialUDP]. It implements [tunnel.PacketConn]: WritePacket(b, to) sends b
// to to through the proxy; ReadPacket yields a reply and its source. It is
// meant for tests and tools; one ReadPacket and one WritePacket may run at
// once. Fragments from the proxy are dropped.
type UDPClient struct {
	udp     *net.UDPConn
	control net.Conn
	relay   netip.AddrPort // the proxy's UDP relay
	wmu     sync.Mutex
	wbuf    []byte
}

// DialUDP runs the SOCKS5 client handshake for a UDP ASSOCIATE on
// proxyConn (an established connection to the proxy; user and pass as for
// [Dial]), opens a local UDP socket and returns the association. The
// association lives as long as proxyConn: UDPClient.Close closes both. A
// BND.ADDR of 0.0.0.0 or :: is read as the proxy's own IP (RFC 1928 §6
// lets servers leave it unset).
func DialUDP(ctx context.Context, proxyConn net.Conn, user, pass string) (*UDPClient, error) {
	local, ok := proxyConn.LocalAddr().(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("socks: UDP associate needs a TCP connection to the proxy, not %T", proxyConn.LocalAddr())
	}
	remote, _ := proxyConn.RemoteAddr().(*net.TCPAddr)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: local.IP, Zone: local.Zone})
	if err != nil {
		return nil, fmt.Errorf("socks: UDP associate: listen: %w", err)
	}
	from := protocols.AddrFromAddrPort(udp.LocalAddr().(*net.UDPAddr).AddrPort())
	bind, err := clientHandshake(ctx, proxyConn, CmdUDPAssociate, from, user, pass)
	if err != nil {
		udp.Close()
		return nil, err
	}
	relay, ok := bind.AddrPort()
	if !ok || relay.Port() == 0 {
		udp.Close()
		return nil, fmt.Errorf("%w: UDP associate reply names %v, not an IP and port", ErrMalformed, bind)
	}
	if relay.Addr().IsUnspecified() && remote != nil {
		relay = netip.AddrPortFrom(remote.AddrPort().Addr().Unmap(), relay.Port())
	}
	return &UDPClient{udp: udp, control: proxyConn, relay: relay}, nil
}

// RelayAddr is the proxy's UDP relay address.
func (c *UDPClient) RelayAddr() netip.AddrPort { return c.relay }

// LocalAddr is the client's UDP socket address.
func (c *UDPClient) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetReadDeadline sets the UDP socket's read deadline.
func (c *UDPClient) SetReadDeadline(t time.Time) error { return c.udp.SetReadDeadline(t) }

// WritePacket sends b to to through the proxy.
func (c *UDPClient) WritePacket(b []byte, to protocols.Addr) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	out, err := AppendUDPHeader(c.wbuf[:0], 0, to)
	if err != nil {
		return err
	}
	out = append(out, b...)
	c.wbuf = out
	if _, err := c.udp.WriteToUDPAddrPort(out, c.relay); err != nil {
		return fmt.Errorf("socks: UDP: send: %w", err)
	}
	return nil
}

// ReadPacket reads the next datagram from the proxy's relay into b and
// returns its data length and source. Datagrams from elsewhere, malformed
// ones and fragments are skipped.
func (c *UDPClient) ReadPacket(b []byte) (int, protocols.Addr, error) {
	for {
		n, src, err := c.udp.ReadFromUDPAddrPort(b)
		if err != nil {
			return 0, protocols.Addr{}, fmt.Errorf("socks: UDP: %w", err)
		}
		if src.Addr().Unmap() != c.relay.Addr().Unmap() || src.Port() != c.relay.Port() {
			continue
		}
		frag, from, hn, err := ParseUDPHeader(b[:n])
		if err != nil || frag != 0 {
			continue
		}
		return copy(b, b[hn:n]), from, nil
	}
}

// Close ends the association: it closes the UDP socket and the control
// connection.
func (c *UDPClient) Close() error {
	err := c.udp.Close()
	if cerr := c.control.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

var (
	_ tunnel.PacketConn = (*udpAssoc)(nil)
	_ tunnel.PacketConn = (*UDPClient)(nil)
)
