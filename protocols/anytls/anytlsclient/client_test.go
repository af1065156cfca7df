package anytlsclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-gw/portico/internal/prototest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
	"github.com/portico-gw/portico/protocols/anytls/session"
	"github.com/portico-gw/portico/protocols/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const password = "s3cret-pass"

// e2e is our server behind a counting TLS listener, a relaying handler,
// an echo target, and a carrier dialer to it.
type e2e struct {
	ln      *anytlstest.Listener
	handler tunnel.Handler
	relay   *anytlstest.RelayHandler
	echo    protocols.Addr
	carrier *anytlstest.Dialer
	errs    <-chan error
	stop    func()
}

func newE2E(t *testing.T, opts anytlsserver.Options, h tunnel.Handler) *e2e {
	t.Helper()
	if opts.Users == nil {
		opts.Users = []anytlsserver.User{{Password: password, Email: "carol@example.com"}}
	}
	srv, err := anytlsserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	cert := anytlstest.SelfSigned(t)
	e := &e2e{relay: new(anytlstest.RelayHandler), echo: anytlstest.Echo(t)}
	e.handler = h
	if h == nil {
		e.handler = e.relay
	}
	e.ln = anytlstest.Listen(t, cert.ServerTLS())
	e.errs, e.stop = anytlstest.Serve(t, e.ln, srv, e.handler)
	e.carrier = &anytlstest.Dialer{Addr: e.ln.Addr().String(), TLS: cert.ClientTLS()}
	return e
}

