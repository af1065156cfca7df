package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
)

const limitsUUID = "b831381d-6324-4d53-ad4f-8cda48b30811"

// startLimited runs a gateway from JSON (a VLESS inbound on raw TLS, the
// given handshake timeout and server.limits) and returns it with its logs.
func startLimited(t *testing.T, handshake time.Duration, limits string) (*Gateway, *logBuffer) {
	t.Helper()
	js := fmt.Sprintf(`{"server": {"listen": "127.0.0.1:0", "tls": {"stateDir": %q}, "limits": %s},
		"timeouts": {"handshake": %q},
		"inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": %q}]}}]}`,
		t.TempDir(), limits, handshake.String(), limitsUUID)
	cfg, err := ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return startLogged(t, cfg)
}

// limitsVLESSHeader is a valid VLESS v0 request for limitsUUID to target.
func limitsVLESSHeader(t *testing.T, target *net.TCPAddr) []byte {
	id := uuid.MustParse(limitsUUID)
	b := append([]byte{0}, id[:]...)
	b = append(b, 0, 1, byte(target.Port>>8), byte(target.Port), 1)
	return append(b, target.IP.To4()...)
}

// trickleBytes writes b one byte per interval until it is all sent, a write
// fails or stop is closed.
func trickleBytes(c net.Conn, b []byte, interval time.Duration, stop <-chan struct{}) {
	for _, x := range b {
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
		if _, err := c.Write([]byte{x}); err != nil {
			return
		}
	}
}

// goClientHello is the first TLS record a Go client sends.
func goClientHello(t *testing.T) []byte {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		tls.Client(b, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}).Handshake()
		b.Close()
	}()
	buf := make([]byte, 1<<14)
	n, err := a.Read(buf)
	if err != nil || n < 5 || buf[0] != 22 {
		t.Fatalf("no ClientHello: %d bytes, %v", n, err)
	}
	return buf[:n]
}

// TestSlowloris: with timeouts.handshake 1 s, a client that completes TLS
// and then sends a valid VLESS header one byte per 100 ms never gets a
// tunnel, and is closed at the deadline; so is one that sends nothing
// after TLS, one that trickles its ClientHello, and one that trickles an
// HTTP header or body to the site. "Closed at the deadline" is measured
// from the dial: between 0.9× and 3× the timeout.
func TestSlowloris(t *testing.T) {
	const timeout = time.Second
	g, _ := startLimited(t, timeout, `{}`)
	addr := g.Addr().String()

	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	var tunnels atomic.Int32
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			tunnels.Add(1)
			c.Close()
		}
	}()
	hdr := limitsVLESSHeader(t, target.Addr().(*net.TCPAddr))
	hello := goClientHello(t)

	cases := []struct {
		name   string
		tls    bool
		fast   []byte // sent at once after the (TLS) connection is up
		slow   []byte // then one byte per 100 ms (per 250 ms with slower)
		slower bool
	}{
		{name: "vless header trickled", tls: true, slow: hdr},
		{name: "vless uuid then trickle", tls: true, fast: hdr[:17], slow: hdr[17:], slower: true}, // 9 bytes: 2.25 s
		{name: "silent after tls", tls: true},
		{name: "clienthello trickled", slow: hello},
		{name: "http header trickled", tls: true, fast: []byte("GET / HTTP/1.1\r\nHost: localhost\r\n"), slow: bytes.Repeat([]byte("X-Slow: 1\r\n"), 10)},
		{name: "http body trickled", tls: true, fast: []byte("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"), slow: bytes.Repeat([]byte("x"), 100)},
		{name: "site garbage trickled", tls: true, slow: []byte("\x16garbage that never ends with a newline")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			var c net.Conn
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.tls {
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			if len(tc.fast) > 0 {
				if _, err := c.Write(tc.fast); err != nil {
					t.Fatal(err)
				}
			}
			stop := make(chan struct{})
			defer close(stop)
			interval := 100 * time.Millisecond
			if tc.slower {
				interval = 250 * time.Millisecond
			}
			go trickleBytes(c, tc.slow, interval, stop)
			c.SetReadDeadline(time.Now().Add(10 * timeout))
			got, err := io.ReadAll(c)
			el := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("still open after %v (read %q)", el, got)
			}
			if el < timeout*9/10 || el > 3*timeout {
				t.Fatalf("closed after %v; want %v to %v (read %q, %v)", el, timeout*9/10, 3*timeout, got, err)
			}
			if strings.HasPrefix(tc.name, "http body") {
				if !bytes.HasPrefix(got, []byte("HTTP/1.1 405")) {
					t.Errorf("the site answered %q", got)
				}
			} else if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 ")) {
				t.Errorf("read %q", got)
			}
			t.Logf("closed after %v", el.Round(10*time.Millisecond))
		})
	}
	t.Cleanup(func() {
		if n := tunnels.Load(); n != 0 {
			t.Errorf("%d slow clients reached the target", n)
		}
		// The server counts a timeout after it closes the connection, so
		// the client may see the close first: give the count a moment.
		for deadline := time.Now().Add(2 * time.Second); g.front.LimitStats().HandshakeTimeouts < 4 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := g.front.LimitStats().HandshakeTimeouts; n < 4 {
			t.Errorf("%d handshake timeouts counted, want at least 4", n)
		}
	})
}

