package ws

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// interopSize is what each interop case moves each way.
const interopSize = 16 << 20

// TestInteropV2RayClient puts Debian's V2Ray 4.34 in front of our
// WebSocket server as a VLESS-over-WebSocket-over-TLS client:
// test -> dokodemo-door -> V2Ray VLESS outbound (ws, tls) -> ws.Handler ->
// vlessserver -> relay -> echo. V2Ray 4.34 has no early data: with the path
// "/ws?ed=2048" it requests that path literally, which must still match.
func TestInteropV2RayClient(t *testing.T) {
	bin := v2rayPath(t)
	for _, path := range []string{"/ws", "/ws?ed=2048"} {
		t.Run(path, func(t *testing.T) {
			id := uuid.New()
			vs, err := vlessserver.New(vlessserver.Options{Users: []vlessserver.User{{ID: id, Email: "v2ray@ws"}}, Transport: "ws"})
			if err != nil {
				t.Fatal(err)
			}
			relay := new(relayHandler)
			var uris sync.Map
			h := &Handler{Path: "/ws", Next: new(site), Serve: func(conn net.Conn, r *http.Request) {
				uris.Store(r.URL.RequestURI(), true)
				if err := vs.ServeConn(context.Background(), conn, relay); err != nil && !errors.Is(err, io.EOF) {
					t.Logf("ServeConn: %v", err)
				}
			}}
			srv, _ := server(t, h, true)
			echoAddr := nettest.Echo(t)
			inPort := freePort(t)
			config := map[string]any{
				"log": map[string]any{"loglevel": "warning"},
				"inbounds": []any{map[string]any{
					"listen": "127.0.0.1", "port": inPort, "protocol": "dokodemo-door",
					"settings": map[string]any{"address": "127.0.0.1", "port": echoAddr.Port, "network": "tcp"},
				}},
				"outbounds": []any{map[string]any{
					"protocol": "vless",
					"settings": map[string]any{"vnext": []any{map[string]any{
						"address": "127.0.0.1", "port": srv.Listener.Addr().(*net.TCPAddr).Port,
						"users": []any{map[string]any{"id": id.String(), "encryption": "none"}},
					}}},
					"streamSettings": map[string]any{
						"network": "ws", "security": "tls",
						"tlsSettings": map[string]any{"serverName": "localhost", "allowInsecure": true},
						"wsSettings":  map[string]any{"path": path},
					},
				}},
			}
			inAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(inPort))
			startV2Ray(t, bin, config, inAddr)
			conn, err := net.Dial("tcp", inAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			start := time.Now()
			if err := exchange(conn, interopSize, 21); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d MiB each way through V2Ray in %v", interopSize>>20, time.Since(start).Round(time.Millisecond))
			if _, ok := uris.Load(path); !ok {
				var seen []any
				uris.Range(func(k, _ any) bool { seen = append(seen, k); return true })
				t.Errorf("V2Ray requested %v, want %q", seen, path)
			}
			reqs := relay.requests()
			want := protocols.AddrFromAddrPort(echoAddr.AddrPort())
			if len(reqs) != 1 || reqs[0].User != "v2ray@ws" || reqs[0].Target != want || reqs[0].Transport != "ws" {
				t.Errorf("requests = %+v, want one from v2ray@ws to %v", reqs, want)
			}
		})
	}
}

// TestInteropV2RayServer is the other way round: our Dialer (under
// vlessclient) against V2Ray 4.34's VLESS-over-WebSocket-over-TLS inbound,
// which relays to the echo server. V2Ray ignores early data and does not
// echo the header, so with "?ed=2048" our client must notice and resend the
// first bytes as a message.
func TestInteropV2RayServer(t *testing.T) {
	bin := v2rayPath(t)
	certFile, keyFile := writeCert(t)
	for _, query := range []string{"", "?ed=2048"} {
		t.Run("path /ws"+query, func(t *testing.T) {
			id := uuid.New()
			port := freePort(t)
			config := map[string]any{
				"log": map[string]any{"loglevel": "warning"},
				"inbounds": []any{map[string]any{
					"listen": "127.0.0.1", "port": port, "protocol": "vless",
					"settings": map[string]any{"decryption": "none",
						"clients": []any{map[string]any{"id": id.String()}}},
					"streamSettings": map[string]any{
						"network": "ws", "security": "tls",
						"tlsSettings": map[string]any{"certificates": []any{
							map[string]any{"certificateFile": certFile, "keyFile": keyFile}}},
						"wsSettings": map[string]any{"path": "/ws"},
					},
				}},
				"outbounds": []any{map[string]any{"protocol": "freedom"}},
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			startV2Ray(t, bin, config, addr)
			client, err := vlessclient.New(vlessclient.Options{ID: id, Carrier: &Dialer{
				URL: "wss://" + addr + "/ws" + query,
				TLS: &tls.Config{ServerName: "localhost", InsecureSkipVerify: true},
			}})
			if err != nil {
				t.Fatal(err)
			}
			echoAddr := nettest.Echo(t)
			conn, err := client.DialStream(context.Background(), protocols.AddrFromAddrPort(echoAddr.AddrPort()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			start := time.Now()
			if err := exchange(conn, interopSize, 22); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d MiB each way through V2Ray in %v", interopSize>>20, time.Since(start).Round(time.Millisecond))
		})
	}
}

// writeCert writes a fresh self-signed certificate for localhost and
// returns the PEM files' paths.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

// relayHandler is a tunnel.Handler that relays to the request's target.
type relayHandler struct {
	mu   sync.Mutex
	reqs []tunnel.Request
}

func (h *relayHandler) requests() []tunnel.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.Request(nil), h.reqs...)
}

func (h *relayHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.mu.Unlock()
	defer conn.Close()
	up, err := new(net.Dialer).DialContext(ctx, "tcp", req.Target.String())
	if err != nil {
		return err
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(up, conn)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(conn, up)
	conn.Close() // WebSocket cannot half-close: end the tunnel
	<-done
	return nil
}

func (h *relayHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	pc.Close()
	return errors.New("relay: packets not supported")
}

// v2rayPath finds v2ray, skipping the test when it is missing unless
// PORTICO_REQUIRE_PEERS=1.
func v2rayPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("v2ray")
	if err != nil {
		msg := "v2ray not found in PATH (Debian: apt-get install -y v2ray); WebSocket interop with a real peer not tested"
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatal(msg + ", and PORTICO_REQUIRE_PEERS=1")
		}
		t.Skip(msg + "; set PORTICO_REQUIRE_PEERS=1 to fail instead")
	}
	return path
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startV2Ray runs v2ray with config until the test ends (killing it by its
// PID) and waits until addr accepts connections.
func startV2Ray(t *testing.T, bin string, config any, addr string) {
	t.Helper()
	js, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "v2ray.json")
	if err := os.WriteFile(file, js, 0o600); err != nil {
		t.Fatal(err)
	}
	out := new(lockedBuffer)
	cmd := exec.Command(bin, "-config", file)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("v2ray config:\n%s\nv2ray output:\n%s", js, out)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("v2ray exited: %v\n%s", cmd.ProcessState, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2ray does not listen on %s after 15s\n%s", addr, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
