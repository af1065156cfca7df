package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
)

// The UDP NAT behaviours of the direct outbound (udp.nat in the config;
// docs/protocols/vless-v1.md §9.3 has the rules).
const (
	// NATFullCone: endpoint-independent mapping across the tunnels of one
	// association (tunnel.Request.Association) and endpoint-independent
	// filtering for tunnels that can name a datagram's source
	// (tunnel.MultiSource). The default.
	NATFullCone = "full-cone"
	// NATSymmetric: a socket per tunnel, accepting datagrams only from IPs
	// it has sent to.
	NATSymmetric = "symmetric"
)

// natViewQueue bounds the datagrams waiting for one tunnel of a shared
// mapping; more are dropped, as a full socket buffer would.
const natViewQueue = 256

// packetPolicy is what the router tells an outbound about one tunnel's
// packets. It travels in the dial's context so that tunnel.Dialer keeps
// its shape; outbounds other than Direct ignore it.
type packetPolicy struct {
	mapping   string // non-empty: share one socket with the tunnels of this key
	anySource bool   // accept datagrams from any remote (endpoint-independent filtering)
}

type packetPolicyKey struct{}

func withPacketPolicy(ctx context.Context, p packetPolicy) context.Context {
	return context.WithValue(ctx, packetPolicyKey{}, p)
}

func packetPolicyFrom(ctx context.Context) packetPolicy {
	p, _ := ctx.Value(packetPolicyKey{}).(packetPolicy)
	return p
}

// natTable holds the shared mappings of one Direct outbound by key. The
// zero value is ready. Its size is bounded by the router's association
// bounds: every mapping has at least one live tunnel, and every tunnel is
// an association.
type natTable struct {
	mu sync.Mutex
	m  map[string]*natMapping
}

// natMapping is one association's UDP socket and the tunnels it serves.
type natMapping struct {
	table *natTable
	key   string
	sock  *directPacketConn // accepts any source
	wg    sync.WaitGroup    // the reader

	dead    chan struct{} // closed when the reader stops
	deadErr error         // why; set before dead is closed

	mu    sync.Mutex
	views []*natView // live tunnels; guarded by mu
	seq   uint64     // write counter, for "the tunnel that sent last"; guarded by mu
}

// natView is one tunnel's packet conn on a shared mapping.
type natView struct {
	m       *natMapping
	q       chan natDatagram
	done    chan struct{}
	once    sync.Once
	remotes map[netip.AddrPort]struct{} // sent to; guarded by m.mu
	last    uint64                      // m.seq at its last write; guarded by m.mu
	dropped atomic.Int64
}

type natDatagram struct {
	from netip.AddrPort
	b    *[]byte
	n    int
}

// join returns a new view on key's mapping, opening the mapping (and its
// socket, on bind) if it has no live tunnel.
func (t *natTable) join(key string, bind netip.Addr, timeout time.Duration) (*natView, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.m[key]
	if m == nil {
		sock, err := newDirectPacketConn(bind, timeout, true)
		if err != nil {
			return nil, err
		}
		m = &natMapping{table: t, key: key, sock: sock, dead: make(chan struct{})}
		if t.m == nil {
			t.m = map[string]*natMapping{}
		}
		t.m[key] = m
		m.wg.Add(1)
		go m.read()
	}
	v := &natView{m: m, q: make(chan natDatagram, natViewQueue), done: make(chan struct{}),
		remotes: map[netip.AddrPort]struct{}{}}
	m.mu.Lock()
	m.views = append(m.views, v)
	m.mu.Unlock()
	return v, nil
}

// len is the number of live mappings (for tests).
func (t *natTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// read hands each datagram arriving at the socket to one tunnel.
func (m *natMapping) read() {
	defer m.wg.Done()
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	for {
		n, from, err := m.sock.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			m.deadErr = fmt.Errorf("direct: udp: %w", err)
			close(m.dead)
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		v := m.route(from)
		if v == nil {
			continue
		}
		d := natDatagram{from: from, b: getDatagramBuf(n), n: n}
		copy(*d.b, buf[:n])
		select {
		case v.q <- d:
		default:
			putDatagramBuf(d.b)
			v.dropped.Add(1)
		}
	}
}

// route picks the tunnel for a datagram from remote: the one that sent to
// it last, or else the one that sent anything last.
func (m *natMapping) route(remote netip.AddrPort) *natView {
	m.mu.Lock()
	defer m.mu.Unlock()
	var to, latest *natView
	for _, v := range m.views {
		if _, ok := v.remotes[remote]; ok && (to == nil || v.last > to.last) {
			to = v
		}
		if latest == nil || v.last > latest.last {
			latest = v
		}
	}
	if to == nil {
		to = latest
	}
	return to
}

// WritePacket sends b from the mapping's socket.
func (v *natView) WritePacket(b []byte, dst protocols.Addr) error {
	ap, err := v.m.sock.resolve(dst)
	if err != nil {
		return err
	}
	m := v.m
	m.mu.Lock()
	m.seq++
	v.last = m.seq
	if _, ok := v.remotes[ap]; !ok && len(v.remotes) < maxPacketPeers {
		v.remotes[ap] = struct{}{}
	}
	m.mu.Unlock()
	if _, err := m.sock.conn.WriteToUDPAddrPort(b, ap); err != nil {
		return fmt.Errorf("direct: udp: send to %v: %w", ap, err)
	}
	return nil
}

// ReadPacket returns the next datagram routed to this tunnel.
func (v *natView) ReadPacket(b []byte) (int, protocols.Addr, error) {
	select {
	case d := <-v.q:
		n := copy(b, (*d.b)[:d.n])
		putDatagramBuf(d.b)
		return n, protocols.AddrFromAddrPort(d.from), nil
	case <-v.done:
		return 0, protocols.Addr{}, fmt.Errorf("direct: udp: %w", net.ErrClosed)
	case <-v.m.dead:
		return 0, protocols.Addr{}, v.m.deadErr
	}
}

// Close leaves the mapping; the last tunnel to leave closes the socket and
// waits for its reader.
func (v *natView) Close() error {
	v.once.Do(func() {
		close(v.done)
		m, t := v.m, v.m.table
		t.mu.Lock()
		m.mu.Lock()
		for i, w := range m.views {
			if w == v {
				m.views = append(m.views[:i], m.views[i+1:]...)
				break
			}
		}
		last := len(m.views) == 0
		m.mu.Unlock()
		if last && t.m[m.key] == m {
			delete(t.m, m.key)
		}
		t.mu.Unlock()
		if last {
			m.sock.Close()
			m.wg.Wait()
		}
		for {
			select {
			case d := <-v.q:
				putDatagramBuf(d.b)
			default:
				return
			}
		}
	})
	return nil
}

// LocalAddr is the mapping's socket address: what every remote sees.
func (v *natView) LocalAddr() net.Addr { return v.m.sock.LocalAddr() }

// MultiSource reports that reads name each datagram's source.
func (v *natView) MultiSource() bool { return true }

// Datagrams waiting in a view's queue use the pool's small buffers; the
// rare longer one gets its own.
func getDatagramBuf(n int) *[]byte {
	if n > smallBufSize {
		b := make([]byte, n)
		return &b
	}
	return getSmallBuf()
}

func putDatagramBuf(b *[]byte) {
	if cap(*b) == smallBufSize {
		*b = (*b)[:smallBufSize]
		putSmallBuf(b)
	}
}
