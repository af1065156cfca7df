package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/transports/grpc"
	"github.com/portico-gw/portico/transports/httpupgrade"
	"github.com/portico-gw/portico/transports/ws"
)

// needPeer finds a peer program, skipping the test when it is missing unless
// PORTICO_REQUIRE_PEERS=1 (as make test sets), where a missing peer fails.
func needPeer(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is not installed and PORTICO_REQUIRE_PEERS=1: run make test (it installs it) or apt-get install %s", name, name)
		}
		t.Skipf("%s is not installed (apt-get install %s; make test does it)", name, name)
	}
	return p
}

// TestBehindCaddy runs Debian's Caddy with Caddyfile.example (names, ports
// and paths filled in): Caddy terminates TLS and serves its own site, and
// passes the WebSocket path and the gRPC service (h2c) to Portico, which runs
// without TLS on loopback. A VLESS client reaches an echo target through
// Caddy over both, and Portico logs the client's real address from Caddy's
// X-Forwarded-For (the client dials from 127.0.0.2, Caddy from 127.0.0.1).
func TestBehindCaddy(t *testing.T) {
	caddy := needPeer(t, "caddy")
	id := uuid.NewString()
	wsPath, service := "/t-"+uuid.NewString()[:8], "g"+uuid.NewString()[:8]
	upPath := "/u-" + uuid.NewString()[:8]

	// Portico behind the proxy.
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`{
		"server": {"listen": "127.0.0.1:0", "tls": {"source": "none"}, "trustedProxies": ["127.0.0.1"]},
		"inbounds": [
			{"tag": "ws", "protocol": "vless", "settings": {"clients": [{"id": %q, "email": "alice"}]},
			 "streamSettings": {"network": "ws", "wsSettings": {"path": %q}}},
			{"tag": "httpupgrade", "protocol": "vless", "settings": {"clients": [{"id": %q, "email": "alice"}]},
			 "streamSettings": {"network": "httpupgrade", "httpupgradeSettings": {"path": %q}}},
			{"tag": "grpc", "protocol": "vless", "settings": {"clients": [{"id": %q, "email": "alice"}]},
			 "streamSettings": {"network": "grpc", "grpcSettings": {"serviceName": %q}}}]
	}`, id, wsPath, id, upPath, id, service)))
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	g, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())

	// Caddy in front, from the example file.
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	os.Mkdir(site, 0o755)
	os.WriteFile(filepath.Join(site, "index.html"), []byte("caddy's own site"), 0o644)
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	httpsPort, httpPort := freePort(t), freePort(t)
	caddyfile := fmt.Sprintf("{\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n\thttp_port %d\n\thttps_port %d\n\tstorage file_system %s\n}\n", httpPort, httpsPort, filepath.Join(dir, "data")) +
		strings.NewReplacer(
			"example.com {", fmt.Sprintf("localhost:%d {", httpsPort),
			"/CHANGE-ME-ws", wsPath,
			"/CHANGE-ME-httpupgrade", upPath,
			"CHANGE-ME-grpc", service,
			"127.0.0.1:8080", g.Addr().String(),
			"/var/www/html", site,
		).Replace(string(example))
	file := filepath.Join(dir, "Caddyfile")
	os.WriteFile(file, []byte(caddyfile), 0o644)
	cmd := exec.Command(caddy, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	var caddyLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &caddyLog, &caddyLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("caddy log:\n%s", caddyLog.String())
		}
	}()
	// Caddy routes by Host, so clients name "localhost" but every dial goes
	// to 127.0.0.1.
	caddyIP := fmt.Sprintf("127.0.0.1:%d", httpsPort)
	caddyAddr := fmt.Sprintf("localhost:%d", httpsPort)
	insecure := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true} // Caddy's own internal CA
	waitForHTTPS(t, caddyIP, insecure)

	// Caddy's site is Caddy's.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, caddyIP)
		}}}
	resp, err := hc.Get("https://" + caddyAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "caddy's own site" {
		t.Fatalf("Caddy's site answered %d %q", resp.StatusCode, body)
	}

	fromOtherIP := func(ctx context.Context, network, _ string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		return d.DialContext(ctx, network, caddyIP)
	}
	echo := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	carriers := map[string]tunnel.ConnDialer{
		"ws":          &ws.Dialer{URL: "wss://" + caddyAddr + wsPath + "?ed=2048", TLS: insecure, NetDial: fromOtherIP},
		"httpupgrade": &httpupgrade.Dialer{URL: "https://" + caddyAddr + upPath, TLS: insecure, NetDial: fromOtherIP},
		"grpc":        &grpc.Dialer{Address: caddyAddr, ServiceName: service, TLS: insecure, NetDial: fromOtherIP},
	}
	for name, carrier := range carriers {
		t.Run(name, func(t *testing.T) {
			client, err := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(id), Carrier: carrier})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := client.DialStream(context.Background(), echo)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			payload := make([]byte, 4<<20)
			rand.Read(payload)
			go conn.Write(payload)
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(conn, got); err != nil {
				t.Fatalf("through Caddy over %s: %v", name, err)
			}
			if sha256.Sum256(got) != sha256.Sum256(payload) {
				t.Fatal("echo differs")
			}
			conn.Close()
			want := "inbound=" + name + " transport=" + name + " network=tcp target=" + echo.String() + " source=127.0.0.2:0"
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), want) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), want) {
				t.Fatalf("Portico did not log the real client address (%s):\n%s", want, logs)
			}
		})
	}
}

func waitForHTTPS(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered TLS: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
