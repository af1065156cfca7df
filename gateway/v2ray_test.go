package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
)

// TestV2RayOverWebSocket: Debian's v2ray 4.34 as a VLESS and a VMess client
// over WebSocket+TLS to the embedded default's WebSocket routes, with the
// path as configured and with Xray's "?ed=2048" (which v2ray 4.34 sends
// literally, with no early data), moving 16 MiB each way.
func TestV2RayOverWebSocket(t *testing.T) {
	v2ray := needPeer(t, "v2ray")
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
	host, port, _ := net.SplitHostPort(g.Addr().String())
	echo := nettest.Echo(t)

	for _, proto := range []string{"vless", "vmess"} {
		for _, suffix := range []string{"", "?ed=2048"} {
			t.Run(proto+suffix, func(t *testing.T) {
				user := map[string]any{"id": st.UUID, "encryption": "none"}
				if proto == "vmess" {
					user = map[string]any{"id": st.UUID, "alterId": 0, "security": "aes-128-gcm"}
				}
				in := freePort(t)
				cfg := map[string]any{
					"log": map[string]any{"loglevel": "warning"},
					"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": in, "protocol": "dokodemo-door",
						"settings": map[string]any{"address": "127.0.0.1", "port": echo.Port, "network": "tcp"}}},
					"outbounds": []any{map[string]any{"protocol": proto,
						"settings": map[string]any{"vnext": []any{map[string]any{"address": host, "port": atoiOr(port, 0), "users": []any{user}}}},
						"streamSettings": map[string]any{"network": "ws", "security": "tls",
							"tlsSettings": map[string]any{"serverName": "localhost", "allowInsecure": true},
							"wsSettings":  map[string]any{"path": "/" + st.RouteKey + "/" + proto + "-ws" + suffix}}}},
				}
				file := filepath.Join(t.TempDir(), "v2ray.json")
				b, _ := json.Marshal(cfg)
				os.WriteFile(file, b, 0o644)
				cmd := exec.Command(v2ray, "-config", file)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					cmd.Process.Kill()
					cmd.Wait()
					if t.Failed() {
						t.Logf("v2ray:\n%s", out.String())
					}
				}()
				addr := fmt.Sprintf("127.0.0.1:%d", in)
				var c net.Conn
				for deadline := time.Now().Add(15 * time.Second); ; {
					if c, err = net.Dial("tcp", addr); err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("v2ray never listened: %v", err)
					}
					time.Sleep(50 * time.Millisecond)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				payload := make([]byte, 16<<20)
				rand.Read(payload)
				go c.Write(payload)
				got := make([]byte, len(payload))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatalf("read back through v2ray and Portico: %v", err)
				}
				if sha256.Sum256(got) != sha256.Sum256(payload) {
					t.Fatal("echo differs")
				}
			})
		}
	}
}
