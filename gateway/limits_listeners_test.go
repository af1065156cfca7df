package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// startLogged runs a gateway from cfg with its logs in a buffer.
func startLogged(t *testing.T, cfg *Config) (*Gateway, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	g, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	return g, logs
}

// TestQUICListenerLimits: server.limits bound the HTTP/3 listener too,
// counted apart from TCP. With maxConnections 1 a second QUIC connection
// gets no answer while the first is open, and one after it closed does.
func TestQUICListenerLimits(t *testing.T) {
	st, err := LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.DefaultConfig("127.0.0.1:0")
	cfg.Server.Limits = LimitsConfig{MaxConnections: 1}
	g, logs := startLogged(t, cfg)
	if g.h3 == nil || g.h3.Limits == nil {
		t.Fatal("the default config's HTTP/3 listener has no limits")
	}
	url := "https://" + g.Addr().String() + "/"
	get := func(tr *http3.Transport) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	newTransport := func() *http3.Transport {
		return &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	first := newTransport()
	if err := get(first); err != nil {
		t.Fatalf("first QUIC connection: %v", err)
	}
	// A TCP connection is not counted against the QUIC listener's limit.
	tc, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TCP beside a full QUIC listener: %v", err)
	}
	tc.Close()
	second := newTransport()
	defer second.Close()
	if err := get(second); err == nil {
		t.Fatal("a second QUIC connection was served past maxConnections 1")
	}
	if st := g.h3.Limits.Stats(); st.RefusedMax == 0 || st.Open != 1 {
		t.Fatalf("QUIC limit stats %+v; want a refusal counted and 1 open", st)
	}
	if !strings.Contains(logs.String(), "listener=quic") {
		t.Errorf("no log line for the QUIC refusal:\n%s", logs)
	}
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.h3.Limits.Stats().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the closed QUIC connection's slot was not freed: %+v", g.h3.Limits.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	third := newTransport()
	defer third.Close()
	if err := get(third); err != nil {
		t.Fatalf("a QUIC connection after the slot was freed: %v", err)
	}
}

// TestLocalProxyLimits: a local mixed listener's settings.limits close
// connections past them at accept, and timeouts.handshake (not the SOCKS
// or HTTP proxy's own longer defaults) closes a silent client.
func TestLocalProxyLimits(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"timeouts": {"handshake": "1s"},
		"inbounds": [{"tag": "local", "protocol": "mixed", "listen": "127.0.0.1:0",
			"settings": {"limits": {"maxConnections": 2, "maxConnectionsPerIP": 1}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	g, logs := startLogged(t, cfg)
	addr := g.LocalAddrs()[0].String()
	dial := func(from string) net.Conn {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithin reports how long the server took to close c, which sent
	// nothing (or a partial greeting).
	closedWithin := func(c net.Conn) time.Duration {
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != 0 {
			t.Fatalf("read %d bytes, %v; want a close without a byte", n, err)
		}
		return time.Since(start)
	}
	// A SOCKS5 greeting cut short: the handshake deadline closes it.
	held := dial("127.0.0.1")
	held.Write([]byte{5, 1})
	if el := closedWithin(dial("127.0.0.1")); el > 500*time.Millisecond {
		t.Fatalf("a second connection from one IP past maxConnectionsPerIP 1 was closed after %v, not at once", el)
	}
	dial("127.0.0.2").Write([]byte{5})
	if el := closedWithin(dial("127.0.0.3")); el > 500*time.Millisecond {
		t.Fatalf("a third connection past maxConnections 2 was closed after %v, not at once", el)
	}
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("%d log lines for 2 refusals in a burst, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "inbounds[local].settings.limits.maxConnectionsPerIP") {
		t.Errorf("the log line does not name the limit:\n%s", logs)
	}
	if el := closedWithin(held); el < 300*time.Millisecond || el > 2*time.Second {
		t.Fatalf("a stalled SOCKS greeting was closed after %v; want timeouts.handshake (1s)", el)
	}
	// Its slot is free again.
	c := dial("127.0.0.1")
	c.Write([]byte{5, 1, 0})
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	reply := make([]byte, 2)
	if _, err := io.ReadFull(c, reply); err != nil || reply[0] != 5 || reply[1] != 0 {
		t.Fatalf("after the slot was freed: SOCKS reply %x, %v", reply, err)
	}
}
