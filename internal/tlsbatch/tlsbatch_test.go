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

// splitConn, once armed, writes each write longer than at in two parts,
// the second delay later: a record that arrives in pieces.
type splitConn struct {
	net.Conn
	at    int
	delay time.Duration
	armed atomic.Bool
}

func (c *splitConn) Write(p []byte) (int, error) {
	if !c.armed.Load() || len(p) <= c.at {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:c.at])
	if err != nil {
		return n, err
	}
	time.Sleep(c.delay)
	m, err := c.Conn.Write(p[c.at:])
	return n + m, err
}

// TestReadFillsWholeRecords: a Read into a bulk buffer fills it with what
// the socket already holds (crypto/tls alone returns one record, at most
// 16 KiB), returns at once what it has when the next record is not all
// there, and loses no byte and no end of stream doing so.
func TestReadFillsWholeRecords(t *testing.T) {
	read := func(t *testing.T, s *Conn, size int) ([]byte, error) {
		t.Helper()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, size)
		n, err := s.Read(buf)
		return buf[:n], err
	}
	t.Run("whole records waiting", func(t *testing.T) {
		c, _, s := pair(t)
		msg := make([]byte, 64<<10)
		rand.Read(msg)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // all of it in the socket
		var got []byte
		for len(got) < len(msg) {
			b, err := read(t, s, 32<<10)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != 32<<10 {
				t.Fatalf("Read returned %d bytes with %d waiting; want a full 32768", len(b), len(msg)-len(got))
			}
			got = append(got, b...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatal("bytes differ")
		}
	})
	t.Run("next record in pieces", func(t *testing.T) {
		cert := prototest.SelfSigned(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			// Past crypto/tls's first 128 KiB its records are full: 16384
			// bytes of payload make 16384+22 on the wire, and the split
			// falls 100 bytes into the second record.
			sc := &splitConn{Conn: raw, at: 16384 + 22 + 100, delay: 300 * time.Millisecond}
			c := Client(sc, cert.ClientTLS())
			defer c.Close()
			c.Write(make([]byte, 256<<10))
			time.Sleep(100 * time.Millisecond)
			sc.armed.Store(true)
			c.Write(bytes.Repeat([]byte{'x'}, 32<<10))
			c.CloseWrite()
			time.Sleep(time.Second)
		}()
		rc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s := Server(rc, cert.ServerTLS())
		defer s.Close()
		for left := 256 << 10; left > 0; {
			b, err := read(t, s, 32<<10)
			if err != nil {
				t.Fatal(err)
			}
			left -= len(b)
		}
		time.Sleep(200 * time.Millisecond) // the first piece is in
		start := time.Now()
		b, err := read(t, s, 33<<10)
		if err != nil || len(b) != 16<<10 {
			t.Fatalf("first Read: %d bytes, %v; want the whole first record alone", len(b), err)
		}
		if el := time.Since(start); el > 250*time.Millisecond {
			t.Fatalf("first Read took %v: it waited for the second record", el)
		}
		// The close_notify behind it may come with the data (n, io.EOF).
		b2, err := read(t, s, 33<<10)
		if (err != nil && err != io.EOF) || len(b2) != 16<<10 || !bytes.Equal(append(b, b2...), bytes.Repeat([]byte{'x'}, 32<<10)) {
			t.Fatalf("second Read: %d bytes, %v; want the rest of the second record", len(b2), err)
		}
		if b, err := read(t, s, 33<<10); len(b) != 0 || err != io.EOF {
			t.Fatalf("third Read: %d bytes, %v; want the end of the stream", len(b), err)
		}
	})
	t.Run("end of stream behind the data", func(t *testing.T) {
		c, _, s := pair(t)
		msg := bytes.Repeat([]byte{'y'}, 20000)
		c.Write(msg)
		c.CloseWrite()
		time.Sleep(100 * time.Millisecond)
		var got []byte
		var err error
		for err == nil {
			var b []byte
			b, err = read(t, s, 33<<10)
			got = append(got, b...)
		}
		if err != io.EOF || !bytes.Equal(got, msg) {
			t.Fatalf("read %d bytes then %v; want %d then io.EOF", len(got), err, len(msg))
		}
	})
}
