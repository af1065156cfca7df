package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Packet relay defaults. V2Ray's policy has the same 60 s for UDP; a
// resolver's answer comes in well under 30 s, so an association that has
// only ever talked to port 53 is let go sooner.
const (
	DefaultPacketIdle    = 60 * time.Second
	DefaultDNSPacketIdle = 30 * time.Second
	// DefaultPacketConns bounds the outbound packet conns of one
	// association: the first, and one more per destination that the first
	// refuses with tunnel.ErrOtherDestination (a VLESS or VMess tunnel
	// carries a single destination).
	DefaultPacketConns = 16
)

// PacketRelayOptions tunes one packet relay. The zero value means the
// defaults above and no counting.
type PacketRelayOptions struct {
	// Idle ends the association when no packet has moved either way for
	// this long. Zero means DefaultPacketIdle.
	Idle time.Duration
	// DNSIdle replaces Idle while every destination so far has been port
	// 53. Zero means DefaultDNSPacketIdle.
	DNSIdle time.Duration
	// Counter, when set, receives each packet's payload size: up is
	// client -> target.
	Counter Counter
	// Dial opens another outbound packet conn for a destination that the
	// first conn refuses with tunnel.ErrOtherDestination, or that Same says
	// must not go over it. Nil means such packets are dropped. An error
	// (a blocked destination) drops the packet.
	Dial func(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error)
	// Same reports whether a destination may go over the first conn (the
	// router: it routes to the same outbound as the first destination).
	// It is asked once per new destination. Nil means always.
	Same func(dst protocols.Addr) bool
	// MaxConns bounds the outbound packet conns, the first included. Zero
	// means DefaultPacketConns; packets for more destinations are dropped.
	MaxConns int
}

// PacketRelayResult is what a finished packet relay moved.
type PacketRelayResult struct {
	UpPackets, DownPackets int64 // datagrams client -> target, target -> client
	Up, Down               int64 // their payload bytes
	Dropped                int64 // client datagrams not sent (write failed, too many destinations)
	Err                    error // the first error that was not a normal end
	IdledOut               bool  // the idle timeout ended the relay
}

// RelayPackets moves datagrams between client (a protocol server's packet
// conn: reads yield payload and destination) and target (an outbound's:
// writes take a destination, reads yield the source) until one side ends,
// the association idles out, or ctx is done; it then closes client, target
// and every conn Dial opened, waits for its goroutines, and returns.
//
// first is the association's first destination (the request's target).
// Reads use one pooled 32 KiB buffer per direction and per outbound conn; a
// longer datagram is cut, as a UDP socket would. A client datagram whose
// write fails (a name that does not resolve, an unreachable network) is
// dropped and counted; the association goes on. A destination whose Dial
// failed (blocked, unreachable) is not dialled again: its later packets are
// dropped.
func RelayPackets(ctx context.Context, client, target tunnel.PacketConn, first protocols.Addr, opts PacketRelayOptions) PacketRelayResult {
	r := &packetRelay{client: client, counter: opts.Counter, dial: opts.Dial, same: opts.Same,
		sameSeen: map[protocols.Addr]bool{},
		idle:     opts.Idle, dnsIdle: opts.DNSIdle, maxConns: opts.MaxConns,
		extra: map[protocols.Addr]tunnel.PacketConn{}}
	if r.idle <= 0 {
		r.idle = DefaultPacketIdle
	}
	if r.dnsIdle <= 0 {
		r.dnsIdle = DefaultDNSPacketIdle
	}
	if r.maxConns <= 0 {
		r.maxConns = DefaultPacketConns
	}
	r.allDNS.Store(first.Port == 53)
	r.conns = []tunnel.PacketConn{target}
	r.touch()
	r.timer = time.AfterFunc(r.currentIdle(), r.checkIdle)
	stop := context.AfterFunc(ctx, r.closeAll)

	r.wg.Add(1)
	go r.down(target, true)
	r.up(ctx, target)

	stop()
	r.timer.Stop()
	r.closeAll()
	r.wg.Wait()
	res := PacketRelayResult{UpPackets: r.upPackets.Load(), DownPackets: r.downPackets.Load(),
		Up: r.upBytes.Load(), Down: r.downBytes.Load(), Dropped: r.dropped.Load(), IdledOut: r.idledOut.Load()}
	if e := r.firstErr.Load(); e != nil {
		res.Err = *e
	}
	if res.Err == nil && ctx.Err() != nil && !res.IdledOut {
		res.Err = ctx.Err()
	}
	return res
}