// TestDeadlineHandoverKeepsDeadline: a header cut short at the deadline
// (undecided, or refused by the protocol) reaches the decoy with the
// deadline still on: the site answers those bytes and closes when the site
// alone would (at its own header timeout, the same value), without a fresh
// header timeout, which would double a slow client's time.
func TestDeadlineHandoverKeepsDeadline(t *testing.T) {
	const timeout = 500 * time.Millisecond
	withProto := startFront(t, []RawProtocol{{Name: "fake", Match: fakeProto{1}.match, Server: fakeProto{1}}}, timeout)
	siteOnly := startFront(t, nil, timeout)
	stall := func(addr string, b []byte) ([]byte, time.Duration) {
		c := dialTLS(t, addr)
		start := time.Now()
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		return got, time.Since(start)
	}
	for _, b := range [][]byte{[]byte("PTS"), []byte("PTST\x01")} {
		want, siteTime := stall(siteOnly.addr, b)
		got, el := stall(withProto.addr, b)
		if !bytes.Equal(got, want) {
			t.Errorf("%q: answered %q; the site alone %q", b, got, want)
		}
		if el > timeout+300*time.Millisecond || el < timeout*9/10 {
			t.Errorf("%q: closed after %v (the site alone: %v); the deadline was %v", b, el, siteTime, timeout)
		}
	}
}

// countingMatcher always wants more, and records the longest prefix it saw.
type countingMatcher struct{ max atomic.Int64 }

func (m *countingMatcher) match(prefix []byte) (bool, error) {
	for {
		old := m.max.Load()
		if int64(len(prefix)) <= old || m.max.CompareAndSwap(old, int64(len(prefix))) {
			break
		}
	}
	return false, protocols.ErrNeedMore
}

// TestGarbageBounded: 2 MiB of garbage without a newline. The front door
// decides after peekLimit bytes at most (even with a matcher that always
// wants more) and the site then ends the connection at its own header
// limit (net/http's 1 MiB), exactly as the site alone does.
func TestGarbageBounded(t *testing.T) {
	m := &countingMatcher{}
	withProto := startFront(t, []RawProtocol{{Name: "greedy", Match: m.match, Server: fakeProto{1}}}, 5*time.Second)
	siteOnly := startFront(t, nil, 5*time.Second)
	garbage := bytes.Repeat([]byte{0x16, 0xfe, 'a', 0}, 512<<10) // 2 MiB, no '\n'
	flood := func(addr string) []byte {
		c := dialTLS(t, addr)
		go c.Write(garbage)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("not closed after 10 s (read %q)", got)
		}
		return dateRe.ReplaceAll(got, []byte("Date: X\r\n"))
	}
	want := flood(siteOnly.addr)
	got := flood(withProto.addr)
	if !bytes.Equal(got, want) {
		t.Errorf("the front door answered\n%q\nthe site alone\n%q", got, want)
	}
	if !bytes.HasPrefix(want, []byte("HTTP/1.1 431")) {
		t.Errorf("the site answered %q", want)
	}
	if n := m.max.Load(); n < peekLimit || n > 2*peekLimit {
		t.Errorf("the matcher saw at most %d bytes; want the classifier to stop between %d and %d", n, peekLimit, 2*peekLimit)
	}
}

