package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls/anytlsclient"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/transports/rawtls"
)

// udpPeer is a remote host: a socket on a loopback address that the test
// reads and writes by hand.
func udpPeer(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("no %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func peerAddr(c *net.UDPConn) protocols.Addr {
	return protocols.AddrFromAddrPort(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

// peerRead returns what c receives within a second, and from where; ok is
// false on a timeout.
func peerRead(t *testing.T, c *net.UDPConn) (msg string, from netip.AddrPort, ok bool) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", netip.AddrPort{}, false
	}
	return string(buf[:n]), from, true
}

func pcRead(t *testing.T, pc tunnel.PacketConn, within time.Duration) (string, protocols.Addr, bool) {
	t.Helper()
	type res struct {
		s    string
		from protocols.Addr
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		buf := make([]byte, 2048)
		n, from, err := pc.ReadPacket(buf)
		ch <- res{string(buf[:n]), from, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.from, r.err == nil
	case <-time.After(within):
		return "", protocols.Addr{}, false
	}
}

// TestNATSharedMapping: two tunnels of one association share one socket
// (every remote sees the same mapped port: endpoint-independent mapping);
// a remote nobody sent to reaches the tunnel that sent last, a remote a
// tunnel sent to reaches that tunnel (endpoint-independent filtering); the
// last tunnel to close closes the socket and its reader.
func TestNATSharedMapping(t *testing.T) {
	a, b := udpPeer(t, "127.0.0.1"), udpPeer(t, "127.0.0.2")
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := &Direct{}
	ctx := withPacketPolicy(context.Background(), packetPolicy{mapping: "u1", anySource: true})
	t1, err := d.DialPacket(ctx, peerAddr(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := t1.WritePacket([]byte("to A"), peerAddr(a)); err != nil {
		t.Fatal(err)
	}
	msg, mappedA, ok := peerRead(t, a)
	if !ok || msg != "to A" {
		t.Fatalf("A got %q, %v", msg, ok)
	}
	// B never heard from the association, yet reaches it through the
	// address A saw.
	if _, err := b.WriteToUDPAddrPort([]byte("from B"), mappedA); err != nil {
		t.Fatal(err)
	}
	if s, from, ok := pcRead(t, t1, time.Second); !ok || s != "from B" || from != peerAddr(b) {
		t.Fatalf("tunnel 1 read %q from %v (%v); want B's datagram", s, from, ok)
	}
	// The client answers B over a second tunnel of the same association:
	// B sees the same mapped address.
	t2, err := d.DialPacket(ctx, peerAddr(b))
	if err != nil {
		t.Fatal(err)
	}
	if t2.(*natView).LocalAddr().String() != t1.(*natView).LocalAddr().String() {
		t.Fatalf("second tunnel on %v, first on %v: not one mapping", t2.(*natView).LocalAddr(), t1.(*natView).LocalAddr())
	}
	if err := t2.WritePacket([]byte("to B"), peerAddr(b)); err != nil {
		t.Fatal(err)
	}
	msg, mappedB, ok := peerRead(t, b)
	if !ok || msg != "to B" || mappedB != mappedA {
		t.Fatalf("B got %q from %v; A saw %v", msg, mappedB, mappedA)
	}
	// Each remote's datagrams now go to the tunnel that sent to it.
	b.WriteToUDPAddrPort([]byte("B again"), mappedA)
	a.WriteToUDPAddrPort([]byte("A again"), mappedA)
	if s, from, ok := pcRead(t, t2, time.Second); !ok || s != "B again" || from != peerAddr(b) {
		t.Fatalf("tunnel 2 read %q from %v (%v)", s, from, ok)
	}
	if s, from, ok := pcRead(t, t1, time.Second); !ok || s != "A again" || from != peerAddr(a) {
		t.Fatalf("tunnel 1 read %q from %v (%v)", s, from, ok)
	}
	// Another association gets another socket.
	other, err := d.DialPacket(withPacketPolicy(context.Background(), packetPolicy{mapping: "u2", anySource: true}), peerAddr(a))
	if err != nil {
		t.Fatal(err)
	}
	if other.(*natView).LocalAddr().String() == t1.(*natView).LocalAddr().String() {
		t.Fatal("two associations share a socket")
	}
	other.Close()

	t1.Close()
	if d.nat.len() != 1 {
		t.Fatalf("%d mappings after one of two tunnels closed; want 1", d.nat.len())
	}
	b.WriteToUDPAddrPort([]byte("still"), mappedA)
	if s, _, ok := pcRead(t, t2, time.Second); !ok || s != "still" {
		t.Fatalf("tunnel 2 read %q (%v) after tunnel 1 closed", s, ok)
	}
	t2.Close()
	if d.nat.len() != 0 {
		t.Fatalf("%d mappings after the last tunnel closed", d.nat.len())
	}
	if _, _, ok := pcRead(t, t2, time.Second); ok {
		t.Fatal("read from a closed tunnel")
	}
}

// TestNATViewQueueBounded: a tunnel that does not read holds at most
// natViewQueue datagrams; the rest are dropped and counted.
func TestNATViewQueueBounded(t *testing.T) {
	a := udpPeer(t, "127.0.0.1")
	d := &Direct{}
	v, err := d.DialPacket(withPacketPolicy(context.Background(), packetPolicy{mapping: "k", anySource: true}), peerAddr(a))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v.WritePacket([]byte("hi"), peerAddr(a))
	_, mapped, _ := peerRead(t, a)
	const sent = natViewQueue + 200
	for i := 0; i < sent; i++ {
		a.WriteToUDPAddrPort([]byte(fmt.Sprint(i)), mapped)
		if i%64 == 0 {
			time.Sleep(time.Millisecond) // let the socket buffer drain into the queue
		}
	}
	view := v.(*natView)
	deadline := time.Now().Add(2 * time.Second)
	for len(view.q)+int(view.dropped.Load()) < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(view.q) != natViewQueue || view.dropped.Load() == 0 {
		t.Fatalf("queued %d (bound %d), dropped %d", len(view.q), natViewQueue, view.dropped.Load())
	}
}

// multiPC is a chanPC that names each datagram's source (as VLESS v1,
// AnyTLS per-packet mode and SOCKS5 do).
type multiPC struct{ *chanPC }

func (multiPC) MultiSource() bool { return true }

// TestRouterNATPolicy: through the router, a tunnel that can name sources
// receives a stranger's datagram on a full-cone gateway and not on a
// symmetric one; a tunnel that cannot (VLESS v0, VMess) never does; two
// tunnels with one Association share a mapped port.
func TestRouterNATPolicy(t *testing.T) {
	a, b := udpPeer(t, "127.0.0.1"), udpPeer(t, "127.0.0.2")
	for _, tc := range []struct {
		nat      string
		multi    bool
		stranger bool // B's datagram arrives
	}{
		{"", true, true},
		{NATFullCone, false, false},
		{NATSymmetric, true, false},
	} {
		t.Run(fmt.Sprintf("%s/multi=%v", tc.nat, tc.multi), func(t *testing.T) {
			rt, err := NewRouter(RouterOptions{Outbounds: map[string]tunnel.Dialer{"direct": &Direct{}}, Default: "direct",
				NAT: tc.nat, Log: slog.New(slog.NewTextHandler(&logBuffer{}, nil))})
			if err != nil {
				t.Fatal(err)
			}
			var client tunnel.PacketConn
			c := newChanPC()
			client = c
			if tc.multi {
				client = multiPC{c}
			}
			req := tunnel.Request{User: "u", Network: protocols.NetworkUDP, Target: peerAddr(a), Inbound: "in", Association: "x"}
			done := make(chan error, 1)
			go func() { done <- rt.HandlePacket(context.Background(), client, req) }()
			c.in <- testPacket{[]byte("hello A"), peerAddr(a)}
			_, mapped, ok := peerRead(t, a)
			if !ok {
				t.Fatal("A got nothing")
			}
			b.WriteToUDPAddrPort([]byte("from B"), mapped)
			a.WriteToUDPAddrPort([]byte("from A"), mapped)
			got := map[string]protocols.Addr{}
			for i := 0; i < 2; i++ {
				select {
				case p := <-c.out:
					got[string(p.b)] = p.addr
				case <-time.After(time.Second):
				}
			}
			if got["from A"] != peerAddr(a) {
				t.Fatalf("A's reply: %v", got)
			}
			if _, ok := got["from B"]; ok != tc.stranger {
				t.Fatalf("B's datagram arrived: %v; want %v", ok, tc.stranger)
			}
			close(c.in)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}

	// Two tunnels of one association through the router: one mapped port.
	rt, err := NewRouter(RouterOptions{Outbounds: map[string]tunnel.Dialer{"direct": &Direct{}}, Default: "direct",
		Log: slog.New(slog.NewTextHandler(&logBuffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var seen []netip.AddrPort
	var chans []*chanPC
	var dones []chan error
	for _, peer := range []*net.UDPConn{a, b} {
		c := newChanPC()
		chans = append(chans, c)
		req := tunnel.Request{User: "u", Network: protocols.NetworkUDP, Target: peerAddr(peer), Inbound: "in", Association: "same"}
		done := make(chan error, 1)
		dones = append(dones, done)
		go func() { done <- rt.HandlePacket(context.Background(), multiPC{c}, req) }()
		c.in <- testPacket{[]byte("hi"), peerAddr(peer)}
		_, mapped, ok := peerRead(t, peer)
		if !ok {
			t.Fatal("no datagram")
		}
		seen = append(seen, mapped)
	}
	if seen[0] != seen[1] {
		t.Fatalf("one association, two mapped addresses: %v", seen)
	}
	for i, c := range chans {
		close(c.in)
		if err := <-dones[i]; err != nil {
			t.Fatal(err)
		}
	}
}

// TestFullConeAnyTLS: through the embedded default (udp.nat full-cone), an
// AnyTLS client in udp-over-tcp's per-packet-address mode receives a
// datagram from a remote it never sent to, with that remote's address; in
// connect mode, which cannot name a source, the same datagram is kept out.
func TestFullConeAnyTLS(t *testing.T) {
	a, b := udpPeer(t, "127.0.0.1"), udpPeer(t, "127.0.0.2")
	st, g, _ := startServerGateway(t)
	for _, perPacket := range []bool{true, false} {
		t.Run(fmt.Sprintf("perPacket=%v", perPacket), func(t *testing.T) {
			tlsCfg, err := rawtls.ClientConfig("", g.Pin(), false, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := anytlsclient.New(anytlsclient.Options{Password: st.Password, UDPPerPacket: perPacket,
				Carrier: &rawtls.Dialer{Address: g.Addr().String(), TLS: tlsCfg}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			pc, err := c.DialPacket(ctx, peerAddr(a))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if err := pc.WritePacket([]byte("hello A"), peerAddr(a)); err != nil {
				t.Fatal(err)
			}
			msg, mapped, ok := peerRead(t, a)
			if !ok || msg != "hello A" {
				t.Fatalf("A got %q (%v)", msg, ok)
			}
			b.WriteToUDPAddrPort([]byte("from B"), mapped)
			s, from, ok := pcRead(t, pc, time.Second)
			if ok != perPacket {
				t.Fatalf("stranger's datagram arrived: %v (%q from %v); want %v", ok, s, from, perPacket)
			}
			if perPacket && (s != "from B" || from != peerAddr(b)) {
				t.Fatalf("read %q from %v; want B's datagram from %v", s, from, peerAddr(b))
			}
		})
	}
}
