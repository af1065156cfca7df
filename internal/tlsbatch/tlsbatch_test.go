package tlsbatch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/prototest"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
	fail   atomic.Bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.fail.Load() {
		return 0, errors.New("broken pipe")
	}
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// pair returns a batched client over a counting socket and the batched
// server it talks to, handshaken.
func pair(t *testing.T) (*Conn, *countingConn, *Conn) {
	t.Helper()
	cert := prototest.SelfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := make(chan *Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- nil
			return
		}
		s := Server(c, cert.ServerTLS())
		s.Handshake()
		srv <- s
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	c := Client(cc, cert.ClientTLS())
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	s := <-srv
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, cc, s
}

// TestOneSocketWritePerWrite: a Write of several records (32 KiB with some
// framing: three) reaches the socket as one write, a longer one as one
// write per pooled buffer's worth, and the peer reads every byte.
func TestOneSocketWritePerWrite(t *testing.T) {
	c, cc, s := pair(t)
	// Past crypto/tls's first 128 KiB, whose records start small and grow.
	warm := make(chan struct{})
	go func() { io.CopyN(io.Discard, s, 256<<10); close(warm) }()
	c.Write(make([]byte, 256<<10))
	<-warm
	for _, tc := range []struct{ size, writes int }{{1, 1}, {16 << 10, 1}, {32 << 10, 1}, {32<<10 + 300, 1}, {64 << 10, 2}} {
		size := tc.size
		msg := make([]byte, size)
		rand.Read(msg)
		got := make([]byte, size)
		done := make(chan error, 1)
		go func() { _, err := io.ReadFull(s, got); done <- err }()
		before := cc.writes.Load()
		if n, err := c.Write(msg); n != size || err != nil {
			t.Fatalf("Write(%d) = %d, %v", size, n, err)
		}
		if w := cc.writes.Load() - before; w != int64(tc.writes) {
			t.Errorf("a %d-byte Write (%d records) took %d socket writes; want %d", size, (size+16383)/16384, w, tc.writes)
		}
		if err := <-done; err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("the peer read %v, equal %v", err, bytes.Equal(got, msg))
		}
	}
}

// TestWriteBeforeHandshake: a first Write runs the handshake, whose
// flights are not held back (they wait for answers).
func TestWriteBeforeHandshake(t *testing.T) {
	cert := prototest.SelfSigned(t)
	a, b := net.Pipe()
	c, s := Client(a, cert.ClientTLS()), Server(b, cert.ServerTLS())
	defer a.Close() // not the TLS conns: over a pipe, close_notify waits for a reader
	defer b.Close()
	go func() { io.Copy(s, s) }()
	done := make(chan error, 1)
	go func() {
		if _, err := c.Write([]byte("hello")); err != nil {
			done <- err
			return
		}
		buf := make([]byte, 5)
		_, err := io.ReadFull(c, buf)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write before the handshake hangs")
	}
}

// TestBothWaysAtOnce: writes and reads on both ends at once move every
// byte intact and in order (run with -race).
func TestBothWaysAtOnce(t *testing.T) {
	c, _, s := pair(t)
	const total = 4 << 20
	pattern := func(i int) byte { return byte(i*7 + i>>13) }
	var wg sync.WaitGroup
	for _, pr := range [][2]*Conn{{c, s}, {s, c}} {
		w, r := pr[0], pr[1]
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 40<<10)
			for off, size := 0, 1; off < total; size = size*3%(40<<10) + 1 {
				n := min(size, total-off)
				for i := range n {
					buf[i] = pattern(off + i)
				}
				if _, err := w.Write(buf[:n]); err != nil {
					t.Error(err)
					return
				}
				off += n
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for off := 0; off < total; {
				n, err := r.Read(buf)
				for i := range n {
					if buf[i] != pattern(off+i) {
						t.Errorf("byte %d is wrong", off+i)
						return
					}
				}
				off += n
				if err != nil {
					t.Errorf("read after %d bytes: %v", off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestSocketErrorSticks: a socket write that fails fails the Write, and
// every Write after it.
func TestSocketErrorSticks(t *testing.T) {
	c, cc, _ := pair(t)
	cc.fail.Store(true)
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write over a broken socket succeeded")
	}
	cc.fail.Store(false)
	if _, err := c.Write([]byte("y")); err == nil {
		t.Fatal("a Write after a failed one succeeded")
	}
}

// TestStillTLS: what else a *tls.Conn offers is there.
func TestStillTLS(t *testing.T) {
	c, _, _ := pair(t)
	if st := c.ConnectionState(); !st.HandshakeComplete || st.Version != tls.VersionTLS13 {
		t.Fatalf("ConnectionState = %+v", st)
	}
	if c.NetConn() == nil {
		t.Fatal("no NetConn")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
}
