package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/links"
	"github.com/portico-gw/portico/protocols/socks"
)

var porticoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portico-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	porticoBin = filepath.Join(dir, "portico")
	build := exec.Command("go", "build", "-o", porticoBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building portico:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running portico process whose output the test reads.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	lines  chan string
	done   chan error
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(porticoBin, args...), args)
}

// startIn starts portico in network namespace ns (`ip netns exec` execs
// it: the PID is portico's).
func startIn(t *testing.T, ns string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command("ip", append([]string{"netns", "exec", ns, porticoBin}, args...)...), args)
}

func startCmd(t *testing.T, cmd *exec.Cmd, args []string) *proc {
	t.Helper()
	p := &proc{cmd: cmd, lines: make(chan string, 100), done: make(chan error, 1)}
	out, _ := p.cmd.StdoutPipe()
	errp, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	read := func(r io.Reader, buf *bytes.Buffer) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			buf.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}
	wg.Add(2)
	go read(out, &p.stdout)
	go read(errp, &p.stderr)
	go func() { wg.Wait(); p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("portico %v\nstdout:\n%s\nstderr:\n%s", args, p.out(), p.errOut())
		}
	})
	return p
}

func (p *proc) out() string    { p.mu.Lock(); defer p.mu.Unlock(); return p.stdout.String() }
func (p *proc) errOut() string { p.mu.Lock(); defer p.mu.Unlock(); return p.stderr.String() }

// waitLine returns the first submatch of re in a line of output.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case err := <-p.done:
			p.done <- err
			t.Fatalf("portico exited (%v) before printing %v", err, re)
		case <-deadline:
			t.Fatalf("portico did not print %v", re)
		}
	}
}

var (
	servingRe = regexp.MustCompile(`serving https://([^/]+)/`)
	clientRe  = regexp.MustCompile(`portico client '([^']+)'`)
	localRe   = regexp.MustCompile(`local proxy.* listen=(\S+)`)
)

