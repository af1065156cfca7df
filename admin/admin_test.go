package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fakeBackend is a Backend in memory.
type fakeBackend struct {
	mu        sync.Mutex
	inbounds  []Inbound
	users     map[string][]User
	stats     Stats
	reloadErr error
	resets    []string
}

func newFake() *fakeBackend {
	seen := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	return &fakeBackend{
		inbounds: []Inbound{
			{Tag: "vless-tls", Protocol: "vless", Transport: "tcp"},
			{Tag: "anytls", Protocol: "anytls", Transport: "tcp"},
		},
		users: map[string][]User{
			"vless-tls": {{Email: "alice", ID: "b831381d-6324-4d53-ad4f-8cda48b30811"}},
			"anytls":    {{Email: "bob", Password: "secret"}},
		},
		stats: Stats{
			Users:    map[string]Counters{"alice": {Up: 10, Down: 20, Active: 1, Total: 3, LastSeen: &seen}},
			Inbounds: map[string]Counters{"vless-tls": {Up: 10, Down: 20, Active: 1, Total: 3}},
		},
	}
}

func (f *fakeBackend) Inbounds() []Inbound {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]Inbound(nil), f.inbounds...)
	for i := range out {
		out[i].Users = len(f.users[out[i].Tag])
	}
	return out
}

func (f *fakeBackend) Users(tag string) ([]User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	us, ok := f.users[tag]
	if !ok {
		return nil, ErrNoInbound
	}
	return append([]User(nil), us...), nil
}

func (f *fakeBackend) AddUser(tag string, u User) (User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	us, ok := f.users[tag]
	if !ok {
		return User{}, fmt.Errorf("inbound %s: %w", tag, ErrNoInbound)
	}
	for _, x := range us {
		if x.Email == u.Email {
			return User{}, ErrExists
		}
	}
	if tag == "vless-tls" && len(u.ID) != 36 {
		return User{}, errors.New("id: not a UUID")
	}
	f.users[tag] = append(us, u)
	return u, nil
}

func (f *fakeBackend) RemoveUser(tag, email string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	us, ok := f.users[tag]
	if !ok {
		return ErrNoInbound
	}
	for i, x := range us {
		if x.Email == email {
			f.users[tag] = append(us[:i:i], us[i+1:]...)
			return nil
		}
	}
	return ErrNoUser
}

func (f *fakeBackend) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *fakeBackend) ResetStats(user string) Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets = append(f.resets, user)
	before := f.stats
	if user != "" {
		before = Stats{Users: map[string]Counters{user: f.stats.Users[user]}}
	}
	return before
}

func (f *fakeBackend) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloadErr
}

const testToken = "s3cret-t0ken"

