package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/protocols/links"
)

const (
	edgeVLESSID = "b831381d-6324-4d53-ad4f-8cda48b30811"
	edgeVMessID = "5783a3e7-e373-51cd-8642-c83782b807c5"
)

// edgeTestConfig writes a server config with a VLESS and a VMess inbound
// over WebSocket, a VLESS inbound on raw TLS and an AnyTLS inbound over
// gRPC; it returns the file.
func edgeTestConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{
  "server": {"listen": "127.0.0.1:8443", "tls": {"source": "self-signed", "stateDir": %q}},
  "inbounds": [
    {"tag": "raw", "protocol": "vless", "settings": {"clients": [{"id": %[2]q, "email": "alice"}], "decryption": "none"}},
    {"tag": "vl-ws", "protocol": "vless", "settings": {"clients": [{"id": %[2]q, "email": "alice"}], "decryption": "none"},
     "streamSettings": {"network": "ws", "wsSettings": {"path": "/vl", "host": "origin.example"}}},
    {"tag": "vm-ws", "protocol": "vmess", "settings": {"clients": [{"id": %[3]q, "email": "bob"}]},
     "streamSettings": {"network": "ws", "wsSettings": {"path": "/vm"}}},
    {"tag": "any-grpc", "protocol": "anytls", "settings": {"users": [{"password": "pw", "email": "carol"}]},
     "streamSettings": {"network": "grpc", "grpcSettings": {"serviceName": "svc"}}}
  ]
}`, dir, edgeVLESSID, edgeVMessID)
	f := filepath.Join(dir, "server.json")
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLinksEdge runs `portico links -edge …` and parses every printed link
// back with protocols/links, checking each field.
func TestLinksEdge(t *testing.T) {
	cfgFile := edgeTestConfig(t)
	type want struct {
		protocol, id, name, path string
		version                  int
	}
	all := func(vlPath, vmPath string) []want {
		return []want{
			{"vless", edgeVLESSID, "portico-vless-alice-ws-edge", vlPath, 0},
			{"vless", edgeVLESSID, "portico-vless-alice-v1-ws-edge", vlPath, 1},
			{"vmess", edgeVMessID, "portico-vmess-bob-ws-edge", vmPath, 0},
		}
	}
	tests := []struct {
		name string
		args []string
		host string
		port uint16
		want []want
	}{
		{"defaults", []string{"-edge", "portico-edge.example.workers.dev"}, "portico-edge.example.workers.dev", 443,
			all("/vl?ed=2048", "/vm?ed=2048")},
		{"port, path and ed", []string{"-edge", "edge.example:8443", "-edge-path", "/tunnel", "-edge-ed", "4096"}, "edge.example", 8443,
			all("/tunnel?ed=4096", "/tunnel?ed=4096")},
		{"no early data", []string{"-edge", "edge.example", "-edge-ed", "0"}, "edge.example", 443,
			all("/vl", "/vm")},
		{"IPv6", []string{"-edge", "[2001:db8::1]:2053"}, "2001:db8::1", 2053,
			all("/vl?ed=2048", "/vm?ed=2048")},
		{"IPv6 without port", []string{"-edge", "[2001:db8::1]"}, "2001:db8::1", 443,
			all("/vl?ed=2048", "/vm?ed=2048")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"links", "-c", cfgFile}, tt.args...), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			wantNote := "links: -edge carries only WebSocket; skipped 2 inbounds: raw, any-grpc\n"
			if stderr.String() != wantNote {
				t.Errorf("stderr %q, want %q", stderr.String(), wantNote)
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("%d links, want %d:\n%s", len(lines), len(tt.want), stdout.String())
			}
			for i, line := range lines {
				got, err := links.Parse(line)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				w := tt.want[i]
				exp := links.Link{Protocol: w.protocol, ID: w.id, Host: tt.host, Port: tt.port, Name: w.name,
					Transport: "ws", Path: w.path, HostHeader: tt.host, Security: "tls", SNI: tt.host, Version: w.version}
				switch w.protocol {
				case "vless":
					exp.Encryption = "none"
					exp.KeepAlive = w.version == 1
				case "vmess":
					exp.Cipher = "auto"
				}
				if !reflect.DeepEqual(got, exp) {
					t.Errorf("link %d %s\n got %+v\nwant %+v", i, line, got, exp)
				}
				if _, _, err := gateway.ClientConfigFromLink(got, "127.0.0.1:0"); err != nil {
					t.Errorf("link %d: the client refuses it: %v", i, err)
				}
			}
		})
	}
}

// TestLinksEdgeDefaultState: on the embedded default, every WebSocket
// inbound (VLESS v0 and v1, VMess, AnyTLS) gets its edge link with its own
// path, and the other transports are one note.
func TestLinksEdgeDefaultState(t *testing.T) {
	dir := t.TempDir()
	st, err := gateway.LoadOrCreateState(dir)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"links", "-state", dir, "-edge", "edge.example"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if n := strings.Count(stderr.String(), "\n"); n != 1 || !strings.Contains(stderr.String(), "skipped 12 inbounds: vless, vmess, anytls, vless-httpupgrade") {
		t.Errorf("stderr %q, want one note on 12 skipped inbounds", stderr.String())
	}
	want := map[string]string{
		"portico-vless-ws-edge":    "/" + st.RouteKey + "/vless-ws?ed=2048",
		"portico-vless-v1-ws-edge": "/" + st.RouteKey + "/vless-ws?ed=2048",
		"portico-vmess-ws-edge":    "/" + st.RouteKey + "/vmess-ws?ed=2048",
		"portico-anytls-ws-edge":   "/" + st.RouteKey + "/anytls-ws?ed=2048",
	}
	lines := strings.Fields(stdout.String())
	if len(lines) != len(want) {
		t.Fatalf("%d links, want %d:\n%s", len(lines), len(want), stdout.String())
	}
	for _, line := range lines {
		l, err := links.Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := want[l.Name]; !ok || l.Path != p || l.Host != "edge.example" || l.Port != 443 || l.Pin != "" ||
			l.Security != "tls" || l.SNI != "edge.example" || l.HostHeader != "edge.example" || l.Transport != "ws" {
			t.Errorf("%s: %+v", line, l)
		}
		delete(want, l.Name)
	}
}

// TestLinksEdgeErrors: bad -edge flags and configs without a WebSocket
// inbound fail with one line.
func TestLinksEdgeErrors(t *testing.T) {
	cfgFile := edgeTestConfig(t)
	dir := t.TempDir()
	noWS := filepath.Join(dir, "raw.json")
	if err := os.WriteFile(noWS, []byte(fmt.Sprintf(`{
  "server": {"listen": "127.0.0.1:8443", "tls": {"source": "self-signed", "stateDir": %q}},
  "inbounds": [{"tag": "raw", "protocol": "vless", "settings": {"clients": [{"id": %q}], "decryption": "none"}}]
}`, dir, edgeVLESSID)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"URL", []string{"-c", cfgFile, "-edge", "https://edge.example/"}, `-edge "https://edge.example/": want HOST[:PORT]`},
		{"port 0", []string{"-c", cfgFile, "-edge", "edge.example:0"}, `port "0" is not 1-65535`},
		{"port too big", []string{"-c", cfgFile, "-edge", "edge.example:65536"}, `port "65536" is not 1-65535`},
		{"no host", []string{"-c", cfgFile, "-edge", ":443"}, `want HOST[:PORT]`},
		{"bad IPv6", []string{"-c", cfgFile, "-edge", "[2001:db8::1"}, `want HOST[:PORT]`},
		{"colons", []string{"-c", cfgFile, "-edge", "a:b:c"}, `want HOST[:PORT]`},
		{"negative ed", []string{"-c", cfgFile, "-edge", "edge.example", "-edge-ed", "-1"}, "-edge-ed -1: must be 0 (off) to 8192 bytes"},
		{"ed too big", []string{"-c", cfgFile, "-edge", "edge.example", "-edge-ed", "8193"}, "-edge-ed 8193: must be 0 (off) to 8192 bytes"},
		{"relative path", []string{"-c", cfgFile, "-edge", "edge.example", "-edge-path", "tunnel"}, `-edge-path "tunnel": must start with /`},
		{"path with query", []string{"-c", cfgFile, "-edge", "edge.example", "-edge-path", "/t?ed=1"}, `must start with / and have no query`},
		{"path without edge", []string{"-c", cfgFile, "-edge-path", "/t"}, "-edge-path: only with -edge HOST[:PORT]"},
		{"ed without edge", []string{"-c", cfgFile, "-edge-ed", "0"}, "-edge-ed: only with -edge HOST[:PORT]"},
		{"host and edge", []string{"-c", cfgFile, "-edge", "edge.example", "-host", "gw.example"}, "give -host or -edge, not both"},
		{"no WebSocket inbound", []string{"-c", noWS, "-edge", "edge.example"}, "no WebSocket tunnel inbound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"links"}, tt.args...), &stdout, &stderr)
			if code == 0 {
				t.Fatalf("exit 0, printed %q", stdout.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			line := stderr.String()
			if !strings.Contains(line, tt.want) || !strings.HasPrefix(line, "portico: ") || strings.Count(line, "\n") != 1 {
				t.Fatalf("stderr %q, want one line with %q", stderr.String(), tt.want)
			}
		})
	}
}
