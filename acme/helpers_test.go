package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testWriter forwards to t.Log until the test ends. Background goroutines of
// certmagic or Pebble may log a moment after; t.Log would panic then, so
// late lines are dropped.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// newTestWriter returns a writer into the test's log (shown on failure or
// with -v), closed when the test's cleanups run.
func newTestWriter(t testing.TB) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// recordingHandler keeps the records it is given, for tests that assert on
// what was logged.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingWith{h, as}
}
func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

// recordingWith is a recordingHandler after WithAttrs: it adds its
// attributes to each record (after the record's own; order is not what the
// tests check).
type recordingWith struct {
	parent *recordingHandler
	attrs  []slog.Attr
}

func (h recordingWith) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingWith) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	return h.parent.Handle(ctx, r)
}
func (h recordingWith) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingWith{h.parent, append(slices.Clone(h.attrs), as...)}
}
func (h recordingWith) WithGroup(string) slog.Handler { return h }

// countMessage counts the records whose message contains sub.
func (h *recordingHandler) countMessage(sub string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if strings.Contains(r.Message, sub) {
			n++
		}
	}
	return n
}

// teeHandler sends every record to both handlers.
type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.a.Enabled(ctx, l) || h.b.Enabled(ctx, l)
}
func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errA, errB error
	if h.a.Enabled(ctx, r.Level) {
		errA = h.a.Handle(ctx, r.Clone())
	}
	if h.b.Enabled(ctx, r.Level) {
		errB = h.b.Handle(ctx, r.Clone())
	}
	return errors.Join(errA, errB)
}
func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}
func (h teeHandler) WithGroup(g string) slog.Handler {
	return teeHandler{h.a.WithGroup(g), h.b.WithGroup(g)}
}

func (h *recordingHandler) count(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level {
			n++
		}
	}
	return n
}

// handshake runs one TLS handshake over loopback TCP between a server using
// serverCfg and a client using clientCfg, and returns the leaf the client
// received or the client's error.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s := tls.Server(c, serverCfg)
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		_ = s.Handshake()
		_ = s.Close()
	}()
	defer func() { <-done }()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// pinnedClient returns a client config that trusts exactly the certificate
// whose pin is pin, the way Portico clients verify a self-signed gateway.
func pinnedClient(pin string) *tls.Config {
	return &tls.Config{
		// Chain verification is replaced, not skipped: the pin is checked
		// below and nothing else can pass.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || PinOf(raw[0]) != pin {
				return errPinMismatch
			}
			return nil
		},
	}
}

var errPinMismatch = errors.New("certificate does not match pin")