func newServer(t *testing.T, b Backend, reg *prometheus.Registry) *httptest.Server {
	t.Helper()
	h, err := New(Options{Backend: b, Registry: reg, Token: testToken, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// call does one request with the test token and returns status and body.
func call(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent && resp.Header.Get("Content-Type") != "application/json" && path != "/metrics" {
		t.Errorf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, string(b)
}

func TestAdminEndpoints(t *testing.T) {
	fb := newFake()
	fb.reloadErr = nil
	srv := newServer(t, fb, nil)
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string // a substring of the body
	}{
		{"inbounds", "GET", "/v1/inbounds", "", 200, `"tag": "vless-tls"`},
		{"users", "GET", "/v1/inbounds/anytls/users", "", 200, `"password": "secret"`},
		{"users of no inbound", "GET", "/v1/inbounds/nope/users", "", 404, `{"error":"no such inbound \"nope\""}`},
		{"add", "POST", "/v1/inbounds/anytls/users", `{"email": "carol", "password": "pw", "level": 1, "quota": 1000, "expiry": "2027-01-01T00:00:00Z"}`, 201, `"expiry": "2027-01-01T00:00:00Z"`},
		{"add again", "POST", "/v1/inbounds/anytls/users", `{"email": "carol", "password": "pw2"}`, 409, `user \"carol\" exists in inbound \"anytls\"`},
		{"add to no inbound", "POST", "/v1/inbounds/nope/users", `{"email": "dave", "password": "pw"}`, 404, `no such inbound`},
		{"add invalid", "POST", "/v1/inbounds/vless-tls/users", `{"email": "dave", "id": "short"}`, 400, `{"error":"id: not a UUID"}`},
		{"add without email", "POST", "/v1/inbounds/anytls/users", `{"password": "pw"}`, 400, `email: required`},
		{"add unknown field", "POST", "/v1/inbounds/anytls/users", `{"email": "eve", "pasword": "pw"}`, 400, `unknown field \"pasword\"`},
		{"add bad json", "POST", "/v1/inbounds/anytls/users", `{"email": `, 400, `request body`},
		{"add empty body", "POST", "/v1/inbounds/anytls/users", ``, 400, `request body: empty`},
		{"add trailing data", "POST", "/v1/inbounds/anytls/users", `{"email": "eve", "password": "pw"} {}`, 400, `data after`},
		{"add wrong type", "POST", "/v1/inbounds/anytls/users", `{"email": "eve", "level": "high"}`, 400, `request body`},
		{"added is listed", "GET", "/v1/inbounds/anytls/users", "", 200, `"email": "carol"`},
		{"del", "DELETE", "/v1/inbounds/anytls/users/carol", "", 204, ``},
		{"del again", "DELETE", "/v1/inbounds/anytls/users/carol", "", 404, `no user \"carol\" in inbound \"anytls\"`},
		{"del no inbound", "DELETE", "/v1/inbounds/nope/users/carol", "", 404, `no such inbound \"nope\"`},
		{"del escaped email", "DELETE", "/v1/inbounds/anytls/users/a%2Fb", "", 404, `no user \"a/b\"`},
		{"stats", "GET", "/v1/stats", "", 200, `"lastSeen": "2026-11-01T12:00:00Z"`},
		{"reset one", "POST", "/v1/stats/reset?user=alice", "", 200, `"up": 10`},
		{"reset all", "POST", "/v1/stats/reset", "", 200, `"inbounds": {`},
		{"reset with body", "POST", "/v1/stats/reset", `{"user": "alice"}`, 400, `takes none`},
		{"reload", "POST", "/v1/reload", "", 204, ``},
		{"wrong method", "PUT", "/v1/inbounds", "", 405, `not allowed`},
		{"no such endpoint", "GET", "/v1/nope", "", 404, `no such endpoint`},
		{"no metrics without a registry", "GET", "/metrics", "", 404, `no such endpoint`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := call(t, srv, tt.method, tt.path, tt.body)
			if status != tt.status || !strings.Contains(body, tt.want) {
				t.Fatalf("%s %s = %d %s; want %d with %s", tt.method, tt.path, status, body, tt.status, tt.want)
			}
			if status >= 400 {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" || strings.Contains(e.Error, "\n") {
					t.Fatalf("error body %q is not one-line {\"error\": …}", body)
				}
			}
		})
	}
	if want := []string{"alice", ""}; fmt.Sprint(fb.resets) != fmt.Sprint(want) {
		t.Fatalf("ResetStats calls %q, want %q", fb.resets, want)
	}
}

func TestAdminReloadErrors(t *testing.T) {
	fb := newFake()
	srv := newServer(t, fb, nil)
	fb.reloadErr = &ConfigError{Err: errors.New("config.json: inbounds[0].settings.clients[0].id: not a UUID\n(want the 36-character form)")}
	status, body := call(t, srv, "POST", "/v1/reload", "")
	if status != 400 || body != `{"error":"config.json: inbounds[0].settings.clients[0].id: not a UUID; (want the 36-character form)"}`+"\n" {
		t.Fatalf("config error: %d %q", status, body)
	}
	fb.reloadErr = fmt.Errorf("reload: %w", errors.New("listen tcp :443: address already in use"))
	if status, body = call(t, srv, "POST", "/v1/reload", ""); status != 500 || !strings.Contains(body, "address already in use") {
		t.Fatalf("other error: %d %q", status, body)
	}
}

func TestAdminToken(t *testing.T) {
	srv := newServer(t, newFake(), nil)
	for _, tt := range []struct {
		name, auth string
		status     int
	}{
		{"none", "", 401},
		{"wrong", "Bearer nope", 401},
		{"prefix of the token", "Bearer " + testToken[:4], 401},
		{"basic", "Basic " + testToken, 401},
		{"right", "Bearer " + testToken, 200},
		{"scheme is case-insensitive", "bearer " + testToken, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+"/v1/inbounds", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status == 401 {
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
				}
				if strings.Contains(string(b), testToken) {
					t.Fatalf("the answer shows the token: %s", b)
				}
			}
		})
	}
	// The token is required for TCP, and it must be one header word.
	if _, err := New(Options{Backend: newFake()}); err == nil || !strings.Contains(err.Error(), "token is required") {
		t.Fatalf("New without a token: %v", err)
	}
	if _, err := New(Options{Backend: newFake(), Token: "a b"}); err == nil {
		t.Fatal("New accepted a token with a space")
	}
	if _, err := New(Options{Token: "x"}); err == nil {
		t.Fatal("New accepted no backend")
	}
}