// TestEmbeddedDefault is the newcomer's path: `portico run`, then the
// printed `portico client` command, then traffic through the local proxy.
func TestEmbeddedDefault(t *testing.T) {
	state := t.TempDir()
	// A short drain: a QUIC client killed by a subtest leaves its tunnel
	// open until QUIC notices (no FIN over UDP), and the drain waits for it.
	srv := start(t, "run", "-state", state, "-listen", "127.0.0.1:0", "-drain", "2s")
	addr := srv.waitLine(t, servingRe)
	link := srv.waitLine(t, clientRe)

	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	pin := u.Query().Get("pin")
	if len(pin) != 64 {
		t.Fatalf("link %q has no certificate pin", link)
	}

	t.Run("decoy site over a pinned TLS connection", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: pinnedTLS(pin)}}
		resp, err := client.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<title>Northwind Field Notes</title>") {
			t.Fatalf("GET / = %d\n%s", resp.StatusCode, body)
		}
	})

	t.Run("random bytes get exactly the decoy's answer", func(t *testing.T) {
		probe := make([]byte, 1024)
		rand.Read(probe)
		probe[700] = '\n' // so the site answers rather than waits for a line end
		got := sendAndDrain(t, func() (net.Conn, error) {
			return tls.Dial("tcp", addr, pinnedTLS(pin))
		}, probe)
		want := sendAndDrain(t, directDecoy(t), probe)
		if !bytes.Equal(got, want) {
			t.Fatalf("gateway answered\n%q\nthe decoy alone answers\n%q", got, want)
		}
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
			t.Fatalf("answer is not the site's 400: %q", got)
		}
	})

	// socksEcho opens a SOCKS5 tunnel to an echo server through proxy and
	// checks a short round trip; it returns the SOCKS error, if any.
	socksEcho := func(t *testing.T, proxy string) error {
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		dst := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
		if err := socks.Dial(context.Background(), c, dst, "", ""); err != nil {
			return err
		}
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
		return nil
	}

	t.Run("links -state prints the same links", func(t *testing.T) {
		out, err := exec.Command(porticoBin, "links", "-state", state).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var printed []string
		for _, l := range strings.Split(srv.out(), "\n") {
			if strings.HasPrefix(l, "  ") && strings.Contains(l, "://") && !strings.Contains(l, "portico client") {
				printed = append(printed, strings.TrimSpace(l))
			}
		}
		got := strings.Fields(string(out))
		if len(got) != 20 || len(printed) != 4 || got[0] != link {
			t.Fatalf("links printed %d links (want 3 protocols x 5 transports, VLESS twice):\n%s\nrun printed %d:\n%s", len(got), out, len(printed), strings.Join(printed, "\n"))
		}
		for _, p := range printed {
			if !strings.Contains(string(out), p) {
				t.Fatalf("run printed %s, links did not", p)
			}
		}
		if !strings.Contains(srv.out(), "16 more for WebSocket, HTTP upgrade, gRPC and QUIC: portico links -state "+state) {
			t.Fatalf("run did not point to the other links:\n%s", srv.out())
		}
	})

	t.Run("every printed link carries tunnels", func(t *testing.T) {
		out, _ := exec.Command(porticoBin, "links", "-state", state).Output()
		ls := strings.Fields(string(out))
		for _, want := range []string{"vless://", "v=1", "vmess://", "anytls://"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("no %s link among\n%s", want, out)
			}
		}
		for _, l := range ls {
			proto, _, _ := strings.Cut(l, "://")
			parsed, err := links.Parse(l)
			if err != nil {
				t.Fatal(err)
			}
			name := parsed.Name
			transport := parsed.Transport
			if transport == "tcp" {
				transport = "tls"
			}
			t.Run(name, func(t *testing.T) {
				cl := start(t, "client", "-listen", "127.0.0.1:0", l)
				proxy := cl.waitLine(t, localRe)
				for i := 0; i < 3; i++ {
					if err := socksEcho(t, proxy); err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
				}
				logged := "msg=tunnel user=default inbound=" + strings.Replace(name[len("portico-"):], "-v1", "", 1) + " transport=" + transport
				_ = proto
				deadline := time.Now().Add(3 * time.Second)
				for !strings.Contains(srv.errOut(), logged) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if !strings.Contains(srv.errOut(), logged) {
					t.Fatalf("server did not log %q", logged)
				}
			})
		}
	})

	t.Run("a wrong pin is refused", func(t *testing.T) {
		bad := strings.Replace(link, pin, strings.Repeat("0", 64), 1)
		cl := start(t, "client", "-listen", "127.0.0.1:0", bad)
		if err := socksEcho(t, cl.waitLine(t, localRe)); err == nil {
			t.Fatal("tunnel opened through a server whose certificate does not match the pin")
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(cl.errOut(), "does not match the pin") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(cl.errOut(), "does not match the pin") {
			t.Fatalf("client log does not say why:\n%s", cl.errOut())
		}
	})

	t.Run("allowInsecure works with a warning", func(t *testing.T) {
		insecure := strings.Replace(link, "pin="+pin, "allowInsecure=1", 1)
		cl := start(t, "client", "-listen", "127.0.0.1:0", insecure)
		proxy := cl.waitLine(t, localRe)
		if !strings.Contains(cl.errOut(), "level=WARN") || !strings.Contains(cl.errOut(), "certificate checks") {
			t.Fatalf("no warning about allowInsecure:\n%s", cl.errOut())
		}
		if err := socksEcho(t, proxy); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("client -c FILE", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(addr)
		cfg := filepath.Join(t.TempDir(), "client.json")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`{
			"inbounds": [{"protocol": "mixed", "listen": "127.0.0.1:0"}],
			"outbounds": [{"protocol": "vless",
				"settings": {"vnext": [{"address": %q, "port": %s, "users": [{"id": %q, "encryption": "none"}]}]},
				"streamSettings": {"security": "tls", "tlsSettings": {"pin": %q}}}]
		}`, host, port, u.User.Username(), pin)), 0o644)
		cl := start(t, "client", "-c", cfg)
		if err := socksEcho(t, cl.waitLine(t, localRe)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SIGTERM stops it cleanly", func(t *testing.T) {
		srv.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-srv.done:
			if err != nil {
				t.Fatalf("exit: %v\n%s", err, srv.errOut())
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no exit within 15 s of SIGTERM")
		}
		if !strings.Contains(srv.errOut(), "msg=stopped") {
			t.Errorf("no shutdown log:\n%s", srv.errOut())
		}
	})
}

// TestRestartKeepsIdentity: a second run on the same state dir serves the
// same certificate and keys, so old links keep working.
func TestRestartKeepsIdentity(t *testing.T) {
	state := t.TempDir()
	var links []string
	for i := 0; i < 2; i++ {
		p := start(t, "run", "-state", state, "-listen", "127.0.0.1:0")
		p.waitLine(t, servingRe)
		l := p.waitLine(t, clientRe)
		u, _ := url.Parse(l)
		u.Host = "" // the port differs between runs
		links = append(links, u.String())
		p.cmd.Process.Signal(syscall.SIGINT)
		<-p.done
	}
	if links[0] != links[1] {
		t.Fatalf("identity changed across restarts:\n%s\n%s", links[0], links[1])
	}
	if st, err := os.Stat(filepath.Join(state, "state.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state.json: %v, mode %v", err, st.Mode())
	}
}

