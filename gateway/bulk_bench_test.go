package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
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

// BenchmarkBulkProtocols moves the same bytes through a plain TLS relay
// (the floor any TLS tunnel pays) and through Portico's client and server
// with each protocol over raw TLS, alternating within each iteration, and
// reports each rate and its ratio to the floor (1.0 = as fast as the floor):
//
//	go test -run XX -bench BulkProtocols -benchtime 1x ./gateway
func BenchmarkBulkProtocols(b *testing.B) {
	target := sink(b).String()
	dst, _ := protocols.ParseAddr(target)
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
	ls, err := ServerLinks(st.DefaultConfig(g.Addr().String()), "127.0.0.1", g.Pin())
	if err != nil {
		b.Fatal(err)
	}
	clients := map[string]tunnel.Dialer{}
	var names []string
	for _, l := range ls {
		if l.Transport != "tcp" {
			continue
		}
		name := l.Protocol
		switch {
		case l.Version == 1:
			name = "vless-v1"
		case l.Protocol == "vmess":
			l.Cipher, name = "aes-128-gcm", "vmess-gcm"
		}
		cfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		outs, def, err := buildOutbounds(cfg.Outbounds)
		if err != nil {
			b.Fatal(err)
		}
		clients[name] = outs[def]
		names = append(names, name)
	}
	times := map[string]time.Duration{}
	b.SetBytes(int64(len(names)+1) * benchTotal)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		c, err := tls.Dial("tcp", relayAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		push(b, c)
		times["tls"] += time.Since(start)
		for _, name := range names {
			start := time.Now()
			c, err := clients[name].DialStream(context.Background(), dst)
			if err != nil {
				b.Fatal(err)
			}
			push(b, c)
			times[name] += time.Since(start)
		}
	}
	mbps := func(d time.Duration) float64 { return float64(benchTotal) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(times["tls"]), "tls-MB/s")
	for _, name := range names {
		b.ReportMetric(mbps(times[name]), name+"-MB/s")
		b.ReportMetric(times["tls"].Seconds()/times[name].Seconds(), name+"/tls")
	}
}

// BenchmarkBulkTransports moves the same bytes with VLESS over every
// transport of the embedded default and reports each as MB/s and as a ratio
// to VLESS over raw TLS measured in the same run:
//
//	go test -run XX -bench BulkTransports -benchtime 1x ./gateway
func BenchmarkBulkTransports(b *testing.B) {
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
		b.ReportMetric(float64(benchTotal)*float64(b.N)/times[tr].Seconds()/1e6, tr+"-MB/s")
		if tr != "tcp" {
			b.ReportMetric(times["tcp"].Seconds()/times[tr].Seconds(), tr+"/tls")
		}
	}
}
