package vlessclient_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
)

// interopSize is what each interop case moves each way.
const interopSize = 64 << 20

// TestInteropV2RayServer dials a real V2Ray (Debian's 4.34) VLESS server
// with our client: vlessclient -> V2Ray VLESS inbound -> freedom -> echo,
// over plain TCP and over TLS (V2Ray serving certificate files the test
// writes). It is skipped when v2ray is not installed, unless
// PORTICO_REQUIRE_PEERS=1.
func TestInteropV2RayServer(t *testing.T) {
	vlesstest.V2RayPath(t)
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			id := uuid.New()
			port := vlesstest.FreePort(t)
			addr := vlesstest.HostPort("127.0.0.1", port)
			carrier := vlesstest.Dialer{Addr: addr}
			stream := map[string]any{"network": "tcp", "security": "none"}
			if withTLS {
				cert := vlesstest.SelfSigned(t)
				dir := t.TempDir()
				certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
				if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
					t.Fatal(err)
				}
				stream = map[string]any{"network": "tcp", "security": "tls", "tlsSettings": map[string]any{
					"certificates": []any{map[string]any{"certificateFile": certFile, "keyFile": keyFile}},
				}}
				carrier.TLS = &tls.Config{RootCAs: cert.Pool, ServerName: "localhost"}
			}
			config := map[string]any{
				"log": map[string]any{"loglevel": "info"},
				"inbounds": []any{map[string]any{
					"listen": "127.0.0.1", "port": port, "protocol": "vless",
					"settings": map[string]any{
						"clients":    []any{map[string]any{"id": id.String(), "email": "portico@interop", "level": 0}},
						"decryption": "none",
					},
					"streamSettings": stream,
				}},
				"outbounds": []any{map[string]any{"protocol": "freedom"}},
			}
			v2 := vlesstest.StartV2Ray(t, config, addr)
			echo := vlesstest.Echo(t)
			c, err := vlessclient.New(vlessclient.Options{ID: id, Carrier: carrier})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := c.DialStream(ctx, echo)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(raceflag.Deadline(40 * time.Second)))
			start := time.Now()
			if err := vlesstest.Exchange(conn, interopSize, 12); err != nil {
				t.Fatalf("%v\nv2ray log:\n%s", err, v2.Log())
			}
			t.Logf("%d MiB each way in %v", interopSize>>20, time.Since(start).Round(time.Millisecond))
			// V2Ray logs the access and, at info level, how many bytes its
			// first read got: more than the header means the first payload
			// came in the same carrier write (the same TLS record).
			log := v2.Log()
			if !strings.Contains(log, "email: portico@interop") {
				t.Errorf("v2ray did not log an accepted tunnel for portico@interop:\n%s", log)
			}
			if m := firstLen.FindAllStringSubmatch(log, -1); m != nil {
				best := 0
				for _, x := range m {
					best = max(best, atoi(x[1]))
				}
				if best <= 26 { // version+id+addons+command+port+atyp+IPv4
					t.Errorf("v2ray's first read was at most %d bytes: the request header went alone\n%s", best, log)
				}
			}
		})
	}
}

var firstLen = regexp.MustCompile(`firstLen = (\d+)`)

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
