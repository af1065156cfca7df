package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/internal/prototest"
	"github.com/portico-gw/portico/protocols/links"
	"github.com/portico-gw/portico/transports/rawtls"
)

// porticoBinary builds cmd/portico into a temporary directory, as
// cmd/portico's own tests do.
func porticoBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "portico")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/portico").CombinedOutput(); err != nil {
		t.Fatalf("building portico: %v\n%s", err, out)
	}
	return bin
}

// front is a TLS terminator in front of a worker.
type front struct {
	Port     int
	Cert     *x509.Certificate
	accepted atomic.Int64
}

// tlsFront terminates TLS for "localhost" in front of backend, as
// Cloudflare's edge does in front of a Worker. Cleanup closes the listener
// and every connection.
func tlsFront(t *testing.T, backend string) *front {
	t.Helper()
	f := new(front)
	cert := prototest.SelfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cert.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	nettest.Serve(t, ln, func(c net.Conn, track func(net.Conn) func()) {
		f.accepted.Add(1)
		b, err := net.DialTimeout("tcp", backend, 5*time.Second)
		if err != nil {
			return
		}
		untrack := track(b)
		defer func() { untrack(); b.Close() }()
		done := make(chan struct{})
		go func() { io.Copy(b, c); b.(*net.TCPConn).CloseWrite(); close(done) }()
		io.Copy(c, b)
		c.Close()
		b.Close()
		<-done
	})
	if f.Cert, err = x509.ParseCertificate(cert.TLS.Certificate[0]); err != nil {
		t.Fatal(err)
	}
	f.Port = ln.Addr().(*net.TCPAddr).Port
	return f
}

// TestLinksEdgeThroughWorker: the links `portico links -state DIR -edge
// localhost:PORT` prints for the embedded default's VLESS and VMess
// WebSocket inbounds, used as printed by Portico's client, reach the
// gateway through the worker in origin mode (behind a TLS front standing in
// for Cloudflare's) and move 16 MiB each way to an echo, checked with
// SHA-256. VLESS uses the defaults (the inbound's own path, ?ed=2048);
// VMess -edge-path and -edge-ed 0. The only field the test adds is pin=,
// because the TLS front's certificate is self-signed where Cloudflare's is
// trusted by its chain.
func TestLinksEdgeThroughWorker(t *testing.T) {
	workerdPath(t) // skip (or fail) before building anything
	bin := porticoBinary(t)
	stDir := t.TempDir()
	st, err := gateway.LoadOrCreateState(stDir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(st.DefaultConfig("127.0.0.1:0"), gateway.Options{Log: slog.New(slog.DiscardHandler), StateDir: stDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	pem, err := os.ReadFile(filepath.Join(stDir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, gport, _ := net.SplitHostPort(g.Addr().String())
	echo := nettest.Echo(t).String()

	tests := []struct {
		name     string
		flags    []string
		linkName string
		inbound  string // the gateway's route the worker forwards to
		wsPath   string // the worker's WS_PATH
		path     string // the link's path
		id       string
	}{
		{"vless", nil, "portico-vless-ws-edge", "vless-ws", "/" + st.RouteKey + "/vless-ws",
			"/" + st.RouteKey + "/vless-ws?ed=2048", st.UUID},
		{"vmess", []string{"-edge-path", "/edge-vmess", "-edge-ed", "0"}, "portico-vmess-ws-edge", "vmess-ws", "/edge-vmess",
			"/edge-vmess", st.UUID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origin := "https://localhost:" + gport + "/" + st.RouteKey + "/" + tt.inbound
			w := edgeWorker(t, map[string]string{"MODE": "origin", "ORIGIN": origin, "WS_PATH": tt.wsPath,
				"DECOY": "static", "DECOY_HTML": decoyHTML}, string(pem))
			fr := tlsFront(t, w.Addr)

			args := append([]string{"links", "-state", stDir, "-edge", "localhost:" + strconv.Itoa(fr.Port)}, tt.flags...)
			cmd := exec.Command(bin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("portico %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
			if n := strings.Count(stderr.String(), "\n"); n != 1 || !strings.Contains(stderr.String(), "skipped") {
				t.Errorf("stderr %q, want one note on the skipped inbounds", stderr.String())
			}
			var l links.Link
			for _, s := range strings.Fields(stdout.String()) {
				p, err := links.Parse(s)
				if err != nil {
					t.Fatalf("%s: %v", s, err)
				}
				if p.Name == tt.linkName {
					l = p
				}
			}
			if l.Name == "" {
				t.Fatalf("no %s link in\n%s", tt.linkName, stdout.String())
			}
			if l.Host != "localhost" || int(l.Port) != fr.Port || l.SNI != "localhost" || l.HostHeader != "localhost" ||
				l.Security != "tls" || l.Transport != "ws" || l.Path != tt.path || l.ID != tt.id || l.Pin != "" || l.Insecure {
				t.Fatalf("link %+v", l)
			}
			l.Pin = rawtls.Pin(fr.Cert)
			socks := startClient(t, l)
			const size = 16 << 20
			took := socksExchange(t, socks, echo, size)
			if fr.accepted.Load() == 0 {
				t.Fatal("the tunnel did not pass the TLS front")
			}
			t.Logf("%s: 16 MiB each way through TLS front, worker (origin mode) and gateway in %v", tt.name, took.Round(time.Millisecond))
		})
	}
}
