package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/internal/readwait"
)

// tcpPair returns the two ends of a real loopback TCP connection, which
// supports CloseWrite.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type countUpDown struct {
	mu       sync.Mutex
	up, down int64
}

func (c *countUpDown) Add(up, down int64) {
	c.mu.Lock()
	c.up += up
	c.down += down
	c.mu.Unlock()
}

// TestRelayHalfClose: the client sends a request and half-closes; the target
// reads to EOF (which only the carried half-close can give it), then answers
// and closes. Both sides see every byte, and the counters agree.
func TestRelayHalfClose(t *testing.T) {
	client, gwClient := tcpPair(t)
	gwTarget, target := tcpPair(t)
	req := make([]byte, 3<<20+17)
	resp := make([]byte, 5<<20+3)
	rand.Read(req)
	rand.Read(resp)

	var cnt countUpDown
	done := make(chan RelayResult, 1)
	go func() {
		done <- Relay(context.Background(), gwClient, gwTarget, RelayOptions{Counter: &cnt, Idle: time.Minute})
	}()

	targetErr := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(target)
		if err == nil && !bytes.Equal(got, req) {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			_, err = target.Write(resp)
		}
		target.Close()
		targetErr <- err
	}()
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-targetErr; err != nil {
		t.Fatalf("target: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(resp) {
		t.Fatalf("client got %d bytes, not the %d-byte response", len(got), len(resp))
	}
	res := <-done
	if res.Up != int64(len(req)) || res.Down != int64(len(resp)) || res.Err != nil || res.IdledOut {
		t.Fatalf("result = %+v, want up %d down %d", res, len(req), len(resp))
	}
	if cnt.up != res.Up || cnt.down != res.Down {
		t.Fatalf("counter = %d/%d, result %d/%d", cnt.up, cnt.down, res.Up, res.Down)
	}
}