// TestUserErrors: every mistake a user can make ends in one clear line and
// a non-zero exit, never a panic.
func TestUserErrors(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	aFile := write("not-a-dir", "x")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing config", []string{"run", "-c", filepath.Join(dir, "nope.json")}, "no such file or directory"},
		{"bad json", []string{"run", "-c", write("bad.json", `{"server": {"listen": "127.0.0.1:0"`)}, "invalid JSON"},
		{"unknown field", []string{"check", "-c", write("typo.json", `{"server": {"lisen": "127.0.0.1:0"}}`)}, `server.lisen: unknown field (did you mean "listen"?)`},
		{"port in use", []string{"run", "-state", filepath.Join(dir, "s1"), "-listen", busy.Addr().String()}, "is already in use"},
		{"state dir is a file", []string{"run", "-state", filepath.Join(aFile, "sub")}, "state dir"},
		{"missing cert file", []string{"run", "-c", write("files.json", `{"server": {"listen": "127.0.0.1:0", "tls": {"source": "files", "certFile": "/nonexistent/c.pem", "keyFile": "/nonexistent/k.pem"}}}`)}, "/nonexistent/c.pem"},
		{"bad link", []string{"client", "vless://nobody"}, "bad share link"},
		{"bad flag", []string{"run", "-bogus"}, "flag provided but not defined"},
		{"unknown command", []string{"serve"}, `unknown command "serve"`},
		{"links without state", []string{"links", "-state", filepath.Join(dir, "empty")}, "run `portico run -state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(porticoBin, tt.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			cmd.Start()
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatal("still running after 20 s")
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit = %v, want non-zero", err)
			}
			out := stderr.String()
			if !strings.Contains(out, tt.want) {
				t.Fatalf("stderr %q lacks %q", out, tt.want)
			}
			if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
				t.Fatalf("stack trace on stderr:\n%s", out)
			}
			if tt.name != "bad flag" && tt.name != "unknown command" && strings.Count(strings.TrimSpace(out), "\n") > 0 {
				t.Fatalf("more than one line:\n%s", out)
			}
		})
	}
}

func TestCheckAndUUID(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.json")
	os.WriteFile(cfg, []byte(`{"server": {"listen": "127.0.0.1:0"}, "inbounds": [{"tag": "v", "protocol": "vless", "settings": {"clients": [{"id": "b831381d-6324-4d53-ad4f-8cda48b30811"}]}}]}`), 0o644)
	out, err := exec.Command(porticoBin, "check", "-c", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "inbound v: vless on raw TLS, 1 user(s)") || !strings.Contains(string(out), "config OK") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	out, err = exec.Command(porticoBin, "uuid").Output()
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n$`).Match(out) {
		t.Fatalf("uuid: %q, %v", out, err)
	}
	out, err = exec.Command(porticoBin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "portico ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func pinnedTLS(pin string) *tls.Config {
	want, _ := hex.DecodeString(pin)
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(got[:], want) {
				return errors.New("certificate does not match the pin")
			}
			return nil
		}}
}

// directDecoy serves the built-in site alone, with the same HTTP server the
// front door uses, on plain TCP: what "the decoy answers directly" means.
func directDecoy(t *testing.T) func() (net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gateway.NewSiteServer(gateway.SiteHandler(gateway.BuiltinSite()), slog.New(slog.DiscardHandler), 10*time.Second, time.Minute)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
}

var dateRe = regexp.MustCompile(`Date: [^\r]*\r\n`)

func sendAndDrain(t *testing.T, dial func() (net.Conn, error), b []byte) []byte {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	return dateRe.ReplaceAll(got, []byte("Date: X\r\n"))
}

func TestJSONLogs(t *testing.T) {
	p := start(t, "run", "-state", t.TempDir(), "-listen", "127.0.0.1:0", "-log-format", "json", "-log-level", "debug")
	line := p.waitLine(t, regexp.MustCompile(`^(\{.*"msg":"serving".*\})$`))
	if !strings.Contains(line, `"level":"INFO"`) || !strings.Contains(line, `"listen":"127.0.0.1:`) {
		t.Fatalf("JSON log line %s", line)
	}
}
