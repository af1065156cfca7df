package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/transports/rawtls"
)

// sink accepts connections and discards what they send; each connection is
// closed when its sender half-closes, which tells the sender all arrived.
func sink(b *testing.B) net.Addr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln.Addr()
}

// tlsRelay is the floor any TLS tunnel pays: TLS in, the same relay out to
// the target, no protocol at all.
func tlsRelay(b *testing.B, target string) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{testCert(b)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				t, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				Relay(context.Background(), c, t, RelayOptions{Idle: time.Minute})
			}()
		}
	}()
	return ln.Addr().String()
}

// push sends n bytes on c in 32 KiB writes, half-closes, and waits for the
// far end to close (so every byte reached the sink).
func push(b *testing.B, c net.Conn, n int64) {
	buf := make([]byte, 32<<10)
	for sent := int64(0); sent < n; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, c)
	c.Close()
}

// BenchmarkBulkVLESSvsTLS moves the same bytes through a plain TLS relay
// and through Portico (VLESS client -> raw TLS -> front door -> router ->
// relay), alternating within each iteration, and reports both rates and
// their ratio (vless/tls; 1.0 = as fast as the floor). Run with
// -benchtime=1x for 1 GiB: go test -run XX -bench BulkVLESS -benchtime 1x ./gateway
func BenchmarkBulkVLESSvsTLS(b *testing.B) {
	const total = 1 << 30
	target := sink(b).String()
	relayAddr := tlsRelay(b, target)

	st, err := LoadOrCreateState(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	g, err := New(st.DefaultConfig("127.0.0.1:0"), Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Shutdown(context.Background()) })
	clientTLS, _ := rawtls.ClientConfig("", g.Pin(), false, nil)
	client, _ := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(st.UUID),
		Carrier: &rawtls.Dialer{Address: g.Addr().String(), TLS: clientTLS}})
	dst, _ := protocols.ParseAddr(target)

	var tlsTime, vlessTime time.Duration
	b.SetBytes(2 * total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		c, err := tls.Dial("tcp", relayAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		push(b, c, total)
		tlsTime += time.Since(start)

		start = time.Now()
		v, err := client.DialStream(context.Background(), dst)
		if err != nil {
			b.Fatal(err)
		}
		push(b, v, total)
		vlessTime += time.Since(start)
	}
	mbps := func(d time.Duration) float64 { return float64(total) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tlsTime), "tls-MB/s")
	b.ReportMetric(mbps(vlessTime), "vless-MB/s")
	b.ReportMetric(tlsTime.Seconds()/vlessTime.Seconds(), "vless/tls")
}