func TestRelayIdleTimeout(t *testing.T) {
	client, gwClient := tcpPair(t)
	gwTarget, _ := tcpPair(t)
	start := time.Now()
	done := make(chan RelayResult, 1)
	go func() {
		done <- Relay(context.Background(), gwClient, gwTarget, RelayOptions{Idle: 150 * time.Millisecond})
	}()
	// Activity keeps it alive past one idle period.
	for i := 0; i < 3; i++ {
		time.Sleep(80 * time.Millisecond)
		client.Write([]byte("x"))
	}
	select {
	case res := <-done:
		if !res.IdledOut {
			t.Fatalf("relay ended without idling out: %+v", res)
		}
		if el := time.Since(start); el < 300*time.Millisecond {
			t.Fatalf("idled out after %v despite activity", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not idle out")
	}
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client conn still open after idle timeout")
	}
}

func TestRelayContextCancel(t *testing.T) {
	_, gwClient := tcpPair(t)
	gwTarget, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan RelayResult, 1)
	go func() { done <- Relay(ctx, gwClient, gwTarget, RelayOptions{}) }()
	cancel()
	select {
	case res := <-done:
		if res.Err != context.Canceled {
			t.Fatalf("err = %v, want context.Canceled", res.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay ignored cancellation")
	}
}

// chunkConn reads n full chunks then EOF, and discards writes: a conn with
// no cost of its own, so that allocations measured are the relay's.
type chunkConn struct {
	n      int
	closed bool
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	c.n--
	return len(p), nil
}
func (c *chunkConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *chunkConn) Close() error                     { c.closed = true; return nil }
func (c *chunkConn) CloseWrite() error                { return nil }
func (c *chunkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *chunkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

type nopCounter struct{ up, down atomic.Int64 }

func (c *nopCounter) Add(up, down int64) { c.up.Add(up); c.down.Add(down) }

// TestRelayZeroAllocsPerChunk: a relay's allocations do not grow with the
// number of chunks it copies (only its fixed set-up cost remains).
func TestRelayZeroAllocsPerChunk(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	measure := func(chunks int) float64 {
		return testing.AllocsPerRun(20, func() {
			Relay(context.Background(), &chunkConn{n: chunks}, &chunkConn{n: chunks},
				RelayOptions{Idle: time.Minute, Counter: &nopCounter{}})
		})
	}
	measure(10) // warm the buffer pool
	few, many := measure(10), measure(2000)
	if many > few {
		t.Fatalf("relay allocations grow with chunks: %v for 10 chunks, %v for 2000", few, many)
	}
}

func BenchmarkRelayChunk(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(relayBufSize * 2)
	Relay(context.Background(), &chunkConn{n: b.N}, &chunkConn{n: b.N}, RelayOptions{Idle: time.Minute, Counter: &nopCounter{}})
}

// noHalfClose hides CloseWrite, as a WebSocket or gRPC server stream does.
type noHalfClose struct{ net.Conn }

// TestRelayGraceWithoutHalfClose: when the target side cannot be
// half-closed, the answer still comes back after the client finished
// sending, and the relay then ends within the grace period.
func TestRelayGraceWithoutHalfClose(t *testing.T) {
	client, gwClient := tcpPair(t)
	gwTarget, target := tcpPair(t)
	done := make(chan RelayResult, 1)
	go func() {
		done <- Relay(context.Background(), gwClient, noHalfClose{gwTarget}, RelayOptions{HalfCloseGrace: 300 * time.Millisecond})
	}()
	client.Write([]byte("question"))
	client.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 8)
	io.ReadFull(target, buf)
	time.Sleep(100 * time.Millisecond) // the target answers after the client's EOF
	target.Write([]byte("answer"))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(client)
	if string(got) != "answer" {
		t.Fatalf("client got %q after its half-close, want the answer", got)
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("relay did not end after the grace period")
	}
}

// TestRelayTCPZeroAllocsPerChunk: over real sockets, where a direction
// waits for readability without a buffer and takes a pooled one per read,
// a chunk still costs no allocation.
func TestRelayTCPZeroAllocsPerChunk(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	client, gwClient := tcpPair(t)
	gwTarget, target := tcpPair(t)
	go Relay(context.Background(), gwClient, gwTarget, RelayOptions{Idle: time.Minute, Counter: &nopCounter{}})
	go io.Copy(target, target) // echo
	msg := make([]byte, 1000)
	echo := func() {
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		echo() // warm the pool
	}
	// The echo goroutine's io.Copy and this side's own calls allocate
	// nothing per message either, so any allocation is the relay's.
	if n := testing.AllocsPerRun(200, echo); n > 0.05 {
		t.Fatalf("%.2f allocations per relayed chunk (each way) over TCP", n)
	}
}

// TestIdleRelayMemory: an idle relay between two TCP sockets holds no
// buffer while both directions wait. 300 idle relays are measured against
// the same sockets without relays.
func TestIdleRelayMemory(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("heap figures are meaningless under -race; make test runs this without it")
	}
	const n = 300
	type quad struct{ client, gwClient, gwTarget, target net.Conn }
	qs := make([]quad, n)
	for i := range qs {
		qs[i].client, qs[i].gwClient = tcpPair(t)
		qs[i].gwTarget, qs[i].target = tcpPair(t)
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	var wg sync.WaitGroup
	for _, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Relay(context.Background(), q.gwClient, q.gwTarget, RelayOptions{Idle: time.Minute})
		}()
	}
	// One byte each way through every relay, so that each direction has
	// read once and is back to waiting.
	one := make([]byte, 1)
	for _, q := range qs {
		for _, p := range [][2]net.Conn{{q.client, q.target}, {q.target, q.client}} {
			p[0].Write(one)
			if _, err := io.ReadFull(p[1], one); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	per := float64(heap()-before) / n
	t.Logf("an idle relay costs %.0f bytes of heap beyond its sockets", per)
	// A relay's own state (timer, context, counters) is a few hundred
	// bytes; a buffer per waiting direction would be 2 KiB or more each.
	if per > 3072 {
		t.Errorf("an idle relay holds %.0f bytes of heap; want under 3072 (no buffer while waiting)", per)
	}
	for _, q := range qs {
		q.client.Close()
		q.target.Close()
	}
	wg.Wait()
}

// A prefixConn (the mixed listener's peeked byte) is waited on without a
// buffer: the prefix is ready at once, then the socket.
func TestPrefixConnReadWaiter(t *testing.T) {
	client, server := tcpPair(t)
	pc := newPrefixConn(server, nil, []byte{5})
	wait := readwait.For(pc)
	if wait == nil {
		t.Skip("no bufferless wait on this system")
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if n, _ := pc.Read(b); n != 1 || b[0] != 5 {
		t.Fatalf("Read = % x; want the prefix", b[:n])
	}
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		t.Fatalf("wait returned %v with nothing to read", err)
	case <-time.After(100 * time.Millisecond):
	}
	client.Write([]byte("x"))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return when bytes arrived")
	}
}