// TestAdminLogs: every request is logged at debug, and the token never.
func TestAdminLogs(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := New(Options{Backend: newFake(), Token: testToken, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	call(t, srv, "GET", "/v1/inbounds/nope/users", "")
	http.Get(srv.URL + "/v1/inbounds")
	mu.Lock()
	got := buf.String()
	mu.Unlock()
	for _, want := range []string{"method=GET path=/v1/inbounds/nope/users status=404", "path=/v1/inbounds status=401"} {
		if !strings.Contains(got, want) {
			t.Fatalf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, testToken) {
		t.Fatalf("log shows the token:\n%s", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestAdminMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	tunnels := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portico_tunnels_total", Help: "Tunnels opened."}, []string{"protocol", "transport"})
	reg.MustRegister(tunnels)
	tunnels.WithLabelValues("vless", "ws").Add(3)
	srv := newServer(t, newFake(), reg)
	status, body := call(t, srv, "GET", "/metrics", "")
	if status != 200 {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	f := fams["portico_tunnels_total"]
	if f == nil || len(f.Metric) != 1 || f.Metric[0].GetCounter().GetValue() != 3 {
		t.Fatalf("portico_tunnels_total = %v\n%s", f, body)
	}
	labels := map[string]string{}
	for _, l := range f.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["protocol"] != "vless" || labels["transport"] != "ws" {
		t.Fatalf("labels %v", labels)
	}
	// /metrics is behind the token like everything else.
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("/metrics without a token: %d", resp.StatusCode)
	}
}

func TestAdminListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:9090", "[::]:0", "example.com:9090", "nonsense", "unix:"} {
		ln, err := Listen(addr)
		if err == nil {
			ln.Close()
			t.Fatalf("Listen(%q) succeeded", addr)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("Listen(%q): not one line: %v", addr, err)
		}
	}
	_, err := Listen("0.0.0.0:9090")
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("Listen(0.0.0.0:9090): %v", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr)
		if err != nil {
			t.Fatalf("Listen(%q): %v", addr, err)
		}
		ln.Close()
	}
}

func TestAdminUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	// A stale socket file (its listener gone) is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the stale socket should still exist: %v", err)
	}

	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
	h, err := New(Options{Backend: newFake(), Unix: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()

	// A live socket is not taken over.
	if ln2, err := Listen("unix:" + sock); err == nil || !strings.Contains(err.Error(), "another process") {
		if ln2 != nil {
			ln2.Close()
		}
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	// Nor is a path that is not a socket.
	plain := filepath.Join(dir, "file")
	os.WriteFile(plain, nil, 0o600)
	if _, err := Listen("unix:" + plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a plain file: %v", err)
	}

	// An http.Client over the socket, no token.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://unix/v1/inbounds")
	if err != nil {
		t.Fatal(err)
	}
	var ins []Inbound
	err = json.NewDecoder(resp.Body).Decode(&ins)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || len(ins) != 2 || ins[0].Users != 1 {
		t.Fatalf("over the socket: %d %v %+v", resp.StatusCode, err, ins)
	}

	// The package's Client over the socket.
	c, err := NewClient("unix:"+sock, "")
	if err != nil {
		t.Fatal(err)
	}
	us, err := c.Users(context.Background(), "anytls")
	if err != nil || len(us) != 1 || us[0].Email != "bob" {
		t.Fatalf("Client.Users: %+v %v", us, err)
	}
	srv.Close()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket file outlived its listener: %v", err)
	}
}

func TestAdminClient(t *testing.T) {
	fb := newFake()
	srv := newServer(t, fb, nil)
	ctx := context.Background()
	c, err := NewClient(strings.TrimPrefix(srv.URL, "http://"), testToken)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	u, err := c.AddUser(ctx, "vless-tls", User{Email: "carol", ID: "11111111-2222-4333-8444-555555555555", Quota: 5, Expiry: &exp})
	if err != nil || u.Email != "carol" || !u.Expiry.Equal(exp) {
		t.Fatalf("AddUser: %+v %v", u, err)
	}
	_, err = c.AddUser(ctx, "nope", User{Email: "x"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || err.Error() != `404 no such inbound "nope"` {
		t.Fatalf("AddUser to no inbound: %v", err)
	}
	if err := c.RemoveUser(ctx, "vless-tls", "carol"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.ResetStats(ctx, "alice"); err != nil || s.Users["alice"].Up != 10 {
		t.Fatalf("ResetStats: %+v %v", s, err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	bad, _ := NewClient(strings.TrimPrefix(srv.URL, "http://"), "wrong")
	if _, err := bad.Stats(ctx); err == nil || !strings.HasPrefix(err.Error(), "401 ") {
		t.Fatalf("wrong token: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	gone, _ := NewClient(addr, testToken)
	if _, err := gone.Stats(ctx); err == nil || !strings.Contains(err.Error(), "nothing is listening") {
		t.Fatalf("no server: %v", err)
	}
}

func TestAdminParseBytesAndExpiry(t *testing.T) {
	for in, want := range map[string]int64{
		"1073741824": 1 << 30, "10GB": 10e9, "500MiB": 500 << 20, "1.5 GiB": 3 << 29, "0": 0, "2tb": 2e12, "100k": 1e5,
	} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GB", "-1", "10XB", "1.5", "ten", "99999999999TB"} {
		if got, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, got)
		}
	}
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2027-01-01T00:00:00Z":      time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		"2027-01-01T02:00:00+02:00": time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		"30d":                       now.AddDate(0, 0, 30),
		"12h":                       now.Add(12 * time.Hour),
	} {
		if got, err := ParseExpiry(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "tomorrow", "-3d", "0d", "2027-01-01", "-1h"} {
		if got, err := ParseExpiry(in, now); err == nil {
			t.Errorf("ParseExpiry(%q) = %v, want an error", in, got)
		}
	}
}
