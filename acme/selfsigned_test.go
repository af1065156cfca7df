package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSelfSignedCreatesFilesAndKeepsThem(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls") // does not exist yet
	s, err := SelfSigned(dir, nil)
	if err != nil {
		t.Fatal(err)
	}

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cert.pem")); err != nil {
		t.Errorf("cert.pem: %v", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	leaf := s.Leaf()
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) {
		t.Errorf("DNSNames = %v, want [localhost]", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v, want [127.0.0.1 ::1]", leaf.IPAddresses)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("public key %T is not ECDSA P-256", leaf.PublicKey)
	}
	if life := time.Until(leaf.NotAfter); life < 9*365*24*time.Hour || life > 11*365*24*time.Hour {
		t.Errorf("validity left = %v, want about 10 years", life)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(s.Pin()) {
		t.Errorf("Pin() = %q, want 64 lowercase hex digits", s.Pin())
	}
	if s.Pin() != PinOf(leaf.Raw) {
		t.Errorf("Pin() = %s, PinOf(leaf) = %s", s.Pin(), PinOf(leaf.Raw))
	}

	again, err := SelfSigned(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Pin() != s.Pin() {
		t.Errorf("second call regenerated the certificate: pin %s, was %s", again.Pin(), s.Pin())
	}
	// The same hosts spelled differently are still covered.
	spelled, err := SelfSigned(dir, []string{"LOCALHOST.", "[::1]"})
	if err != nil {
		t.Fatal(err)
	}
	if spelled.Pin() != s.Pin() {
		t.Error("hosts already covered (different spelling) caused a regeneration")
	}
}

func TestSelfSignedRegeneratesWhenHostsNotCovered(t *testing.T) {
	dir := t.TempDir()
	a, err := SelfSigned(dir, []string{"a.example"})
	if err != nil {
		t.Fatal(err)
	}
	ab, err := SelfSigned(dir, []string{"a.example", "b.example", "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	if ab.Pin() == a.Pin() {
		t.Fatal("new hosts did not regenerate the certificate")
	}
	for _, h := range []string{"a.example", "b.example", "192.0.2.7"} {
		if err := ab.Leaf().VerifyHostname(h); err != nil {
			t.Errorf("regenerated certificate does not cover %s: %v", h, err)
		}
	}
	// A subset is covered: keep the certificate (and the pin clients hold).
	b, err := SelfSigned(dir, []string{"b.example"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Pin() != ab.Pin() {
		t.Error("a subset of the hosts regenerated the certificate")
	}
	// A wildcard host is kept too, though no hostname check matches it.
	w, err := SelfSigned(dir, []string{"*.w.example"})
	if err != nil {
		t.Fatal(err)
	}
	if w2, err := SelfSigned(dir, []string{"*.w.example"}); err != nil || w2.Pin() != w.Pin() {
		t.Errorf("wildcard host regenerated on every call (%v)", err)
	}
	if _, err := SelfSigned(dir, []string{"a.example", "b.example"}); err != nil {
		t.Fatal(err)
	}
	ab, err = SelfSigned(dir, []string{"a.example", "b.example"})
	if err != nil {
		t.Fatal(err)
	}
	// And the regenerated pair is what is on disk now.
	reread, err := SelfSigned(dir, []string{"a.example", "b.example"})
	if err != nil {
		t.Fatal(err)
	}
	if reread.Pin() != ab.Pin() {
		t.Error("regenerated certificate was not persisted")
	}
}

func TestSelfSignedUnwritableDir(t *testing.T) {
	// Running as root defeats permission bits, so make the directory
	// impossible instead: a path under a regular file.
	file := filepath.Join(t.TempDir(), "plainfile")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := SelfSigned(filepath.Join(file, "tls"), nil)
	assertOneLineError(t, err, "acme: self-signed: ")
	if !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("error %q does not give the cause", err)
	}
}

func TestSelfSignedCorruptFiles(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		mention string
	}{
		{"garbage certificate", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "cert.pem"), []byte("not a certificate"))
		}, "cert.pem"},
		{"truncated certificate", func(t *testing.T, dir string) {
			pem := read(t, filepath.Join(dir, "cert.pem"))
			write(t, filepath.Join(dir, "cert.pem"), pem[:len(pem)/2])
		}, "cert.pem"},
		{"garbage key", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "key.pem"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
		}, "key.pem"},
		{"key of another certificate", func(t *testing.T, dir string) {
			foreign := t.TempDir()
			if _, err := SelfSigned(foreign, nil); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, "key.pem"), read(t, filepath.Join(foreign, "key.pem")))
		}, "key.pem"},
		{"key missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "key.pem")); err != nil {
				t.Fatal(err)
			}
		}, "key.pem"},
		{"certificate missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil {
				t.Fatal(err)
			}
		}, "cert.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := SelfSigned(dir, nil); err != nil {
				t.Fatal(err)
			}
			tc.corrupt(t, dir)
			before := snapshot(t, dir)
			_, err := SelfSigned(dir, nil)
			assertOneLineError(t, err, "acme: self-signed: ")
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not name %s", err, tc.mention)
			}
			// A corrupt pair is reported, not silently replaced.
			if after := snapshot(t, dir); after != before {
				t.Error("corrupt files were modified")
			}
		})
	}
}

func TestSelfSignedPinnedHandshake(t *testing.T) {
	s, err := SelfSigned(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{GetCertificate: s.GetCertificate}

	leaf, err := handshake(t, server, pinnedClient(s.Pin()))
	if err != nil {
		t.Fatalf("handshake with the right pin: %v", err)
	}
	if PinOf(leaf.Raw) != s.Pin() {
		t.Errorf("served leaf pin %s, want %s", PinOf(leaf.Raw), s.Pin())
	}

	// The same client with any other pin must refuse the server.
	wrong := strings.Repeat("0", 64)
	if _, err := handshake(t, server, pinnedClient(wrong)); !errors.Is(err, errPinMismatch) {
		t.Errorf("handshake with a wrong pin: err = %v, want %v", err, errPinMismatch)
	}
	// And a client verifying the usual way does not trust it.
	if _, err := handshake(t, server, &tls.Config{ServerName: "localhost"}); err == nil {
		t.Error("a CA-verifying client accepted the self-signed certificate")
	}
}

func assertOneLineError(t *testing.T, err error, prefix string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q lacks prefix %q", msg, prefix)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshot is the contents of cert.pem and key.pem, for "unchanged" checks.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{"cert.pem", "key.pem"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err == nil {
			b.Write(data)
		}
		b.WriteString("|")
	}
	return b.String()
}
