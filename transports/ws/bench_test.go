package ws

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"
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
	return s, c.(*conn), s.ws.NetConn(), raw
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

// BenchmarkServerWrite: one binary message per Write from the server
// (gorilla's unmasked fast path: no allocation).
func BenchmarkServerWrite(b *testing.B) {
	s, _, _, cliRaw := benchPair(b)
	benchWrite(b, s, cliRaw)
}

// BenchmarkClientWrite: client messages are masked in gorilla's buffer,
// through a NextWriter (one small allocation per message).
func BenchmarkClientWrite(b *testing.B) {
	_, c, srvRaw, _ := benchPair(b)
	benchWrite(b, c, srvRaw)
}

// BenchmarkServerRead: reading client messages (gorilla allocates a
// message reader per message).
func BenchmarkServerRead(b *testing.B) {
	s, _, _, cliRaw := benchPair(b)
	benchRead(b, s, cliRaw, true)
}

func BenchmarkClientRead(b *testing.B) {
	_, c, srvRaw, _ := benchPair(b)
	benchRead(b, c, srvRaw, false)
}

func TestServerWriteAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	res := testing.Benchmark(BenchmarkServerWrite)
	if a := res.AllocsPerOp(); a != 0 {
		t.Errorf("server Write: %d allocations per message, want 0", a)
	}
}
