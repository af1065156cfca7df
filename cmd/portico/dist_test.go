package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckDistConfig: the real-server example in dist/ loads.
func TestCheckDistConfig(t *testing.T) {
	out, errOut, code := portico(t, nil, "check", "-c", filepath.Join("..", "..", "dist", "config.example.json"))
	if code != 0 {
		t.Fatalf("portico check -c dist/config.example.json: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"front door: :443 (TLS acme)",
		"plain HTTP: :80",
		"inbound vless-tls: vless on raw TLS",
		"inbound vless-ws: vless on WebSocket",
		"inbound vmess-tls: vmess on raw TLS",
		"inbound vmess-ws: vmess on WebSocket",
		"inbound anytls: anytls on raw TLS",
		"config OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckServiceUnit: systemd-analyze, where there is one, finds nothing
// wrong with dist/portico.service (run against the test's binary, since
// /usr/local/bin/portico is not installed here).
func TestCheckServiceUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "dist", "portico.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/local/bin/portico run -c /etc/portico/config.json",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"DynamicUser=yes", "StateDirectory=portico", "Environment=XDG_STATE_HOME=/var/lib",
		"RuntimeDirectory=portico", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "ProtectSystem=strict",
	} {
		if !strings.Contains(string(unit), "\n"+want+"\n") {
			t.Errorf("portico.service lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "portico.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/portico", porticoBin)), 0o644)
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
