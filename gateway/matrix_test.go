package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
)

// TestEveryProtocolOverEveryTransport: the embedded default serves VLESS
// (v0 and v1), VMess and AnyTLS over raw TLS, WebSocket, HTTP upgrade, gRPC
// and QUIC; a client built from each share link moves checksummed data both
// ways, on several tunnels at once.
func TestEveryProtocolOverEveryTransport(t *testing.T) {
	st, err := LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(st.DefaultConfig("127.0.0.1:0"), Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	srvCfg := st.DefaultConfig(g.Addr().String())
	ls, err := ServerLinks(srvCfg, "127.0.0.1", g.Pin())
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 20 {
		t.Fatalf("%d links, want 20 (VLESS v0 and v1, VMess, AnyTLS) x 5 transports", len(ls))
	}
	echo := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	for _, l := range ls {
		t.Run(l.Name, func(t *testing.T) {
			cfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			outs, def, err := buildOutbounds(cfg.Outbounds)
			if err != nil {
				t.Fatal(err)
			}
			client := outs[def]
			defer func() {
				if c, ok := client.(interface{ Close() error }); ok {
					c.Close()
				}
			}()
			var wg sync.WaitGroup
			for i := 0; i < 3; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					conn, err := client.DialStream(ctx, echo)
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(30 * time.Second))
					payload := make([]byte, 2<<20)
					rand.Read(payload)
					// No half-close: AnyTLS has none (its FIN ends both ways).
					go func() {
						if _, err := conn.Write(payload); err != nil {
							t.Errorf("write: %v", err)
						}
					}()
					got := make([]byte, len(payload))
					if _, err := io.ReadFull(conn, got); err != nil {
						t.Errorf("read back: %v", err)
						return
					}
					if sha256.Sum256(got) != sha256.Sum256(payload) {
						t.Error("echo differs")
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestRoutesLeaveTheSiteAlone: with every transport route mounted, the site
// still answers everything else, and a WebSocket upgrade to a wrong path
// gets the site's own 404 page, not a WebSocket error.
func TestRoutesLeaveTheSiteAlone(t *testing.T) {
	g, _, _ := startDefault(t, nil)
	c := dialTLS(t, g.Addr().String(), "http/1.1")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /some/where HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 404 || !strings.Contains(string(body), "Page not found") {
		t.Fatalf("upgrade to a wrong path: %d %.100q", resp.StatusCode, body)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err = hc.Get("https://" + g.Addr().String() + "/about.html")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Two friends") || !strings.HasPrefix(resp.Header.Get("Alt-Svc"), `h3=":`) {
		t.Fatalf("GET /about.html: %d Alt-Svc %q", resp.StatusCode, resp.Header.Get("Alt-Svc"))
	}
}