type packetRelay struct {
	client   tunnel.PacketConn
	counter  Counter
	dial     func(context.Context, protocols.Addr) (tunnel.PacketConn, error)
	same     func(protocols.Addr) bool
	sameSeen map[protocols.Addr]bool // up's only: Same's answers, at most maxPacketPeers
	idle     time.Duration
	dnsIdle  time.Duration
	maxConns int
	allDNS   atomic.Bool // every destination so far was port 53
	timer    *time.Timer

	mu     sync.Mutex
	conns  []tunnel.PacketConn                  // every outbound conn; guarded by mu
	extra  map[protocols.Addr]tunnel.PacketConn // up's only: conns opened for one destination; nil when its dial failed
	closed bool                                 // guarded by mu
	wg     sync.WaitGroup

	lastActive             atomic.Int64
	upPackets, downPackets atomic.Int64
	upBytes, downBytes     atomic.Int64
	dropped                atomic.Int64
	idledOut               atomic.Bool
	firstErr               atomic.Pointer[error]
}

func (r *packetRelay) touch() { r.lastActive.Store(time.Now().UnixNano()) }

func (r *packetRelay) currentIdle() time.Duration {
	if r.allDNS.Load() {
		return r.dnsIdle
	}
	return r.idle
}

// checkIdle runs on the one timer, re-armed for the time left.
func (r *packetRelay) checkIdle() {
	idle := r.currentIdle()
	since := time.Duration(time.Now().UnixNano() - r.lastActive.Load())
	if since >= idle {
		r.idledOut.Store(true)
		r.closeAll()
		return
	}
	r.timer.Reset(idle - since)
}

func (r *packetRelay) closeAll() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	conns := r.conns
	r.mu.Unlock()
	r.client.Close()
	for _, c := range conns {
		c.Close()
	}
}

func (r *packetRelay) fail(err error) {
	if err != nil && !isClosedErr(err) && !errors.Is(err, io.EOF) {
		r.firstErr.CompareAndSwap(nil, &err)
	}
}

// up reads the client's datagrams and sends each to its destination.
func (r *packetRelay) up(ctx context.Context, primary tunnel.PacketConn) {
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	for {
		n, dst, err := r.client.ReadPacket(buf)
		if err != nil {
			r.fail(err)
			return
		}
		r.touch()
		if dst.Port != 53 && r.allDNS.Load() {
			r.allDNS.Store(false)
		}
		out := primary
		if c, ok := r.extra[dst]; ok {
			if out = c; c == nil { // its dial failed: not retried
				r.dropped.Add(1)
				continue
			}
		} else if !r.sameAs(dst) {
			if out = r.open(ctx, dst); out == nil {
				r.dropped.Add(1)
				continue
			}
		}
		err = out.WritePacket(buf[:n], dst)
		if errors.Is(err, tunnel.ErrOtherDestination) && out == primary {
			if out = r.open(ctx, dst); out != nil {
				err = out.WritePacket(buf[:n], dst)
			}
		}
		if err != nil || out == nil {
			r.dropped.Add(1)
			continue
		}
		r.upPackets.Add(1)
		r.upBytes.Add(int64(n))
		if r.counter != nil {
			r.counter.Add(int64(n), 0)
		}
	}
}

// sameAs reports whether dst may use the first conn, remembering Same's
// answers for up to maxPacketPeers destinations.
func (r *packetRelay) sameAs(dst protocols.Addr) bool {
	if r.same == nil {
		return true
	}
	if ok, seen := r.sameSeen[dst]; seen {
		return ok
	}
	ok := r.same(dst)
	if len(r.sameSeen) < maxPacketPeers {
		r.sameSeen[dst] = ok
	}
	return ok
}

// open dials a conn for dst and starts its down copy; nil when it cannot.
func (r *packetRelay) open(ctx context.Context, dst protocols.Addr) tunnel.PacketConn {
	if r.dial == nil || len(r.conns) >= r.maxConns {
		return nil
	}
	c, err := r.dial(ctx, dst)
	if err != nil {
		if len(r.extra) < maxPacketPeers {
			r.extra[dst] = nil // blocked or unreachable: later packets are dropped at once
		}
		return nil
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		c.Close()
		return nil
	}
	r.conns = append(r.conns, c)
	r.mu.Unlock()
	r.extra[dst] = c
	r.wg.Add(1)
	go r.down(c, false)
	return c
}

