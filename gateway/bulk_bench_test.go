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

// benchTotal is what each bulk transfer moves: 1 GiB.
const benchTotal = 1 << 30

// sink accepts connections, reads exactly benchTotal bytes from each and
// answers one byte: the sender knows every byte arrived without needing a
// half-close, which WebSocket and AnyTLS cannot carry.
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
			go func() {
				defer c.Close()
				if n, _ := io.CopyN(io.Discard, c, benchTotal); n == benchTotal {
					c.Write([]byte{1})
				}
			}()
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

// push sends benchTotal bytes on c in 32 KiB writes and waits for the
// sink's byte that says all arrived.
func push(b *testing.B, c net.Conn) {
	buf := make([]byte, 32<<10)
	for sent := int64(0); sent < benchTotal; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		b.Fatalf("the sink did not confirm: %v", err)
	}
	c.Close()
}

// BenchmarkBulkVLESSvsTLS moves the same bytes through a plain TLS relay
// and through Portico (VLESS client -> raw TLS -> front door -> router ->
// relay), alternating within each iteration, and reports both rates and
// their ratio (vless/tls; 1.0 = as fast as the floor). Run with
// -benchtime=1x for 1 GiB: go test -run XX -bench BulkVLESS -benchtime 1x ./gateway
func BenchmarkBulkVLESSvsTLS(b *testing.B) {
	const total = benchTotal
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
		push(b, c)
		tlsTime += time.Since(start)

		start = time.Now()
		v, err := client.DialStream(context.Background(), dst)
		if err != nil {
			b.Fatal(err)
		}
		push(b, v)
		vlessTime += time.Since(start)
	}
	mbps := func(d time.Duration) float64 { return float64(total) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tlsTime), "tls-MB/s")
	b.ReportMetric(mbps(vlessTime), "vless-MB/s")
	b.ReportMetric(tlsTime.Seconds()/vlessTime.Seconds(), "vless/tls")
}

// BenchmarkBulkTransports moves the same bytes with VLESS over every
// transport of the embedded default and reports each as MB/s and as a ratio
// to VLESS over raw TLS measured in the same run:
//
//	go test -run XX -bench BulkTransports -benchtime 1x ./gateway
func BenchmarkBulkTransports(b *testing.B) {
	const total = benchTotal
	target := sink(b).String()
	dst, _ := protocols.ParseAddr(target)
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
	ls, err := ServerLinks(st.DefaultConfig(g.Addr().String()), "127.0.0.1", g.Pin())
	if err != nil {
		b.Fatal(err)
	}
	times := map[string]time.Duration{}
	var order []string
	for i := 0; i < b.N; i++ {
		for _, l := range ls {
			if l.Protocol != "vless" || l.Version != 0 {
				continue
			}
			cfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			outs, def, err := buildOutbounds(cfg.Outbounds)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			c, err := outs[def].DialStream(context.Background(), dst)
			if err != nil {
				b.Fatal(err)
			}
			push(b, c)
			if _, seen := times[l.Transport]; !seen {
				order = append(order, l.Transport)
			}
			times[l.Transport] += time.Since(start)
		}
	}
	for _, tr := range order {
		b.ReportMetric(float64(total)*float64(b.N)/times[tr].Seconds()/1e6, tr+"-MB/s")
		if tr != "tcp" {
			b.ReportMetric(times["tcp"].Seconds()/times[tr].Seconds(), tr+"/tls")
		}
	}
}