func (e *e2e) client(t *testing.T, opts Options) *Client {
	t.Helper()
	if opts.Password == "" {
		opts.Password = password
	}
	if opts.Carrier == nil {
		opts.Carrier = e.carrier
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dial(t *testing.T, c *Client, dst protocols.Addr) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.DialStream(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn
}

// TestEndToEnd: 8 concurrent streams through client, server, relay and
// echo, 1 MiB each way, checked by SHA-256.
func TestEndToEnd(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{Inbound: "e2e"}, nil)
	c := e.client(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := dial(t, c, e.echo)
			defer conn.Close()
			if err := anytlstest.Exchange(conn, 1<<20, uint64(i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	reqs := e.relay.Requests()
	if len(reqs) != 8 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, r := range reqs {
		if r.Target != e.echo || r.User != "carol@example.com" || r.Inbound != "e2e" || r.Network != protocols.NetworkTCP {
			t.Errorf("request %+v", r)
		}
	}
	st := c.Stats()
	if st.Created < 1 || st.Created > 8 || int(e.ln.Accepted.Load()) != int(st.Created) {
		t.Errorf("stats %+v, accepted %d", st, e.ln.Accepted.Load())
	}
	anytlstest.Eventually(t, 5*time.Second, "all sessions idle", func() bool { s := c.Stats(); return s.Idle == s.Sessions && s.Streams == 0 })
}

// TestSessionReuse: 100 sequential requests ride one TLS connection.
func TestSessionReuse(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	c := e.client(t, Options{})
	for i := range 100 {
		conn := dial(t, c, e.echo)
		msg := []byte("request " + strings.Repeat("x", i))
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
		conn.Close()
	}
	if n := e.ln.Accepted.Load(); n != 1 {
		t.Errorf("100 sequential requests opened %d TLS connections, want 1", n)
	}
	if st := c.Stats(); st.Created != 1 || st.Sessions != 1 {
		t.Errorf("stats %+v", st)
	}
	if n := len(e.relay.Requests()); n != 100 {
		t.Errorf("%d requests reached the handler", n)
	}
}

// TestIdleSessions: idle sessions close after the timeout, except the
// MinIdleSession newest; the kept one is reused.
func TestIdleSessions(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	c := e.client(t, Options{IdleSessionCheckInterval: 40 * time.Millisecond, IdleSessionTimeout: 150 * time.Millisecond, MinIdleSession: 1})
	// Three streams at once: three sessions.
	conns := []net.Conn{dial(t, c, e.echo), dial(t, c, e.echo), dial(t, c, e.echo)}
	if st := c.Stats(); st.Sessions != 3 || st.Idle != 0 || st.Streams != 3 {
		t.Fatalf("stats %+v", st)
	}
	for _, conn := range conns {
		conn.Close()
	}
	if st := c.Stats(); st.Idle != 3 {
		t.Fatalf("after closing the streams: %+v", st)
	}
	// Not yet: idle for less than the timeout.
	time.Sleep(60 * time.Millisecond)
	if st := c.Stats(); st.Sessions != 3 {
		t.Fatalf("closed too early: %+v", st)
	}
	anytlstest.Eventually(t, 5*time.Second, "idle sessions closed down to 1", func() bool { return c.Stats().Sessions == 1 })
	time.Sleep(200 * time.Millisecond) // more checks: the one is kept
	if st := c.Stats(); st.Sessions != 1 || st.Idle != 1 || st.Created != 3 {
		t.Fatalf("stats %+v", st)
	}
	// The server saw two connections end.
	for range 2 {
		select {
		case <-e.errs:
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not see the idle sessions close")
		}
	}
	// The kept session is the newest, and the next stream rides it.
	c.mu.Lock()
	kept := c.idle[0].seq
	c.mu.Unlock()
	if kept != 3 {
		t.Errorf("kept session %d, want the newest (3)", kept)
	}
	conn := dial(t, c, e.echo)
	defer conn.Close()
	if err := anytlstest.Exchange(conn, 1000, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.ln.Accepted.Load(); n != 3 {
		t.Errorf("%d connections accepted, want 3", n)
	}
}

// TestIdleZeroMin: with MinIdleSession 0 every idle session goes.
func TestIdleZeroMin(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := e.client(t, Options{IdleSessionCheckInterval: 20 * time.Millisecond, IdleSessionTimeout: time.Hour, Now: clock})
	dial(t, c, e.echo).Close()
	time.Sleep(100 * time.Millisecond)
	if c.Stats().Sessions != 1 {
		t.Fatal("closed before its hour")
	}
	mu.Lock()
	now = now.Add(2 * time.Hour) // the injected clock moves; the timer does not care
	mu.Unlock()
	anytlstest.Eventually(t, 5*time.Second, "idle session closed", func() bool { return c.Stats().Sessions == 0 })
}

// TestSynAckTimeout: a stream on a reused session (id 2) whose cmdSYNACK
// does not come in time closes the session as stuck; the next dial makes
// a new one.
func TestSynAckTimeout(t *testing.T) {
	hang := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hang) }) }
	defer release()
	n := 0
	var mu sync.Mutex
	h := handlerFunc(func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if !first {
			select { // a dial that never finishes
			case <-hang:
			case <-ctx.Done():
			}
		}
		return (&anytlstest.RelayHandler{}).HandleStream(ctx, conn, req)
	})
	e := newE2E(t, anytlsserver.Options{}, h)
	c := e.client(t, Options{})
	c.synAckTimeout = 200 * time.Millisecond

	conn := dial(t, c, e.echo)
	if err := anytlstest.Exchange(conn, 100, 1); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	conn2 := dial(t, c, e.echo) // stream 2 on the same session
	start := time.Now()
	_, err := conn2.Read(make([]byte, 1))
	if !errors.Is(err, session.ErrSynAckTimeout) {
		t.Fatalf("Read = %v, want ErrSynAckTimeout", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("closed after %v", d)
	}
	anytlstest.Eventually(t, 5*time.Second, "stuck session gone", func() bool { return c.Stats().Sessions == 0 })
	release()
	conn3 := dial(t, c, e.echo)
	defer conn3.Close()
	if err := anytlstest.Exchange(conn3, 100, 2); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Created != 2 || e.ln.Accepted.Load() != 2 {
		t.Errorf("stats %+v, accepted %d", st, e.ln.Accepted.Load())
	}
}

// TestDefaultSynAckTimeout pins the spec's 3 s.
func TestDefaultSynAckTimeout(t *testing.T) {
	if session.DefaultSynAckTimeout != 3*time.Second {
		t.Errorf("DefaultSynAckTimeout = %v", session.DefaultSynAckTimeout)
	}
}

type handlerFunc func(ctx context.Context, c net.Conn, req tunnel.Request) error

func (f handlerFunc) HandleStream(ctx context.Context, c net.Conn, req tunnel.Request) error {
	return f(ctx, c, req)
}

func (f handlerFunc) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	pc.Close()
	return errors.New("no packets")
}

