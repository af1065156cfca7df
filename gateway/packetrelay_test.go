package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

type testPacket struct {
	b    []byte
	addr protocols.Addr
}

// chanPC is an in-memory tunnel.PacketConn: ReadPacket takes from in,
// WritePacket puts on out. only, when valid, makes it a one-destination
// conn that refuses others with tunnel.ErrOtherDestination.
type chanPC struct {
	in, out   chan testPacket
	only      protocols.Addr
	closeOnce sync.Once
	closed    chan struct{}
}

func newChanPC() *chanPC {
	return &chanPC{in: make(chan testPacket, 256), out: make(chan testPacket, 256), closed: make(chan struct{})}
}

func (c *chanPC) ReadPacket(b []byte) (int, protocols.Addr, error) {
	select {
	case p, ok := <-c.in:
		if !ok {
			return 0, protocols.Addr{}, io.EOF
		}
		return copy(b, p.b), p.addr, nil
	case <-c.closed:
		return 0, protocols.Addr{}, net.ErrClosed
	}
}

func (c *chanPC) WritePacket(b []byte, to protocols.Addr) error {
	if c.only.IsValid() && to != c.only {
		return fmt.Errorf("chan: %v: %w", to, tunnel.ErrOtherDestination)
	}
	select {
	case <-c.closed:
		return net.ErrClosed
	case c.out <- testPacket{bytes.Clone(b), to}:
		return nil
	}
}

func (c *chanPC) Close() error { c.closeOnce.Do(func() { close(c.closed) }); return nil }

func recvPacket(t *testing.T, ch chan testPacket) testPacket {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5 s")
		return testPacket{}
	}
}

var (
	dnsAddr  = protocols.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 53}
	echoAddr = protocols.Addr{IP: netip.MustParseAddr("192.0.2.2"), Port: 7}
)

// TestRelayPacketsBothWaysAndCounts: packets go both ways with their
// addresses, and the result and the counter agree on packets and bytes.
func TestRelayPacketsBothWaysAndCounts(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client, target := newChanPC(), newChanPC()
	counter := &UserCounter{}
	done := make(chan PacketRelayResult, 1)
	go func() {
		done <- RelayPackets(context.Background(), client, target, echoAddr, PacketRelayOptions{Counter: counter})
	}()
	for i := range 10 {
		client.in <- testPacket{bytes.Repeat([]byte{byte(i)}, 100), echoAddr}
		p := recvPacket(t, target.out)
		if p.addr != echoAddr || len(p.b) != 100 || p.b[0] != byte(i) {
			t.Fatalf("target got %v %x", p.addr, p.b[:4])
		}
		target.in <- testPacket{p.b[:50], echoAddr}
		q := recvPacket(t, client.out)
		if q.addr != echoAddr || len(q.b) != 50 {
			t.Fatalf("client got %v, %d bytes", q.addr, len(q.b))
		}
	}
	close(client.in) // the client ends the association
	res := <-done
	if res.UpPackets != 10 || res.DownPackets != 10 || res.Up != 1000 || res.Down != 500 || res.Err != nil {
		t.Fatalf("result %+v", res)
	}
	if up, down := counter.Load(); up != 1000 || down != 500 {
		t.Fatalf("counter %d/%d", up, down)
	}
	select {
	case <-target.closed:
	default:
		t.Fatal("target not closed")
	}
}

// TestRelayPacketsIdle: an association that has only sent to port 53 ends
// after DNSIdle; one that has sent elsewhere waits for Idle.
func TestRelayPacketsIdle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	run := func(dst protocols.Addr) (PacketRelayResult, time.Duration) {
		client, target := newChanPC(), newChanPC()
		client.in <- testPacket{[]byte("q"), dst}
		start := time.Now()
		res := RelayPackets(context.Background(), client, target, dst,
			PacketRelayOptions{Idle: 600 * time.Millisecond, DNSIdle: 150 * time.Millisecond})
		return res, time.Since(start)
	}
	res, took := run(dnsAddr)
	if !res.IdledOut || took < 150*time.Millisecond || took > 500*time.Millisecond {
		t.Errorf("dns: idled out %v after %v, want about 150ms", res.IdledOut, took)
	}
	res, took = run(echoAddr)
	if !res.IdledOut || took < 600*time.Millisecond || took > 2*time.Second {
		t.Errorf("other: idled out %v after %v, want about 600ms", res.IdledOut, took)
	}
}

