package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/transports/rawtls"
)

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// startDefault runs the embedded default in a temp state dir and returns a
// VLESS client for it.
func startDefault(t *testing.T, tweak func(*Config)) (*Gateway, *vlessclient.Client, *logBuffer) {
	t.Helper()
	st, err := LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.DefaultConfig("127.0.0.1:0")
	if tweak != nil {
		tweak(cfg)
	}
	logs := &logBuffer{}
	g, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
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
	tlsCfg, err := rawtls.ClientConfig("", g.Pin(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(st.UUID),
		Carrier: &rawtls.Dialer{Address: g.Addr().String(), TLS: tlsCfg}})
	if err != nil {
		t.Fatal(err)
	}
	return g, c, logs
}

// TestShutdownDrains: after Shutdown starts, an open tunnel keeps carrying
// data until it ends by itself, and Shutdown returns once it has.
func TestShutdownDrains(t *testing.T) {
	g, client, _ := startDefault(t, nil)
	target := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	conn, err := client.DialStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func(msg string) error {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return errors.New("echo mismatch")
		}
		return nil
	}
	if err := roundTrip("before"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- g.Shutdown(ctx)
	}()
	time.Sleep(200 * time.Millisecond)
	// New connections are refused...
	if c, err := net.DialTimeout("tcp", g.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("front door still accepting after Shutdown")
	}
	// ...while the open tunnel still works.
	if err := roundTrip("during shutdown"); err != nil {
		t.Fatalf("tunnel broken during drain: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a tunnel open", err)
	default:
	}
	conn.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Shutdown did not return after the last tunnel ended")
	}
}

// TestShutdownCutsAtDeadline: tunnels still open at the drain deadline are
// closed and Shutdown reports it.
func TestShutdownCutsAtDeadline(t *testing.T) {
	g, client, logs := startDefault(t, nil)
	conn, err := client.DialStream(context.Background(), protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("x"))
	io.ReadFull(conn, make([]byte, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Shutdown took %v", el)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("tunnel still open after the drain deadline (read: %v)", err)
	}
	if !strings.Contains(logs.String(), "tunnels still open at the deadline are cut") {
		t.Errorf("no log line about cut tunnels:\n%s", logs)
	}
}

// TestRoutingBlock: a rule sends a destination to the block outbound; the
// client's dial fails and the log says so, while other targets pass.
func TestRoutingBlock(t *testing.T) {
	target := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	g, client, logs := startDefault(t, func(c *Config) {
		c.Outbounds = []OutboundConfig{{Tag: "direct", Protocol: "direct"}, {Tag: "block", Protocol: "block"}}
		c.Routing.Rules = []RuleConfig{{Domain: []string{"blocked.test"}, OutboundTag: "block"}}
		if err := c.check(); err != nil {
			t.Fatal(err)
		}
	})
	_ = g
	conn, err := client.DialStream(context.Background(), protocols.DomainAddr("www.blocked.test", 80))
	if err == nil {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		conn.Write([]byte("x"))
		if n, rerr := conn.Read(make([]byte, 1)); n > 0 || rerr == nil {
			t.Fatal("blocked destination answered")
		}
		conn.Close()
	}
	ok, err := client.DialStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	ok.SetDeadline(time.Now().Add(3 * time.Second))
	ok.Write([]byte("y"))
	if _, err := io.ReadFull(ok, make([]byte, 1)); err != nil {
		t.Fatalf("allowed destination: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(logs.String(), "outbound=block") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "target=www.blocked.test:80") || !strings.Contains(logs.String(), "blocked by policy") {
		t.Fatalf("no block log line:\n%s", logs)
	}
}

// TestWrongKeyFallsBackQuietly: a VLESS client with an unknown UUID gets the
// site's answer, and the debug log says why without printing the UUID.
func TestWrongKeyFallsBackQuietly(t *testing.T) {
	g, _, logs := startDefault(t, nil)
	wrong := uuid.New()
	tlsCfg, _ := rawtls.ClientConfig("", g.Pin(), false, nil)
	c, err := (&rawtls.Dialer{Address: g.Addr().String(), TLS: tlsCfg}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A VLESS v0 request for 127.0.0.1:80 with the wrong id.
	req := append([]byte{0}, wrong[:]...)
	req = append(req, 0, 1, 0, 80, 1, 127, 0, 0, 1)
	c.Write(req)
	c.(interface{ CloseWrite() error }).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, _ := io.ReadAll(c)
	if !bytes.HasPrefix(answer, []byte("HTTP/1.1 400 Bad Request")) {
		t.Fatalf("wrong key answered %q", answer)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(logs.String(), "fallback to decoy") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	l := logs.String()
	if !strings.Contains(l, `reason="vless: unknown user id"`) {
		t.Fatalf("fallback not logged with its reason:\n%s", l)
	}
	if strings.Contains(l, wrong.String()) || strings.Contains(strings.ToLower(l), hex.EncodeToString(wrong[:])) {
		t.Fatalf("log shows the key:\n%s", l)
	}
}

// TestRawInboundByALPN: a raw-TLS inbound restricted to an ALPN is reached
// only by clients that negotiate it; the front door offers it by itself.
func TestRawInboundByALPN(t *testing.T) {
	target := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	var id string
	g, _, _ := startDefault(t, func(c *Config) {
		c.Inbounds = c.Inbounds[:1] // VLESS on raw TLS only
		c.Inbounds[0].StreamSettings = &InboundStream{Network: "tcp", ALPN: []string{"x-portico"}}
		id = c.Inbounds[0].settings.(*VLESSInbound).Clients[0].ID
		if err := c.check(); err != nil {
			t.Fatal(err)
		}
	})
	for _, tt := range []struct {
		alpn []string
		ok   bool
	}{{[]string{"x-portico"}, true}, {[]string{"h2", "http/1.1"}, false}, {nil, false}} {
		tlsCfg, _ := rawtls.ClientConfig("", g.Pin(), false, tt.alpn)
		client, _ := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(id),
			Carrier: &rawtls.Dialer{Address: g.Addr().String(), TLS: tlsCfg}})
		conn, err := client.DialStream(context.Background(), target)
		if err != nil {
			t.Fatal(err)
		}
		// The site, given VLESS bytes, waits for a line end that never
		// comes; a short deadline says "no tunnel" soon enough.
		conn.SetDeadline(time.Now().Add(time.Second))
		conn.Write([]byte("hi"))
		buf := make([]byte, 2)
		_, err = io.ReadFull(conn, buf)
		conn.Close()
		if got := err == nil && string(buf) == "hi"; got != tt.ok {
			t.Errorf("ALPN %v: tunnel works = %v, want %v (err %v)", tt.alpn, got, tt.ok, err)
		}
	}
}
