package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/admin"
)

// apiBackend is an admin.Backend in memory, for the commands to talk to.
type apiBackend struct {
	mu        sync.Mutex
	users     map[string][]admin.User // by inbound tag
	protocols map[string]string
	resets    []string
	reloadErr error
}

func newAPIBackend() *apiBackend {
	return &apiBackend{
		users: map[string][]admin.User{
			"vless-tls": {{Email: "alice", ID: "b831381d-6324-4d53-ad4f-8cda48b30811"}},
			"anytls":    {{Email: "bob", Password: "pw"}},
		},
		protocols: map[string]string{"vless-tls": "vless", "anytls": "anytls"},
	}
}

func (b *apiBackend) Inbounds() []admin.Inbound {
	b.mu.Lock()
	defer b.mu.Unlock()
	return []admin.Inbound{
		{Tag: "vless-tls", Protocol: "vless", Transport: "tcp", Users: len(b.users["vless-tls"])},
		{Tag: "anytls", Protocol: "anytls", Transport: "tcp", Users: len(b.users["anytls"])},
	}
}

func (b *apiBackend) Users(tag string) ([]admin.User, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	us, ok := b.users[tag]
	if !ok {
		return nil, admin.ErrNoInbound
	}
	return append([]admin.User(nil), us...), nil
}

func (b *apiBackend) AddUser(tag string, u admin.User) (admin.User, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	us, ok := b.users[tag]
	if !ok {
		return admin.User{}, admin.ErrNoInbound
	}
	for _, x := range us {
		if x.Email == u.Email {
			return admin.User{}, admin.ErrExists
		}
	}
	switch b.protocols[tag] {
	case "vless":
		if u.ID == "" || u.Password != "" {
			return admin.User{}, errors.New("vless: a user needs an id and no password")
		}
	case "anytls":
		if u.Password == "" || u.ID != "" {
			return admin.User{}, errors.New("anytls: a user needs a password and no id")
		}
	}
	b.users[tag] = append(us, u)
	return u, nil
}

func (b *apiBackend) RemoveUser(tag, email string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	us, ok := b.users[tag]
	if !ok {
		return admin.ErrNoInbound
	}
	for i, x := range us {
		if x.Email == email {
			b.users[tag] = append(us[:i:i], us[i+1:]...)
			return nil
		}
	}
	return admin.ErrNoUser
}

var lastSeen = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func (b *apiBackend) Stats() admin.Stats {
	return admin.Stats{
		Users:    map[string]admin.Counters{"alice": {Up: 1536, Down: 10 << 20, Active: 2, Total: 7, LastSeen: &lastSeen}},
		Inbounds: map[string]admin.Counters{"vless-tls": {Up: 1536, Down: 10 << 20, Active: 2, Total: 7}},
	}
}

func (b *apiBackend) ResetStats(user string) admin.Stats {
	b.mu.Lock()
	b.resets = append(b.resets, user)
	b.mu.Unlock()
	s := b.Stats()
	if user != "" {
		s.Inbounds = nil
		s.Users = map[string]admin.Counters{user: s.Users[user]}
	}
	return s
}

func (b *apiBackend) Reload() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reloadErr
}

const apiToken = "cmd-test-token"

