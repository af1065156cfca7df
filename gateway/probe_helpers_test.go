package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/transports/quic"
)

// probeEnv is the embedded default on loopback and, beside it, the same
// decoy site served alone over TLS: the answer every failed probe of the
// gateway probeMust be indistinguishable from.
type probeEnv struct {
	st   *State
	g    *Gateway
	gw   string // the gateway's front door
	site string // the site alone
	logs *logBuffer
}

// startProbeEnv starts both. handshake, when not zero, is the gateway's
// timeouts.handshake; the site alone gets the same header timeout, as the
// front door gives its own HTTP server (NewSiteServer).
func startProbeEnv(t testing.TB, handshake time.Duration) *probeEnv {
	t.Helper()
	st, err := LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.DefaultConfig("127.0.0.1:0")
	if handshake != 0 {
		cfg.Timeouts.Handshake = Duration(handshake)
	}
	logs := &logBuffer{}
	g, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
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
	return &probeEnv{st: st, g: g, gw: g.Addr().String(), site: siteAloneTLS(t, g.handshakeTimeout(), g.Addr().(*net.TCPAddr).Port), logs: logs}
}

// siteAloneTLS serves the built-in site with the HTTP server the front door
// uses (NewSiteServer, same header and idle timeouts), behind a plain TLS
// termination with no classifier and no protocol: what "the site alone"
// means. Like the front door it hands net/http a wrapped conn, so HTTP/1.1
// and prior-knowledge HTTP/2 are served exactly as behind the front door.
//
// The embedded default also serves HTTP/3, so its site advertises it with
// Alt-Svc on every answer (quic.AltSvc), as a modern site does: the site
// alone carries the same header, with altSvcPort.
func siteAloneTLS(t testing.TB, headerTimeout time.Duration, altSvcPort int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{testCert(t)}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	cl := newChanListener(ln.Addr())
	srv := NewSiteServer(quic.AltSvc(SiteHandler(BuiltinSite()), altSvcPort), slog.New(slog.DiscardHandler), headerTimeout, 2*time.Minute)
	go srv.Serve(cl)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return
				}
				st := tc.ConnectionState()
				if !cl.push(newPrefixConn(tc, &st, nil)) {
					c.Close()
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return ln.Addr().String()
}

// probeLineEnd is what a prober sends to a connection that is still open after
// its probe: an HTTP server that was waiting for a line end answers now.
var probeLineEnd = []byte("\r\n\r\n")

// probe is one case: bytes sent over a fresh TLS connection.
type probe struct {
	name string
	data []byte
	// closeWrite half-closes after the probe (TLS close_notify).
	closeWrite bool
	// afterAuth: the bytes authenticate to a protocol (a complete valid
	// key), so the protocol's own behaviour is acceptable; a difference
	// from the site is logged, not failed.
	afterAuth bool
	// noLineEnd: do not send probeLineEnd to a connection left open (HTTP/2,
	// whose error frames' order varies between two runs of the site).
	noLineEnd bool
	alpn      []string
}

// probeAnswer is what a prober observes.
type probeAnswer struct {
	answer []byte // every byte read within the window, Date headers blanked
	end    string // "eof" (the server closed), "reset", or "open" (still waiting at the end of the window)
	// When the connection was still open: the answer and end after probeLineEnd.
	answer2 []byte
	end2    string
}

func (a probeAnswer) String() string {
	s := fmt.Sprintf("%q [%s]", a.answer, a.end)
	if a.end == "open" && a.end2 != "" {
		s += fmt.Sprintf(" then, after CRLFCRLF: %q [%s]", a.answer2, a.end2)
	}
	return s
}

func (a probeAnswer) equal(b probeAnswer) bool {
	return bytes.Equal(a.answer, b.answer) && a.end == b.end && bytes.Equal(a.answer2, b.answer2) && a.end2 == b.end2
}

// probeReadWindow reads until the server closes or window passes.
func probeReadWindow(c net.Conn, window time.Duration) ([]byte, string) {
	c.SetReadDeadline(time.Now().Add(window))
	var buf bytes.Buffer
	_, err := io.Copy(&buf, c)
	end := "eof"
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout():
		end = "open"
	default:
		end = "reset"
	}
	return dateRe.ReplaceAll(buf.Bytes(), []byte("Date: X\r\n")), end
}

// probeObserve sends p to addr and records what comes back within window.
func probeObserve(addr string, p probe, window time.Duration) (probeAnswer, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: p.alpn})
	if err != nil {
		return probeAnswer{}, err
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(p.data); err != nil {
		return probeAnswer{}, fmt.Errorf("write probe: %w", err)
	}
	if p.closeWrite {
		c.CloseWrite()
	}
	var a probeAnswer
	a.answer, a.end = probeReadWindow(c, window)
	if a.end == "open" && !p.closeWrite && !p.noLineEnd {
		if _, err := c.Write(probeLineEnd); err != nil {
			a.end2 = "write failed"
			return a, nil
		}
		a.answer2, a.end2 = probeReadWindow(c, window)
	}
	return a, nil
}

// probeRunProbes sends every probe to both servers (each pair at the same time,
// pairs in parallel) and returns the mismatches.
func probeRunProbes(t *testing.T, env *probeEnv, probes []probe, window time.Duration) (mismatches int) {
	t.Helper()
	sem := make(chan struct{}, 24)
	var mu sync.Mutex
	var wg sync.WaitGroup
	afterAuthDiff := 0
	for _, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var got, want probeAnswer
			var gerr, serr error
			var pair sync.WaitGroup
			pair.Add(2)
			go func() { defer pair.Done(); got, gerr = probeObserve(env.gw, p, window) }()
			go func() { defer pair.Done(); want, serr = probeObserve(env.site, p, window) }()
			pair.Wait()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case gerr != nil || serr != nil:
				mismatches++
				t.Errorf("probe %s: gateway err %v, site err %v", p.name, gerr, serr)
			case p.afterAuth:
				same := "the same as the site's"
				if !got.equal(want) {
					afterAuthDiff++
					same = "differs from the site's: " + want.String()
				}
				t.Logf("probe %s (after authentication, the protocol's own behaviour):\n  gateway: %s\n  %s", p.name, got, same)
			case got.equal(want):
			default:
				mismatches++
				t.Errorf("MISMATCH probe %s (%d bytes)\n  gateway answers: %s\n  site answers:    %s", p.name, len(p.data), got, want)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d probe cases, %d mismatches, %d after-authentication cases differing from the site (allowed, see the cases)", len(probes), mismatches, afterAuthDiff)
	return mismatches
}

// probeKsD is the two-sample Kolmogorov–Smirnov statistic: the largest distance
// between the two empirical distribution functions.
func probeKsD(a, b []time.Duration) float64 {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	var i, j int
	d := 0.0
	for i < len(a) && j < len(b) {
		x := min(a[i], b[j])
		for i < len(a) && a[i] == x {
			i++
		}
		for j < len(b) && b[j] == x {
			j++
		}
		d = math.Max(d, math.Abs(float64(i)/float64(len(a))-float64(j)/float64(len(b))))
	}
	return d
}

// probeQuantile of a sample, q in [0, 1] (nearest rank).
func probeQuantile(s []time.Duration, q float64) time.Duration {
	s = slices.Clone(s)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