// TestRelayPacketsIdleResetByTraffic: traffic keeps the association alive
// past the idle timeout.
func TestRelayPacketsIdleResetByTraffic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client, target := newChanPC(), newChanPC()
	done := make(chan PacketRelayResult, 1)
	start := time.Now()
	go func() {
		done <- RelayPackets(context.Background(), client, target, echoAddr, PacketRelayOptions{Idle: 200 * time.Millisecond})
	}()
	for range 6 {
		client.in <- testPacket{[]byte("x"), echoAddr}
		recvPacket(t, target.out)
		time.Sleep(80 * time.Millisecond)
	}
	res := <-done
	if !res.IdledOut || time.Since(start) < 600*time.Millisecond {
		t.Fatalf("ended after %v: %+v", time.Since(start), res)
	}
}

// TestRelayPacketsPerDestination: a one-destination outbound gets a new
// conn per destination through Dial, bounded by MaxConns; replies from
// every conn reach the client; everything is closed at the end.
func TestRelayPacketsPerDestination(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client, first := newChanPC(), newChanPC()
	first.only = echoAddr
	var mu sync.Mutex
	dialed := map[protocols.Addr]*chanPC{}
	dial := func(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
		c := newChanPC()
		c.only = dst
		mu.Lock()
		dialed[dst] = c
		mu.Unlock()
		return c, nil
	}
	done := make(chan PacketRelayResult, 1)
	go func() {
		done <- RelayPackets(context.Background(), client, first, echoAddr, PacketRelayOptions{Dial: dial, MaxConns: 3})
	}()
	dsts := []protocols.Addr{echoAddr, dnsAddr, {IP: netip.MustParseAddr("192.0.2.3"), Port: 9}, {IP: netip.MustParseAddr("192.0.2.4"), Port: 9}}
	for _, d := range dsts {
		client.in <- testPacket{[]byte(d.String()), d}
	}
	recvPacket(t, first.out)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(dialed)
		mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	second := dialed[dnsAddr]
	mu.Unlock()
	if second == nil {
		t.Fatal("no conn dialled for the second destination")
	}
	if p := recvPacket(t, second.out); p.addr != dnsAddr {
		t.Fatalf("second conn got a packet for %v", p.addr)
	}
	second.in <- testPacket{[]byte("answer"), dnsAddr}
	if q := recvPacket(t, client.out); q.addr != dnsAddr || string(q.b) != "answer" {
		t.Fatalf("client got %q from %v", q.b, q.addr)
	}
	close(client.in)
	res := <-done
	if res.UpPackets != 3 || res.Dropped != 1 || len(dialed) != 2 {
		t.Fatalf("result %+v with %d dialled, want 3 up, 1 dropped (MaxConns 3), 2 dialled", res, len(dialed))
	}
	for _, c := range dialed {
		select {
		case <-c.closed:
		default:
			t.Fatal("a dialled conn was left open")
		}
	}
}