// TestConnectionLimits: maxConnectionsPerIP 2 and maxConnections 3. A
// third connection from 127.0.0.1 is closed at once while 127.0.0.2 still
// gets in; a fourth overall is closed too; a closed connection frees its
// slot; refusals are counted and logged once per interval.
func TestConnectionLimits(t *testing.T) {
	// The connections send no header; the handshake timeout must not close
	// them while the test runs, however slow the machine.
	g, logs := startLimited(t, time.Minute, `{"maxConnections": 3, "maxConnectionsPerIP": 2}`)
	addr := g.Addr().String()
	dial := func(from string) (*tls.Conn, error) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(2 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		tc.SetDeadline(time.Time{})
		return tc, nil
	}
	mustDial := func(from string) *tls.Conn {
		t.Helper()
		c, err := dial(from)
		if err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	refused := func(from string) {
		t.Helper()
		start := time.Now()
		c, err := dial(from)
		if err == nil {
			c.Close()
			t.Fatalf("from %s: a connection past the limit got TLS", from)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("from %s: refused after %v, not at once", from, el)
		}
	}
	a1 := mustDial("127.0.0.1")
	mustDial("127.0.0.1")
	refused("127.0.0.1")
	if _, err := dial("127.0.0.2"); err != nil {
		t.Skipf("cannot dial from 127.0.0.2 (%v)", err)
	}
	// That one got in: three are open, the overall bound.
	for range 20 {
		refused("127.0.0.2")
	}
	st := g.front.LimitStats()
	if st.RefusedPerIP != 1 || st.RefusedMax != 20 || st.Open != 3 {
		t.Fatalf("stats %+v; want 1 per-IP and 20 overall refusals, 3 open", st)
	}
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("%d log lines for 21 refusals in a burst, want 1:\n%s", n, logs)
	}
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.front.LimitStats().Open != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %+v", g.front.LimitStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustDial("127.0.0.1")
}

// TestConnectionLimitsTunnel: a tunnel holds its slot until it ends.
func TestConnectionLimitsTunnel(t *testing.T) {
	g, _ := startLimited(t, 5*time.Second, `{"maxConnections": 1}`)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	c := dialTLS(t, g.Addr().String())
	msg := append(limitsVLESSHeader(t, echo.Addr().(*net.TCPAddr)), "ping"...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply := make([]byte, 6)
	if _, err := io.ReadFull(c, reply); err != nil || string(reply[2:]) != "ping" {
		t.Fatalf("tunnel: %q %v", reply, err)
	}
	if _, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Fatal("a second connection got in past maxConnections 1")
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.front.LimitStats().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the tunnel's slot was not freed: %+v", g.front.LimitStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRateLogBurst: 1,000 hits in a burst, from many goroutines, make one
// line; the next interval's line carries the count held back.
func TestRateLogBurst(t *testing.T) {
	var buf logBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	r := &rateLog{now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				r.log(log, slog.LevelWarn, 10*time.Second, "limit hit")
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(buf.String(), "limit hit"); n != 1 {
		t.Fatalf("%d lines for a burst of 1000:\n%s", n, buf.String())
	}
	mu.Lock()
	now = now.Add(9 * time.Second)
	mu.Unlock()
	r.log(log, slog.LevelWarn, 10*time.Second, "limit hit")
	if n := strings.Count(buf.String(), "limit hit"); n != 1 {
		t.Fatalf("logged again within the interval:\n%s", buf.String())
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	r.log(log, slog.LevelWarn, 10*time.Second, "limit hit")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed=1000") || !strings.Contains(lines[1], "total=1002") {
		t.Fatalf("want a second line with suppressed=1000 total=1002:\n%s", buf.String())
	}
}
