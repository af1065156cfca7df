package readwait

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/raceflag"
)

func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// returnsWithin runs wait and reports its error, failing if it takes longer
// than d.
func returnsWithin(t *testing.T, wait func() error, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("wait did not return within %v", d)
		return nil
	}
}

func requirePoll(t *testing.T) {
	if !pollSupported {
		t.Skipf("no bufferless wait on %s", runtime.GOOS)
	}
}

// The wait blocks while nothing has arrived, returns once bytes have, and
// leaves them for the Read.
func TestWaitsForBytesAndKeepsThem(t *testing.T) {
	requirePoll(t)
	a, b := tcpPair(t)
	wait := For(b)
	if wait == nil {
		t.Fatal("For(*net.TCPConn) = nil")
	}
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		t.Fatalf("wait returned %v with nothing sent", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return after bytes arrived")
	}
	buf := make([]byte, 16)
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read after wait = %q, %v; want hello", buf[:n], err)
	}
	// Bytes already waiting: the wait returns at once.
	a.Write([]byte("x"))
	time.Sleep(20 * time.Millisecond)
	if err := returnsWithin(t, wait, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReturnsAtEndOfStream(t *testing.T) {
	requirePoll(t)
	a, b := tcpPair(t)
	wait := For(b)
	a.CloseWrite()
	if err := returnsWithin(t, wait, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want EOF", n, err)
	}
}

func TestWaitEndsWhenClosedOrDeadline(t *testing.T) {
	requirePoll(t)
	_, b := tcpPair(t)
	wait := For(b)
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := returnsWithin(t, wait, 5*time.Second); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait past the deadline = %v; want os.ErrDeadlineExceeded", err)
	}
	b.SetReadDeadline(time.Time{})
	go func() { time.Sleep(50 * time.Millisecond); b.Close() }()
	if err := returnsWithin(t, wait, 5*time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("wait on a closed conn = %v; want net.ErrClosed", err)
	}
}

// wrapper holds bytes of its own, as a conn that peeked does.
type wrapper struct {
	net.Conn
	held []byte
}

func (w *wrapper) ReadWaiter() func() error {
	inner := For(w.Conn)
	if inner == nil {
		return nil
	}
	return func() error {
		if len(w.held) > 0 {
			return nil
		}
		return inner()
	}
}

func TestWrappersAndOthers(t *testing.T) {
	requirePoll(t)
	_, b := tcpPair(t)
	w := For(&wrapper{Conn: b, held: []byte("x")})
	if w == nil {
		t.Fatal("For(wrapper) = nil")
	}
	if err := returnsWithin(t, w, time.Second); err != nil {
		t.Fatal(err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if For(p1) != nil {
		t.Error("For(net.Pipe) is not nil: a pipe cannot be waited on")
	}
	if For(&wrapper{Conn: p1}) != nil {
		t.Error("a wrapper of a pipe has a waiter")
	}
}

func TestWaitZeroAllocs(t *testing.T) {
	requirePoll(t)
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	a, b := tcpPair(t)
	wait := For(b)
	a.Write([]byte("x"))
	time.Sleep(20 * time.Millisecond)
	if n := testing.AllocsPerRun(100, func() { wait() }); n != 0 {
		t.Fatalf("a wait allocates %v times", n)
	}
}

// A reset is left for the Read to report: the wait must not consume the
// socket's error, or a cut stream would look like a clean end.
func TestWaitLeavesResetForRead(t *testing.T) {
	requirePoll(t)
	a, b := tcpPair(t)
	wait := For(b)
	a.Write([]byte("x"))
	if err := returnsWithin(t, wait, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Read(make([]byte, 4)); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	a.SetLinger(0)
	a.Close() // RST
	if err := returnsWithin(t, wait, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Read(make([]byte, 4)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a reset = %v; want ECONNRESET", err)
	}
}