// apiServer serves the admin API over b on loopback TCP, with apiToken.
func apiServer(t *testing.T, b admin.Backend) string {
	t.Helper()
	h, err := admin.New(admin.Options{Backend: b, Token: apiToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// portico runs the binary with env (PORTICO_* from the test's own
// environment removed) and returns stdout, stderr and the exit code.
func portico(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(porticoBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PORTICO_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "goroutine ") {
		t.Fatalf("portico %v: stack trace:\n%s", args, stderr.String())
	}
	return stdout.String(), stderr.String(), code
}

func TestAdminCommands(t *testing.T) {
	b := newAPIBackend()
	addr := apiServer(t, b)
	flags := []string{"-admin", addr, "-token", apiToken}
	ok := func(args ...string) string {
		t.Helper()
		out, errOut, code := portico(t, nil, append(args, flags...)...)
		if code != 0 {
			t.Fatalf("portico %v: exit %d: %s", args, code, errOut)
		}
		return out
	}

	// user add with a given UUID, quota and expiry.
	out := ok("user", "add", "-inbound", "vless-tls", "-email", "carol", "-id", "11111111-2222-4333-8444-555555555555",
		"-level", "1", "-quota", "10GB", "-expiry", "2027-01-01T00:00:00Z")
	var u admin.User
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatalf("user add printed %q: %v", out, err)
	}
	if u.Email != "carol" || u.ID != "11111111-2222-4333-8444-555555555555" || u.Level != 1 || u.Quota != 10e9 ||
		u.Expiry == nil || !u.Expiry.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("user add: %+v", u)
	}

	// A generated UUID for VLESS, a generated password for AnyTLS; a
	// duration expiry, a binary quota.
	out = ok("user", "add", "-inbound", "vless-tls", "-email", "dave", "-expiry", "30d")
	u = admin.User{}
	json.Unmarshal([]byte(out), &u)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(u.ID) || u.Password != "" {
		t.Fatalf("generated VLESS user: %s", out)
	}
	if d := time.Until(*u.Expiry); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Fatalf("expiry 30d = %v", u.Expiry)
	}
	out = ok("user", "add", "-inbound", "anytls", "-email", "erin", "-quota", "500MiB")
	u = admin.User{}
	json.Unmarshal([]byte(out), &u)
	if len(u.Password) < 16 || u.ID != "" || u.Quota != 500<<20 {
		t.Fatalf("generated AnyTLS user: %s", out)
	}

	// user list: one inbound, every inbound, JSON.
	out = ok("user", "list", "-inbound", "vless-tls")
	for _, want := range []string{"EMAIL", "alice", "carol", "dave", "9.3 GiB", "2027-01-01T00:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Fatalf("user list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "erin") {
		t.Fatalf("user list -inbound vless-tls shows another inbound's user:\n%s", out)
	}
	out = ok("user", "list")
	if !strings.Contains(out, "erin") || !strings.Contains(out, "alice") {
		t.Fatalf("user list (all):\n%s", out)
	}
	var us []admin.User
	if err := json.Unmarshal([]byte(ok("user", "list", "-inbound", "anytls", "-json")), &us); err != nil || len(us) != 2 {
		t.Fatalf("user list -json: %+v %v", us, err)
	}

	// user del.
	if out = ok("user", "del", "-inbound", "vless-tls", "-email", "carol"); !strings.Contains(out, `removed user "carol"`) {
		t.Fatalf("user del: %q", out)
	}
	if us, _ := b.Users("vless-tls"); len(us) != 2 {
		t.Fatalf("after del: %+v", us)
	}

	// stats, stats -user, stats -reset [-user].
	out = ok("stats")
	for _, want := range []string{"USER", "alice", "1.5 KiB", "10.0 MiB", "2026-11-01T12:00:00Z", "INBOUND", "vless-tls"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stats lacks %q:\n%s", want, out)
		}
	}
	var s admin.Stats
	if err := json.Unmarshal([]byte(ok("stats", "-json", "-user", "alice")), &s); err != nil || s.Users["alice"].Total != 7 || len(s.Inbounds) != 0 {
		t.Fatalf("stats -json -user alice: %+v %v", s, err)
	}
	if out = ok("stats", "-reset", "-user", "alice"); !strings.Contains(out, "before") || !strings.Contains(out, "alice") {
		t.Fatalf("stats -reset -user: %q", out)
	}
	ok("stats", "-reset")
	b.mu.Lock()
	resets := strings.Join(b.resets, ",")
	b.mu.Unlock()
	if resets != "alice," {
		t.Fatalf("resets %q", resets)
	}

	// reload.
	if out = ok("reload"); strings.TrimSpace(out) != "reloaded" {
		t.Fatalf("reload: %q", out)
	}

	// The environment gives the defaults of -admin and -token.
	env := []string{"PORTICO_ADMIN=" + addr, "PORTICO_ADMIN_TOKEN=" + apiToken}
	if out, errOut, code := portico(t, env, "user", "list", "-inbound", "anytls"); code != 0 || !strings.Contains(out, "erin") {
		t.Fatalf("with the environment: %d %s %s", code, out, errOut)
	}
}

