package gateway

import (
	"bytes"
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

	"github.com/google/uuid"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portico-gw/portico/admin"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/transports/rawtls"
)

// opsServer is a gateway started from a config file with the admin API on
// a unix socket.
type opsServer struct {
	g      *Gateway
	dir    string
	cfg    string // the config file
	logs   *logBuffer
	client *admin.Client
	sock   string
}

const opsConfig = `{
  "server": {"listen": "127.0.0.1:0", "tls": {"source": "self-signed", "stateDir": %q}},
  "admin": {"listen": "unix:%s", "perUserMetrics": %v},
  "policy": {"closeRemovedUsers": %v, "statsInterval": "1h"},
  "inbounds": [
    {"tag": "v", "protocol": "vless", "settings": {"clients": [%s], "decryption": "none"}},
    {"tag": "m", "protocol": "vmess", "settings": {"clients": [{"id": %q, "email": "vm"}]}}
  ]
}`

func vlessClients(users map[string]string) string {
	var parts []string
	for email, id := range users {
		parts = append(parts, fmt.Sprintf(`{"id": %q, "email": %q}`, id, email))
	}
	return strings.Join(parts, ", ")
}

func writeOpsConfig(t *testing.T, s *opsServer, users map[string]string, perUser, closeRemoved bool) {
	t.Helper()
	body := fmt.Sprintf(opsConfig, s.dir, s.sock, perUser, closeRemoved, vlessClients(users), uuid.NewString())
	if err := os.WriteFile(s.cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func startOps(t *testing.T, users map[string]string, perUser, closeRemoved bool) *opsServer {
	t.Helper()
	dir := t.TempDir()
	s := &opsServer{dir: dir, cfg: filepath.Join(dir, "config.json"), sock: filepath.Join(dir, "admin.sock"), logs: &logBuffer{}}
	writeOpsConfig(t, s, users, perUser, closeRemoved)
	cfg, err := LoadConfig(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.g, err = New(cfg, Options{ConfigPath: s.cfg, Version: "test", Log: slog.New(slog.NewTextHandler(s.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.g.Shutdown(ctx)
	})
	if s.client, err = admin.NewClient("unix:"+s.sock, ""); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *opsServer) vless(t *testing.T, id string) *vlessclient.Client {
	t.Helper()
	tlsCfg, err := rawtls.ClientConfig("", s.g.Pin(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(id), Carrier: &rawtls.Dialer{Address: s.g.Addr().String(), TLS: tlsCfg}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sizedTarget reads up bytes, then writes down bytes and closes: a tunnel
// to it moves exactly up and down payload bytes.
func sizedTarget(t *testing.T, up, down int) protocols.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.CopyN(io.Discard, c, int64(up)); err != nil {
					return
				}
				c.Write(bytes.Repeat([]byte{'d'}, down))
			}()
		}
	}()
	return protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
}

// moveBytes opens a tunnel as c to target, sends up bytes, reads until the
// target closes, and returns how many came back.
func moveBytes(c *vlessclient.Client, target protocols.Addr, up int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.DialStream(ctx, target)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(bytes.Repeat([]byte{'u'}, up)); err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, conn)
	return int(n), err
}

// probeAnswer sends a VLESS v0 header for id and a line end over TLS and
// returns the status line the gateway answers (the decoy's, for a key
// that is refused).
func (s *opsServer) probeAnswer(t *testing.T, id string) string {
	t.Helper()
	c, err := tls.Dial("tcp", s.g.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u := uuid.MustParse(id)
	hdr := append([]byte{0}, u[:]...)
	hdr = append(hdr, 0, 1, 0x1f, 0x90, 1, 127, 0, 0, 1) // TCP to 127.0.0.1:8080
	c.Write(append(hdr, "\r\n\r\n"...))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// probeCommand sends a VLESS v0 header of user id with command cmd.
func (s *opsServer) probeCommand(t *testing.T, id string, cmd byte) {
	t.Helper()
	c, err := tls.Dial("tcp", s.g.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u := uuid.MustParse(id)
	hdr := append([]byte{0}, u[:]...)
	hdr = append(hdr, 0, cmd, 0x1f, 0x90, 1, 127, 0, 0, 1)
	c.Write(append(hdr, "\r\n\r\n"...))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	io.ReadAll(c)
}

func waitIdle(t *testing.T, g *Gateway) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); g.Router().Active() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels still open", g.Router().Active())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAdminUsersLive: a user added through the admin API connects at once;
// the counters match the bytes moved exactly, both ways; removed, its next
// connection gets what an unknown key gets (the site); a user over quota or
// past expiry is refused the same way and counted.
func TestAdminUsersLive(t *testing.T) {
	s := startOps(t, map[string]string{"alice": uuid.NewString()}, false, false)
	ctx := context.Background()
	target := sizedTarget(t, 12345, 54321)

	carol, err := s.client.AddUser(ctx, "v", admin.User{Email: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(carol.ID); err != nil {
		t.Fatalf("added user has id %q", carol.ID)
	}
	added := time.Now()
	c := s.vless(t, carol.ID)
	down, err := moveBytes(c, target, 12345)
	if err != nil || down != 54321 {
		t.Fatalf("carol's tunnel: %d bytes back, %v", down, err)
	}
	if d := time.Since(added); d > time.Second {
		t.Fatalf("carol connected %v after being added; want within 1 s", d)
	}
	waitIdle(t, s.g)
	st, err := s.client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Users["carol"]; u.Up != 12345 || u.Down != 54321 || u.Total != 1 || u.Active != 0 || u.LastSeen == nil {
		t.Fatalf("carol's counters %+v; want up 12345, down 54321, 1 tunnel", u)
	}
	if in := st.Inbounds["v"]; in.Up != 12345 || in.Down != 54321 {
		t.Fatalf("inbound v's counters %+v", in)
	}
	users, _ := s.client.Users(ctx, "v")
	if len(users) != 2 {
		t.Fatalf("users of v: %+v", users)
	}

	unknown := s.probeAnswer(t, uuid.NewString())
	if !strings.HasPrefix(unknown, "HTTP/1.1 ") {
		t.Fatalf("an unknown key got %q, not the site", unknown)
	}
	if err := s.client.RemoveUser(ctx, "v", "carol"); err != nil {
		t.Fatal(err)
	}
	if got := s.probeAnswer(t, carol.ID); got != unknown {
		t.Fatalf("removed user got %q; an unknown key gets %q", got, unknown)
	}
	if err := s.client.RemoveUser(ctx, "v", "carol"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("removing again: %v; want 404", err)
	}

	// Quota: 20,000 bytes; the first tunnel moves 12345+54321, the next is
	// refused like a wrong key.
	dave, err := s.client.AddUser(ctx, "v", admin.User{Email: "dave", Quota: 20000})
	if err != nil {
		t.Fatal(err)
	}
	dc := s.vless(t, dave.ID)
	if _, err := moveBytes(dc, target, 12345); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s.g)
	if got := s.probeAnswer(t, dave.ID); got != unknown {
		t.Fatalf("over quota got %q; an unknown key gets %q", got, unknown)
	}
	past := time.Now().Add(-time.Hour)
	erin, err := s.client.AddUser(ctx, "v", admin.User{Email: "erin", Expiry: &past})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.probeAnswer(t, erin.ID); got != unknown {
		t.Fatalf("expired got %q; an unknown key gets %q", got, unknown)
	}
	st, _ = s.client.Stats(ctx)
	if st.Users["dave"].Refused < 1 || st.Users["erin"].Refused < 1 {
		t.Fatalf("refusals not counted: dave %+v, erin %+v", st.Users["dave"], st.Users["erin"])
	}
	// Refusals are logged at most once per 10 s (a flood costs one line).
	if !strings.Contains(s.logs.String(), "user refused: over quota") {
		t.Fatalf("no refusal line in\n%s", s.logs.String())
	}

	// Bad additions are one-line 4xx errors.
	for _, bad := range []struct {
		in   string
		u    admin.User
		want string
	}{
		{"v", admin.User{}, "400"},
		{"v", admin.User{Email: "alice"}, "409"},
		{"v", admin.User{Email: "x", ID: "nope"}, "400"},
		{"v", admin.User{Email: "x", Password: "p"}, "400"},
		{"nope", admin.User{Email: "x"}, "404"},
	} {
		if _, err := s.client.AddUser(ctx, bad.in, bad.u); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("add %+v to %s: %v; want %s", bad.u, bad.in, err, bad.want)
		}
	}

	// Reset returns what was there and zeroes it.
	before, err := s.client.ResetStats(ctx, "dave")
	if err != nil || before.Users["dave"].Up != 12345 {
		t.Fatalf("reset returned %+v, %v", before, err)
	}
	st, _ = s.client.Stats(ctx)
	if st.Users["dave"].Up != 0 {
		t.Fatalf("after reset: %+v", st.Users["dave"])
	}
}

// TestCountersSurviveRestart: counters are saved on shutdown and restored
// by the next start on the same state dir.
func TestCountersSurviveRestart(t *testing.T) {
	id := uuid.NewString()
	s := startOps(t, map[string]string{"alice": id}, false, false)
	target := sizedTarget(t, 1000, 2000)
	if _, err := moveBytes(s.vless(t, id), target, 1000); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s.g)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.g.Shutdown(ctx)
	if _, err := os.Stat(filepath.Join(s.dir, statsFileName)); err != nil {
		t.Fatalf("no counters file after shutdown: %v", err)
	}
	cfg, err := LoadConfig(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := New(cfg, Options{ConfigPath: s.cfg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer g2.Shutdown(context.Background())
	if a := g2.Stats().Users["alice"]; a.Up != 1000 || a.Down != 2000 || a.Total != 1 {
		t.Fatalf("restored %+v; want up 1000, down 2000", a)
	}
}

// TestMetrics scrapes /metrics with Prometheus' own parser and finds every
// series docs/api.md lists.
func TestMetrics(t *testing.T) {
	for _, perUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("perUser=%v", perUser), func(t *testing.T) {
			id := uuid.NewString()
			s := startOps(t, map[string]string{"alice": id}, perUser, false)
			if _, err := moveBytes(s.vless(t, id), sizedTarget(t, 100, 200), 100); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, s.g)
			s.probeAnswer(t, uuid.NewString()) // a bad key
			s.probeCommand(t, id, 5)           // a user's malformed header
			hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", s.sock)
			}}}
			resp, err := hc.Get("http://unix/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			parser := expfmt.NewTextParser(model.UTF8Validation)
			families, err := parser.TextToMetricFamilies(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			value := func(name string, labels map[string]string) (float64, bool) {
				f, ok := families[name]
				if !ok {
					return 0, false
				}
			next:
				for _, m := range f.Metric {
					for k, v := range labels {
						found := false
						for _, lp := range m.Label {
							found = found || (lp.GetName() == k && lp.GetValue() == v)
						}
						if !found {
							continue next
						}
					}
					switch {
					case m.Counter != nil:
						return m.Counter.GetValue(), true
					case m.Gauge != nil:
						return m.Gauge.GetValue(), true
					}
				}
				return 0, false
			}
			checks := []struct {
				name   string
				labels map[string]string
				ok     func(float64) bool
			}{
				{"portico_tunnels_total", map[string]string{"protocol": "vless", "transport": "tcp"}, func(v float64) bool { return v == 1 }},
				{"portico_tunnels_active", map[string]string{"protocol": "vless", "transport": "tcp"}, func(v float64) bool { return v == 0 }},
				{"portico_bytes_total", map[string]string{"direction": "up"}, func(v float64) bool { return v == 100 }},
				{"portico_bytes_total", map[string]string{"direction": "down"}, func(v float64) bool { return v == 200 }},
				{"portico_handshake_failures_total", map[string]string{"reason": "bad_key"}, func(v float64) bool { return v >= 1 }},
				{"portico_handshake_failures_total", map[string]string{"reason": "replay"}, func(v float64) bool { return v == 0 }},
				{"portico_handshake_failures_total", map[string]string{"reason": "timeout"}, func(v float64) bool { return v == 0 }},
				{"portico_handshake_failures_total", map[string]string{"reason": "malformed"}, func(v float64) bool { return v == 1 }},
				{"portico_fallback_total", nil, func(v float64) bool { return v >= 1 }},
				{"portico_udp_associations_active", nil, func(v float64) bool { return v == 0 }},
				{"portico_certificate_expiry_seconds", nil, func(v float64) bool { return v > 86400 }},
				{"portico_build_info", map[string]string{"version": "test"}, func(v float64) bool { return v == 1 }},
			}
			if perUser {
				checks = append(checks, struct {
					name   string
					labels map[string]string
					ok     func(float64) bool
				}{"portico_user_bytes_total", map[string]string{"user": "alice", "direction": "down"}, func(v float64) bool { return v == 200 }})
			}
			for _, c := range checks {
				v, ok := value(c.name, c.labels)
				if !ok || !c.ok(v) {
					t.Errorf("%s%v = %v (present %v)", c.name, c.labels, v, ok)
				}
			}
			if _, ok := families["portico_user_bytes_total"]; ok != perUser {
				t.Errorf("per-user series present: %v, want %v", ok, perUser)
			}
		})
	}
}
