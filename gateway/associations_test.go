package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// idlePacketConn is an association that never sends: ReadPacket waits for
// Close, WritePacket discards.
type idlePacketConn struct {
	once   sync.Once
	closed chan struct{}
}

func newIdlePacketConn() *idlePacketConn { return &idlePacketConn{closed: make(chan struct{})} }

func (c *idlePacketConn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	<-c.closed
	return 0, protocols.Addr{}, net.ErrClosed
}
func (c *idlePacketConn) WritePacket(b []byte, to protocols.Addr) error { return nil }
func (c *idlePacketConn) Close() error                                  { c.once.Do(func() { close(c.closed) }); return nil }

// idleOutbound dials idle packet conns, counting them.
type idleOutbound struct{ dials atomic.Int64 }

func (*idleOutbound) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	return nil, net.ErrClosed
}
func (o *idleOutbound) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	o.dials.Add(1)
	return newIdlePacketConn(), nil
}

// TestAssociationBounds: one client opens 10,000 UDP associations; no more
// than its bound are ever relayed at once (the oldest are ended), another
// client keeps its own, and when the client goes away every goroutine the
// associations used is gone.
func TestAssociationBounds(t *testing.T) {
	const perClient, total = 64, 10000
	out := &idleOutbound{}
	rt, err := NewRouter(RouterOptions{Outbounds: map[string]tunnel.Dialer{"out": out}, Default: "out",
		Log: slog.New(slog.DiscardHandler), MaxAssociations: 1000, MaxAssociationsPerClient: perClient})
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	dst := protocols.DomainAddr("127.0.0.1", 9)
	start := func(client string) *idlePacketConn {
		pc := newIdlePacketConn()
		go rt.HandlePacket(context.Background(), pc, tunnel.Request{User: client, Network: protocols.NetworkUDP,
			Target: dst, Source: netip.MustParseAddrPort(client + ":5000")})
		return pc
	}
	other := start("127.0.0.9") // another client, whose association must survive
	var all []*idlePacketConn
	for i := 0; i < total; i++ {
		all = append(all, start("127.0.0.2"))
		// Registration ends the oldest before a new relay starts, so the
		// table never holds more than the bound.
		if n := rt.assocs.len(); n > perClient+1 {
			t.Fatalf("after %d associations, %d are relayed; the bound is %d per client", i+1, n, perClient)
		}
		if i%1000 == 999 {
			// Ended associations really end: the relays catch up.
			waitFor(t, func() bool { return rt.Active() <= perClient+1 })
		}
	}
	// Every association has been dialled (so registered, since dialling
	// comes first and registering at once after), and the ended ones are gone.
	waitFor(t, func() bool { return out.dials.Load() == total+1 })
	waitFor(t, func() bool { return rt.Active() == perClient+1 && rt.assocs.len() == perClient+1 })
	if got := rt.assocs.evicted.Load(); got != total-perClient {
		t.Errorf("%d associations ended at the bound, want %d", got, total-perClient)
	}
	select {
	case <-other.closed:
		t.Fatal("the other client's association was ended")
	default:
	}
	for _, pc := range append(all, other) {
		pc.Close()
	}
	waitFor(t, func() bool { return rt.Active() == 0 && rt.assocs.len() == 0 })
	waitFor(t, func() bool { return runtime.NumGoroutine() <= baseline+2 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 20 s (goroutines %d)", runtime.NumGoroutine())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAssociationsTable(t *testing.T) {
	a := newAssociations(3, 2)
	ended := map[string]bool{}
	add := func(name, client string) func() {
		remove, _ := a.add(netip.MustParseAddr(client), func() { ended[name] = true })
		return remove
	}
	add("a1", "10.0.0.1")
	add("a2", "10.0.0.1")
	add("a3", "10.0.0.1") // per-client bound: a1 goes
	if !ended["a1"] || ended["a2"] {
		t.Fatalf("per-client eviction ended %v", ended)
	}
	add("b1", "10.0.0.2")
	add("b2", "10.0.0.2") // overall bound 3: the oldest overall (a2) goes
	if !ended["a2"] || ended["a3"] || ended["b1"] {
		t.Fatalf("overall eviction ended %v", ended)
	}
	if a.len() != 3 {
		t.Fatalf("%d registered", a.len())
	}
	removeC := add("c1", "10.0.0.3") // a3 is now the oldest
	removeC()
	removeC() // twice is harmless
	if a.len() != 2 || !ended["a3"] {
		t.Fatalf("after remove: %d registered, ended %v", a.len(), ended)
	}
}
