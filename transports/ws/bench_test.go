package ws

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/portico-gw/portico/internal/raceflag"
)

const benchMsg = 16 << 10

// benchPair returns a connected server conn and client conn over loopback,
// and the raw TCP connections under them.
func benchPair(b *testing.B) (srvConn, cliConn *conn, srvRaw, cliRaw net.Conn) {
	got := make(chan *conn, 1)
	done := make(chan struct{})
	h := &Handler{Path: "/b", PingInterval: -1, Serve: func(c net.Conn, r *http.Request) {
		got <- c.(*conn)
		<-done
	}}
	srv, _ := server(b, h, false)
	b.Cleanup(func() { close(done) })
	var raw net.Conn
	c, err := (&Dialer{URL: wsURL(srv, "/b"), NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := new(net.Dialer).DialContext(ctx, network, addr)
		raw = c
		return c, err
	}}).DialConn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	s := <-got
	return s, c.(*conn), s.nc, raw
}

// frame is one binary message of n zero bytes as a raw frame; masked with
// the all-zero key (valid, and the payload stays as is) when masked.
func frame(n int, masked bool) []byte {
	f := []byte{0x82, 126, 0, 0}
	binary.BigEndian.PutUint16(f[2:], uint16(n))
	if masked {
		f[1] |= 0x80
		f = append(f, 0, 0, 0, 0)
	}
	return append(f, make([]byte, n)...)
}

func benchWrite(b *testing.B, w *conn, peerRaw net.Conn) {
	go io.Copy(io.Discard, peerRaw)
	msg := make([]byte, benchMsg)
	w.Write(msg) // warm the buffer pool
	b.SetBytes(benchMsg)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRead(b *testing.B, r *conn, peerRaw net.Conn, masked bool) {
	f := frame(benchMsg, masked)
	many := make([]byte, 0, 16*len(f))
	for range 16 {
		many = append(many, f...)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := peerRaw.Write(many); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, benchMsg)
	io.ReadFull(r, buf)
	b.SetBytes(benchMsg)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerWrite: one binary message per Write from the server, built
// in a pooled buffer with its header.
func BenchmarkServerWrite(b *testing.B) {
	s, _, _, cliRaw := benchPair(b)
	benchWrite(b, s, cliRaw)
}

// BenchmarkClientWrite: client messages are masked while copied into the
// pooled buffer.
func BenchmarkClientWrite(b *testing.B) {
	_, c, srvRaw, _ := benchPair(b)
	benchWrite(b, c, srvRaw)
}

// BenchmarkServerRead: reading client messages: the payload straight into
// the caller's buffer, unmasked there.
func BenchmarkServerRead(b *testing.B) {
	s, _, _, cliRaw := benchPair(b)
	benchRead(b, s, cliRaw, true)
}

func BenchmarkClientRead(b *testing.B) {
	_, c, srvRaw, _ := benchPair(b)
	benchRead(b, c, srvRaw, false)
}

// endless repeats a byte sequence forever.
type endless struct {
	b   []byte
	off int
}

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.b[e.off:])
	e.off = (e.off + n) % len(e.b)
	return n, nil
}

// discard is a conn whose writes vanish.
type discard struct{ pipeConn }

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestFramesZeroAllocs: writing and reading a message costs no allocation
// on either side.
func TestFramesZeroAllocs(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	msg := make([]byte, benchMsg)
	for _, client := range []bool{false, true} {
		w := newConn(&discard{}, nil, client, nil, nil)
		w.Write(msg) // warm the pool
		if a := testing.AllocsPerRun(200, func() { w.Write(msg) }); a != 0 {
			t.Errorf("client=%v: %.1f allocations per message written, want 0", client, a)
		}
		r := newConn(&pipeConn{in: &endless{b: frame(benchMsg, !client)}}, nil, client, nil, nil)
		io.ReadFull(r, msg)
		if a := testing.AllocsPerRun(200, func() { io.ReadFull(r, msg) }); a != 0 {
			t.Errorf("client=%v: %.1f allocations per message read, want 0", client, a)
		}
	}
}