// TestRelayPacketsTargetEnds: the outbound ending ends the association
// and closes the client; cancelling ctx does too.
func TestRelayPacketsTargetEnds(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client, target := newChanPC(), newChanPC()
	close(target.in)
	res := RelayPackets(context.Background(), client, target, echoAddr, PacketRelayOptions{})
	if res.Err != nil {
		t.Fatalf("err %v", res.Err)
	}
	select {
	case <-client.closed:
	default:
		t.Fatal("client not closed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res = RelayPackets(ctx, newChanPC(), newChanPC(), echoAddr, PacketRelayOptions{})
	if !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: err %v", res.Err)
	}
}

// TestRelayPacketsBoundedRead: a datagram longer than the relay's buffer
// is cut to it, not grown into.
func TestRelayPacketsBoundedRead(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client, target := newChanPC(), newChanPC()
	client.in <- testPacket{make([]byte, 2*relayBufSize), echoAddr}
	close(client.in)
	res := RelayPackets(context.Background(), client, target, echoAddr, PacketRelayOptions{})
	if p := recvPacket(t, target.out); len(p.b) != relayBufSize || res.Up != relayBufSize {
		t.Fatalf("forwarded %d bytes (%+v), want %d", len(p.b), res, relayBufSize)
	}
}

// udpEcho serves a UDP echo on loopback until the test ends.
func udpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestDirectPacket: Direct's packet conn reaches a UDP echo by IP and by
// name, reports the source, and drops datagrams from an IP it has not
// sent to.
func TestDirectPacket(t *testing.T) {
	echo := udpEcho(t)
	pc, err := (&Direct{}).DialPacket(context.Background(), protocols.AddrFromAddrPort(echo))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	buf := make([]byte, 2048)
	for _, dst := range []protocols.Addr{protocols.AddrFromAddrPort(echo), protocols.DomainAddr("localhost", echo.Port())} {
		if err := pc.WritePacket([]byte("ping "+dst.String()), dst); err != nil {
			t.Fatal(err)
		}
		n, from, err := pc.ReadPacket(buf)
		if err != nil || string(buf[:n]) != "ping "+dst.String() || from != protocols.AddrFromAddrPort(echo) {
			t.Fatalf("read %q from %v, %v", buf[:n], from, err)
		}
	}

	// A stranger on ::1 (or 127.0.0.2) is not let in; the echo still is.
	local := pc.(*directPacketConn).LocalAddr().(*net.UDPAddr)
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skip("no 127.0.0.2:", err)
	}
	defer stranger.Close()
	if _, err := stranger.WriteToUDPAddrPort([]byte("stranger"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(local.Port))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := pc.WritePacket([]byte("friend"), protocols.AddrFromAddrPort(echo)); err != nil {
		t.Fatal(err)
	}
	n, from, err := pc.ReadPacket(buf)
	if err != nil || string(buf[:n]) != "friend" || from.IP != echo.Addr() {
		t.Fatalf("read %q from %v, %v; want the friend", buf[:n], from, err)
	}
}

// TestRouterHandlePacket: the router sends an association to the outbound
// its rules pick: a blocked one closes the client's packet conn and
// returns ErrBlocked; a direct one relays to a UDP echo, counts the user's
// bytes, and logs one line when the client ends.
func TestRouterHandlePacket(t *testing.T) {
	echo := udpEcho(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // the echo's goroutine ends in Cleanup, after this
	logs := &logBuffer{}
	rt, err := NewRouter(RouterOptions{
		Outbounds: map[string]tunnel.Dialer{"direct": &Direct{}, "block": Block{}},
		Default:   "direct",
		Rules:     []Rule{{Ports: []PortRange{{Lo: 9, Hi: 9}}, Outbound: "block"}},
		Log:       slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	client := newChanPC()
	blocked := protocols.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9}
	err = rt.HandlePacket(context.Background(), client, tunnel.Request{User: "u", Network: protocols.NetworkUDP, Target: blocked})
	if !errors.Is(err, protocols.ErrBlocked) {
		t.Fatalf("blocked: %v", err)
	}
	select {
	case <-client.closed:
	default:
		t.Fatal("blocked: client conn left open")
	}

	client = newChanPC()
	dst := protocols.AddrFromAddrPort(echo)
	done := make(chan error, 1)
	go func() {
		done <- rt.HandlePacket(context.Background(), client, tunnel.Request{User: "u", Network: protocols.NetworkUDP, Target: dst, Transport: "test"})
	}()
	client.in <- testPacket{[]byte("hello"), dst}
	if p := recvPacket(t, client.out); string(p.b) != "hello" || p.addr != dst {
		t.Fatalf("got %q from %v", p.b, p.addr)
	}
	// A later destination is routed too: the rule blocks it, its packet
	// is dropped, and the association goes on.
	client.in <- testPacket{[]byte("nope"), blocked}
	client.in <- testPacket{[]byte("again"), dst}
	if p := recvPacket(t, client.out); string(p.b) != "again" {
		t.Fatalf("got %q from %v", p.b, p.addr)
	}
	close(client.in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if up, down := rt.Stats().User("u").Load(); up != 10 || down != 10 {
		t.Fatalf("counted %d/%d", up, down)
	}
	if n := strings.Count(logs.String(), `msg="udp association"`); n != 1 || !strings.Contains(logs.String(), "up_packets=2 down_packets=2 up=10 down=10") ||
		!strings.Contains(logs.String(), "dropped=1") {
		t.Fatalf("log:\n%s", logs.String())
	}
}
