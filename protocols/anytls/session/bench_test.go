package session

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
)

// BenchmarkStreams measures aggregate upload throughput of n concurrent
// streams on one session over TLS on loopback (the server reads and
// drops), in 32 KiB writes, as a relay makes them.
func BenchmarkStreams(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) { benchStreams(b, n) })
	}
}

func benchStreams(b *testing.B, n int) {
	cert := anytlstest.SelfSigned(b)
	cc, sc := tcpPair(b)
	tc, ts := tls.Client(cc, cert.ClientTLS()), tls.Server(sc, cert.ServerTLS())
	var received atomic.Int64
	done := make(chan struct{})
	var want int64
	var once sync.Once
	accept := func(st *Stream) {
		if _, err := st.ReadTarget(); err != nil {
			st.Finish(err)
			return
		}
		st.ReportDial(nil)
		buf := make([]byte, 32<<10)
		for {
			k, err := st.Read(buf)
			if received.Add(int64(k)) == atomic.LoadInt64(&want) {
				once.Do(func() { close(done) })
			}
			if err != nil {
				break
			}
		}
		st.Finish(nil)
	}
	s := NewServer(ts, nil, ServerConfig{Accept: accept, MaxStreams: 256})
	c := NewClient(tc, ClientConfig{Padding: noShaping(b)})
	serr, cerr := make(chan error, 1), make(chan error, 1)
	go func() { serr <- s.Run() }()
	go func() { cerr <- c.Run() }()
	defer func() {
		c.Close()
		s.Close()
		<-serr
		<-cerr
	}()
	streams := make([]*Stream, n)
	for i := range streams {
		st, err := c.OpenStream(context.Background(), target)
		if err != nil {
			b.Fatal(err)
		}
		streams[i] = st
	}
	const chunk = 32 << 10
	atomic.StoreInt64(&want, int64(b.N)*chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, st := range streams {
		count := b.N / n
		if i < b.N%n {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for range count {
				if _, err := st.Write(buf); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	<-done
	b.StopTimer()
	for _, st := range streams {
		st.Close()
	}
}

// BenchmarkStreamWrite is one stream's write path (frame, shaping check,
// lock) to a connection that drops everything: it should not allocate.
func BenchmarkStreamWrite(b *testing.B) {
	cc, sc := tcpPair(b)
	go io.Copy(io.Discard, sc)
	c := NewClient(discardConn{cc}, ClientConfig{Padding: noShaping(b)})
	defer c.Close()
	defer sc.Close()
	st, err := c.OpenStream(context.Background(), target)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 16<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// discardConn drops writes.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
