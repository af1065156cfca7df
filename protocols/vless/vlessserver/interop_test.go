package vlessserver_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// interopSize is what each interop case moves each way.
const interopSize = 64 << 20

// TestInteropV2RayClient puts a real V2Ray (Debian's 4.34) in front of our
// server as a VLESS client: test -> dokodemo-door -> V2Ray VLESS outbound ->
// vlessserver -> relay -> echo, over plain TCP and over TLS (terminated by
// us with a self-signed certificate; V2Ray runs with allowInsecure; our
// server has v1 enabled too). It is
// skipped when v2ray is not installed, unless PORTICO_REQUIRE_PEERS=1.
func TestInteropV2RayClient(t *testing.T) {
	vlesstest.V2RayPath(t)
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			id := uuid.New()
			// Over TLS the server also speaks v1: V2Ray's v0 must not notice.
			srv, err := vlessserver.New(vlessserver.Options{Users: []vlessserver.User{{ID: id, Email: "v2ray@interop"}}, Inbound: "interop",
				V1: withTLS, Secure: withTLS})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			handler := new(vlesstest.RelayHandler)
			stream := map[string]any{"network": "tcp", "security": "none"}
			var cfg *tls.Config
			target := "127.0.0.1" // an IPv4 target over TCP ...
			if withTLS {
				cert := vlesstest.SelfSigned(t)
				cfg = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
				stream = map[string]any{"network": "tcp", "security": "tls",
					"tlsSettings": map[string]any{"serverName": "localhost", "allowInsecure": true}}
				target = "localhost" // ... and a domain target over TLS
			}
			errs := vlesstest.Serve(t, ln, cfg, srv, handler)
			echo := vlesstest.Echo(t)
			inPort := vlesstest.FreePort(t)
			config := map[string]any{
				"log": map[string]any{"loglevel": "info"},
				"inbounds": []any{map[string]any{
					"listen": "127.0.0.1", "port": inPort, "protocol": "dokodemo-door",
					"settings": map[string]any{"address": target, "port": echo.Port, "network": "tcp"},
				}},
				"outbounds": []any{map[string]any{
					"protocol": "vless",
					"settings": map[string]any{"vnext": []any{map[string]any{
						"address": "127.0.0.1", "port": ln.Addr().(*net.TCPAddr).Port,
						"users": []any{map[string]any{"id": id.String(), "encryption": "none", "level": 0}},
					}}},
					"streamSettings": stream,
				}},
			}
			inAddr := vlesstest.HostPort("127.0.0.1", inPort)
			v2 := vlesstest.StartV2Ray(t, config, inAddr)
			conn, err := net.Dial("tcp", inAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(raceflag.Deadline(40 * time.Second)))
			start := time.Now()
			if err := vlesstest.Exchange(conn, interopSize, 11); err != nil {
				t.Fatalf("%v\nServeConn: %v", err, drain(errs))
			}
			t.Logf("%d MiB each way in %v", interopSize>>20, time.Since(start).Round(time.Millisecond))
			reqs := handler.Requests()
			want := protocols.Addr{Domain: target, Port: echo.Port}
			if !withTLS {
				want = echo
			}
			if len(reqs) != 1 || reqs[0].User != "v2ray@interop" || reqs[0].Target != want || reqs[0].Network != protocols.NetworkTCP {
				t.Errorf("requests = %+v; want one from v2ray@interop to %v\nv2ray log:\n%s", reqs, want, v2.Log())
			}
		})
	}
}

func drain(errs <-chan error) string {
	out := ""
	for {
		select {
		case err := <-errs:
			out += fmt.Sprintf("\n  %v", err)
		default:
			return out
		}
	}
}