// TestDialError: the server's dial failure reaches the stream.
func TestDialError(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	c := e.client(t, Options{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	ln.Close()
	conn := dial(t, c, closed)
	defer conn.Close()
	_, err := conn.Read(make([]byte, 1))
	var de *session.DialError
	if !errors.As(err, &de) || !strings.Contains(de.Text, "refused") {
		t.Fatalf("Read = %v", err)
	}
	// The session survives and carries the next stream.
	conn.Close()
	conn2 := dial(t, c, e.echo)
	defer conn2.Close()
	if err := anytlstest.Exchange(conn2, 1000, 3); err != nil {
		t.Fatal(err)
	}
	if n := e.ln.Accepted.Load(); n != 1 {
		t.Errorf("%d connections", n)
	}
}

// TestUDP: DialPacket opens a udp-over-tcp v2 stream in connect mode; 50
// datagrams of 1200 bytes come back from a loopback UDP echo, and another
// destination is refused on that conn.
func TestUDP(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	c := e.client(t, Options{})
	echo := prototest.UDPEcho(t)
	pc, err := c.DialPacket(context.Background(), echo)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := prototest.PacketEcho(pc, echo, 50, 1200); err != nil {
		t.Fatal(err)
	}
	if err := pc.WritePacket([]byte("x"), e.echo); !errors.Is(err, tunnel.ErrOtherDestination) {
		t.Fatalf("write to another destination: %v", err)
	}
}

func TestOptions(t *testing.T) {
	d := &anytlstest.Dialer{Addr: "127.0.0.1:1"}
	for _, o := range []Options{{Carrier: d}, {Password: "x"}, {Password: "x", Carrier: d, MinIdleSession: -1}} {
		if _, err := New(o); !errors.Is(err, ErrOptions) {
			t.Errorf("New(%+v) = %v", o, err)
		}
	}
	c, err := New(Options{Password: "x", Carrier: d})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.checkInterval != 30*time.Second || c.idleTimeout != 60*time.Second {
		t.Errorf("defaults %v, %v", c.checkInterval, c.idleTimeout)
	}
	if _, err := c.DialStream(context.Background(), protocols.Addr{}); !errors.Is(err, protocols.ErrBadAddr) {
		t.Errorf("invalid target: %v", err)
	}
	if _, err := c.DialStream(context.Background(), protocols.Addr{Domain: "x", Port: 1}); err == nil || !strings.Contains(err.Error(), "carrier") {
		t.Errorf("unreachable server: %v", err)
	}
}

func TestClose(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	c := e.client(t, Options{})
	conn := dial(t, c, e.echo)
	c.Close()
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Client.Close = %v", err)
	}
	if _, err := c.DialStream(context.Background(), e.echo); !errors.Is(err, ErrClosed) {
		t.Errorf("DialStream after Close = %v", err)
	}
	if st := c.Stats(); st.Sessions != 0 {
		t.Errorf("stats %+v", st)
	}
	c.Close() // twice is fine
}

// TestWrongPassword: the server falls back (here: closes), and the
// client's stream fails.
func TestWrongPassword(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	c := e.client(t, Options{Password: "not the password"})
	// The server may close before or after the stream opens.
	if conn, err := c.DialStream(context.Background(), e.echo); err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte("hi"))
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read through a refused session: %v", err)
		}
	} else if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("DialStream = %v", err)
	}
	if err := <-e.errs; !errors.Is(err, protocols.ErrNotProtocol) {
		t.Errorf("ServeConn = %v", err)
	}
}

// zeroReader makes every range draw its minimum.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestAuthOnTheWire(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	var rec *anytlstest.RecordingConn
	e.carrier.Record = func(rc *anytlstest.RecordingConn) { rec = rc }
	c := e.client(t, Options{})
	conn := dial(t, c, e.echo)
	defer conn.Close()
	sum := sha256.Sum256([]byte(password))
	want := append(sum[:], 0, 30)
	want = append(want, make([]byte, 30)...)
	if w := rec.Writes(); len(w) == 0 || !bytes.Equal(w[0], want) {
		t.Fatalf("write #0 = %x, want sha256(password) ‖ 001e ‖ 30 zeros", w[0])
	}
}