// TestAdminCommandsUnixSocket: on a unix socket no token is needed.
func TestAdminCommandsUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := admin.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	h, err := admin.New(admin.Options{Backend: newAPIBackend(), Unix: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	out, errOut, code := portico(t, nil, "user", "add", "-admin", "unix:"+sock, "-inbound", "anytls", "-email", "frank", "-password", "hunter2")
	if code != 0 || !strings.Contains(out, `"password": "hunter2"`) {
		t.Fatalf("user add over the socket: %d %s %s", code, out, errOut)
	}
	out, errOut, code = portico(t, []string{"PORTICO_ADMIN=unix:" + sock}, "reload")
	if code != 0 || !strings.Contains(out, "reloaded") {
		t.Fatalf("reload over the socket: %d %s %s", code, out, errOut)
	}
}

// TestAdminCommandErrors: each mistake is one line on stderr and a
// non-zero exit.
func TestAdminCommandErrors(t *testing.T) {
	b := newAPIBackend()
	addr := apiServer(t, b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := ln.Addr().String()
	ln.Close()
	tok := []string{"-admin", addr, "-token", apiToken}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no such inbound", append([]string{"user", "add", "-inbound", "x", "-email", "e"}, tok...),
			`portico: user add: admin API at ` + addr + `: 404 no such inbound "x"`},
		{"user exists", append([]string{"user", "add", "-inbound", "vless-tls", "-email", "alice"}, tok...),
			`portico: user add: admin API at ` + addr + `: 409 user "alice" exists in inbound "vless-tls"`},
		{"refused by the gateway", append([]string{"user", "add", "-inbound", "vless-tls", "-email", "g", "-password", "pw"}, tok...),
			`: 400 vless: a user needs an id and no password`},
		{"no such user", append([]string{"user", "del", "-inbound", "vless-tls", "-email", "zed"}, tok...),
			`portico: user del: admin API at ` + addr + `: 404 no user "zed" in inbound "vless-tls"`},
		{"list no such inbound", append([]string{"user", "list", "-inbound", "x"}, tok...), `404 no such inbound "x"`},
		{"no token", []string{"user", "list", "-admin", addr}, `portico: user list: admin API at ` + addr + `: 401 a bearer token is required`},
		{"wrong token", []string{"stats", "-admin", addr, "-token", "nope"}, `portico: stats: admin API at ` + addr + `: 401 wrong token`},
		{"nothing listening", []string{"reload", "-admin", nobody, "-token", "x"}, `portico: reload: admin API at ` + nobody + `: nothing is listening`},
		{"no socket", []string{"reload", "-admin", "unix:" + filepath.Join(t.TempDir(), "none.sock")}, `nothing is listening`},
		{"bad admin address", []string{"stats", "-admin", "nonsense"}, `portico: stats: -admin: "nonsense" is not host:port or unix:/path`},
		{"missing inbound", []string{"user", "add", "-email", "e"}, `portico: user add: -inbound TAG is required`},
		{"missing email", []string{"user", "del", "-inbound", "x"}, `portico: user del: -email NAME is required`},
		{"bad uuid", []string{"user", "add", "-inbound", "x", "-email", "e", "-id", "123"}, `-id: "123" is not a UUID`},
		{"id and password", []string{"user", "add", "-inbound", "x", "-email", "e", "-id", "b831381d-6324-4d53-ad4f-8cda48b30811", "-password", "p"}, `not both`},
		{"bad quota", []string{"user", "add", "-inbound", "x", "-email", "e", "-quota", "lots"}, `-quota: "lots" is not a size`},
		{"bad expiry", []string{"user", "add", "-inbound", "x", "-email", "e", "-expiry", "soon"}, `-expiry: "soon" is not an RFC 3339 time`},
		{"no subcommand", []string{"user"}, `portico: user: want list, add or del`},
		{"bad subcommand", []string{"user", "edit"}, `unknown subcommand "edit"`},
		{"stats of nobody", append([]string{"stats", "-user", "zed"}, tok...), `no counters for user "zed"`},
		{"extra argument", []string{"reload", "now"}, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := portico(t, nil, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0, stderr %q", errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Fatalf("stderr %q lacks %q", errOut, tt.want)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Fatalf("more than one line:\n%s", errOut)
			}
		})
	}

	b.mu.Lock()
	b.reloadErr = &admin.ConfigError{Err: errors.New("config.json: inbounds[0].tag: duplicate")}
	b.mu.Unlock()
	_, errOut, code := portico(t, nil, append([]string{"reload"}, tok...)...)
	if want := "portico: reload: admin API at " + addr + ": 400 config.json: inbounds[0].tag: duplicate\n"; code != 1 || errOut != want {
		t.Fatalf("reload with a bad config: %d %q, want %q", code, errOut, want)
	}
}