// down copies one outbound conn's datagrams to the client. The first
// outbound conn ending ends the association; another one ending only stops
// its own copy (later packets to its destination are then dropped).
func (r *packetRelay) down(c tunnel.PacketConn, primary bool) {
	defer r.wg.Done()
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	for {
		n, from, err := c.ReadPacket(buf)
		if err != nil {
			if primary {
				r.fail(err)
				r.closeAll()
			}
			return
		}
		r.touch()
		if err := r.client.WritePacket(buf[:n], from); err != nil {
			r.fail(err)
			r.closeAll()
			return
		}
		r.downPackets.Add(1)
		r.downBytes.Add(int64(n))
		if r.counter != nil {
			r.counter.Add(0, int64(n))
		}
	}
}

// directPacketConn is Direct's packet conn: one unconnected UDP socket per
// association, so that replies are read with their source.
//
// Filtering is address-dependent (RFC 4787 §5, "address-restricted"): a
// datagram is accepted only from an IP this association has sent to, from
// any port of it; others are dropped. With anySource every datagram is
// accepted (endpoint-independent filtering: full cone).
type directPacketConn struct {
	conn      *net.UDPConn
	timeout   time.Duration // bounds one name resolution
	anySource bool

	mu    sync.Mutex
	sent  map[netip.Addr]struct{} // IPs sent to; guarded by mu
	names map[string]netip.Addr   // resolved names; guarded by mu
}

// maxPacketPeers bounds the per-association tables of a directPacketConn.
const maxPacketPeers = 4096

func newDirectPacketConn(bind netip.Addr, timeout time.Duration, anySource bool) (*directPacketConn, error) {
	var laddr *net.UDPAddr
	if bind.IsValid() {
		laddr = &net.UDPAddr{IP: bind.AsSlice()}
	}
	c, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, err
	}
	return &directPacketConn{conn: c, timeout: timeout, anySource: anySource,
		sent: map[netip.Addr]struct{}{}, names: map[string]netip.Addr{}}, nil
}

func (d *directPacketConn) resolve(dst protocols.Addr) (netip.AddrPort, error) {
	if ap, ok := dst.AddrPort(); ok {
		return ap, nil
	}
	if !dst.IsDomain() {
		return netip.AddrPort{}, fmt.Errorf("direct: udp: %w: %v", protocols.ErrBadAddr, dst)
	}
	d.mu.Lock()
	ip, ok := d.names[dst.Domain]
	d.mu.Unlock()
	if ok {
		return netip.AddrPortFrom(ip, dst.Port), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	network := "ip"
	if la, ok := d.conn.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil && !la.IP.IsUnspecified() {
		network = "ip4"
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, network, dst.Domain)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("direct: udp: resolve %s: %w", dst.Domain, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("direct: udp: resolve %s: no address", dst.Domain)
	}
	ip = ips[0].Unmap()
	for _, a := range ips { // prefer IPv4: it works from every socket
		if a.Unmap().Is4() {
			ip = a.Unmap()
			break
		}
	}
	d.mu.Lock()
	if len(d.names) < maxPacketPeers {
		d.names[dst.Domain] = ip
	}
	d.mu.Unlock()
	return netip.AddrPortFrom(ip, dst.Port), nil
}

// WritePacket sends b to dst, resolving a name once per association.
func (d *directPacketConn) WritePacket(b []byte, dst protocols.Addr) error {
	ap, err := d.resolve(dst)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if _, ok := d.sent[ap.Addr()]; !ok && len(d.sent) < maxPacketPeers {
		d.sent[ap.Addr()] = struct{}{}
	}
	d.mu.Unlock()
	if _, err := d.conn.WriteToUDPAddrPort(b, ap); err != nil {
		return fmt.Errorf("direct: udp: send to %v: %w", ap, err)
	}
	return nil
}

// ReadPacket returns the next datagram from an IP this conn has sent to
// (from anyone, with anySource).
func (d *directPacketConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	for {
		n, ap, err := d.conn.ReadFromUDPAddrPort(b)
		if err != nil {
			return 0, protocols.Addr{}, fmt.Errorf("direct: udp: %w", err)
		}
		from := protocols.AddrFromAddrPort(ap)
		if d.anySource {
			return n, from, nil
		}
		d.mu.Lock()
		_, ok := d.sent[from.IP]
		d.mu.Unlock()
		if ok {
			return n, from, nil
		}
	}
}

func (d *directPacketConn) Close() error { return d.conn.Close() }

// LocalAddr is the socket's address (for tests and logs).
func (d *directPacketConn) LocalAddr() net.Addr { return d.conn.LocalAddr() }
