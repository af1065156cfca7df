package acme

import (
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pairFiles is a certificate/key pair on disk with its pin.
type pairFiles struct {
	cert, key []byte
	pin       string
}

func newPair(t *testing.T, host string) pairFiles {
	t.Helper()
	dir := t.TempDir()
	s, err := SelfSigned(dir, []string{host})
	if err != nil {
		t.Fatal(err)
	}
	return pairFiles{cert: read(t, filepath.Join(dir, "cert.pem")), key: read(t, filepath.Join(dir, "key.pem")), pin: s.Pin()}
}

// install writes p to the paths and moves both mtimes to at, the way a
// deploy tool replaces them (and so that the change is visible even on file
// systems with coarse timestamps).
func (p pairFiles) install(t *testing.T, certFile, keyFile string, at time.Time) {
	t.Helper()
	write(t, certFile, p.cert)
	write(t, keyFile, p.key)
	touch(t, at, certFile, keyFile)
}

func touch(t *testing.T, at time.Time, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeClock is a settable clock for FileSource.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// servedPin handshakes against src and returns the pin of what it served.
func servedPin(t *testing.T, src Source) string {
	t.Helper()
	client := &tls.Config{InsecureSkipVerify: true} // we only read the pin
	leaf, err := handshake(t, &tls.Config{GetCertificate: src.GetCertificate}, client)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return PinOf(leaf.Raw)
}

func TestFilesReloadsAndKeepsOldPairOnBrokenReplacement(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	a, b := newPair(t, "a.example"), newPair(t, "b.example")
	base := time.Now().Add(-time.Hour)
	a.install(t, certFile, keyFile, base)

	rec := &recordingHandler{}
	f, err := Files(certFile, keyFile, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now()}
	f.now = clock.now

	if got := servedPin(t, f); got != a.pin {
		t.Fatalf("serving %s, want pair A %s", got, a.pin)
	}

	b.install(t, certFile, keyFile, base.Add(time.Minute))
	clock.advance(500 * time.Millisecond)
	if got := servedPin(t, f); got != a.pin {
		t.Error("files were checked again within a second of the last check")
	}
	clock.advance(600 * time.Millisecond) // 1.1 s since the last check
	if got := servedPin(t, f); got != b.pin {
		t.Fatalf("after >1 s serving %s, want pair B %s", got, b.pin)
	}

	// A broken replacement: B stays in service, and the failure is logged
	// once, not once per handshake.
	write(t, certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
	touch(t, base.Add(2*time.Minute), certFile)
	for range 3 {
		clock.advance(1100 * time.Millisecond)
		if got := servedPin(t, f); got != b.pin {
			t.Fatalf("after a broken replacement serving %s, want pair B %s", got, b.pin)
		}
	}
	if n := rec.count(slog.LevelError); n != 1 {
		t.Errorf("broken replacement logged %d errors, want 1", n)
	}

	// A key that does not match the certificate is broken too.
	write(t, certFile, a.cert)
	write(t, keyFile, b.key)
	touch(t, base.Add(3*time.Minute), certFile, keyFile)
	clock.advance(1100 * time.Millisecond)
	if got := servedPin(t, f); got != b.pin {
		t.Fatalf("after a mismatched replacement serving %s, want pair B %s", got, b.pin)
	}
	if n := rec.count(slog.LevelError); n != 2 {
		t.Errorf("second, different breakage logged %d errors in total, want 2", n)
	}

	// Fixing the files recovers.
	a.install(t, certFile, keyFile, base.Add(4*time.Minute))
	clock.advance(1100 * time.Millisecond)
	if got := servedPin(t, f); got != a.pin {
		t.Fatalf("after the fix serving %s, want pair A %s", got, a.pin)
	}
}

// The same reload on the real clock, as the gateway runs it.
func TestFilesReloadRealClock(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a, b := newPair(t, "a.example"), newPair(t, "b.example")
	now := time.Now()
	a.install(t, certFile, keyFile, now.Add(-time.Minute))

	f, err := Files(certFile, keyFile, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := servedPin(t, f); got != a.pin {
		t.Fatalf("serving %s, want pair A", got)
	}
	b.install(t, certFile, keyFile, now.Add(time.Minute)) // mtime forward
	time.Sleep(1100 * time.Millisecond)
	if got := servedPin(t, f); got != b.pin {
		t.Fatalf("after 1.1 s serving %s, want pair B %s", got, b.pin)
	}
}

func TestFilesStartErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	a, b := newPair(t, "a.example"), newPair(t, "b.example")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	write(t, certFile, a.cert)
	write(t, keyFile, a.key)
	write(t, garbage, []byte("hello"))
	otherKey := filepath.Join(dir, "other-key.pem")
	write(t, otherKey, b.key)

	tests := []struct {
		name, cert, key string
		mention         []string
	}{
		{"missing certificate", missing, keyFile, []string{missing}},
		{"missing key", certFile, missing, []string{missing}},
		{"certificate not PEM", garbage, keyFile, []string{garbage}},
		{"key not PEM", certFile, garbage, []string{garbage}},
		{"key of another certificate", certFile, otherKey, []string{certFile, otherKey}},
		{"key given as certificate", keyFile, certFile, []string{keyFile}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Files(tc.cert, tc.key, nil)
			assertOneLineError(t, err, "acme: files: ")
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not name %s", err, m)
				}
			}
		})
	}

	if _, err := Files(certFile, keyFile, nil); err != nil {
		t.Errorf("valid pair: %v", err)
	}
}
