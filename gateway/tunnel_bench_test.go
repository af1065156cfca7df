package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// BenchmarkTunnelSetup opens one tunnel per iteration through Portico's
// client outbound and the embedded default server, over raw TLS and over
// WebSocket (with the links' early data), with a 1-byte echo, and closes it: the in-process cost of a new tunnel (both
// sides, the TLS handshake included), with its allocations.
//
//	go test -run XX -bench TunnelSetup -benchmem ./gateway
func BenchmarkTunnelSetup(b *testing.B) {
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
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	dst, _ := protocols.ParseAddr(ln.Addr().String())
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
	for _, l := range ls {
		if (l.Transport != "tcp" && l.Transport != "ws") || l.Version == 1 || l.Protocol == "anytls" {
			continue
		}
		if l.Protocol == "vmess" {
			l.Cipher = "aes-128-gcm"
		}
		cfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		outs, def, err := buildOutbounds(cfg.Outbounds)
		if err != nil {
			b.Fatal(err)
		}
		out := outs[def]
		b.Run(l.Protocol+"/"+l.Transport, func(b *testing.B) { benchTunnels(b, out, dst) })
	}
}

func benchTunnels(b *testing.B, out tunnel.Dialer, dst protocols.Addr) {
	one := []byte{'x'}
	b.ReportAllocs()
	for b.Loop() {
		c, err := out.DialStream(context.Background(), dst)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
