package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/pebbletest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestGatewayObtainsCertificateFromPebble: the whole gateway, configured for
// ACME, gets its certificate from a real ACME CA that validates through the
// gateway's own listeners, and then serves it.
func TestGatewayObtainsCertificateFromPebble(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			const domain = "portico.test"
			var (
				g                 *Gateway
				ca                pebbletest.CA
				tlsPort, httpPort int
			)
			// Free ports are picked before Pebble must know them; another
			// test may take one in between, so a clash is retried.
			for attempt := 0; ; attempt++ {
				tlsPort, httpPort = freePort(t), freePort(t)
				dns := pebbletest.StartDNS(t, domain, nil)
				ca = pebbletest.Start(t, httpPort, tlsPort, dns, io.Discard)
				dir := t.TempDir()
				root := filepath.Join(dir, "pebble-api.pem")
				os.WriteFile(root, ca.APIRoot, 0o644)

				cfg, err := ParseConfig([]byte(fmt.Sprintf(`{
					"server": {"listen": "127.0.0.1:%d", "httpListen": "127.0.0.1:%d",
						"tls": {"source": "acme", "acme": {"domains": [%q], "ca": %q, "caRoot": %q,
							"storage": %q, "challenges": [%q]}}},
					"inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": %q}]}}]
				}`, tlsPort, httpPort, domain, ca.Directory, root, filepath.Join(dir, "acme"), challenge, goodUUID)))
				if err != nil {
					t.Fatal(err)
				}
				if g, err = New(cfg, Options{StateDir: dir, Log: slog.New(slog.DiscardHandler)}); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				err = g.Start(ctx)
				cancel()
				if err == nil {
					break
				}
				if !strings.Contains(err.Error(), "already in use") || attempt == 4 {
					t.Fatal(err)
				}
			}
			defer func() {
				sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
				defer c()
				g.Shutdown(sctx)
			}()

			// A client that trusts only Pebble's root verifies the served certificate.
			client := &http.Client{Transport: &http.Transport{
				TLSClientConfig: &tls.Config{ServerName: domain, RootCAs: ca.Roots},
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, g.Addr().String())
				}}}
			resp, err := client.Get("https://" + domain + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "Northwind") {
				t.Fatalf("GET / over the ACME certificate = %d %.80q", resp.StatusCode, body)
			}
			if resp.TLS.PeerCertificates[0].Issuer.CommonName == "" || resp.TLS.PeerCertificates[0].DNSNames[0] != domain {
				t.Fatalf("served certificate %v", resp.TLS.PeerCertificates[0].DNSNames)
			}

			// The plain-HTTP port redirects everything else to https.
			noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err = noFollow.Get(fmt.Sprintf("http://127.0.0.1:%d/notes/?a=1", httpPort))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := fmt.Sprintf("https://127.0.0.1:%d/notes/?a=1", tlsPort); resp.StatusCode != 301 || resp.Header.Get("Location") != want {
				t.Fatalf("plain HTTP answered %d Location %q, want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
			}
		})
	}
}
