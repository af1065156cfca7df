package vlessserver_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// tlsE2E is our v1 client and server over loopback TLS, with a relaying
// handler and a listener that counts TCP connections.
type tlsE2E struct {
	echo    protocols.Addr
	handler *vlesstest.RelayHandler
	ln      *vlesstest.CountingListener
	errs    <-chan error
	carrier vlesstest.Dialer
}

func newTLSE2E(t *testing.T, opts vlessserver.Options) *tlsE2E {
	t.Helper()
	opts.V1, opts.Secure = true, true
	srv := newServer(t, opts)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := vlesstest.SelfSigned(t)
	e := &tlsE2E{echo: vlesstest.Echo(t), handler: new(vlesstest.RelayHandler), ln: &vlesstest.CountingListener{Listener: raw},
		carrier: vlesstest.Dialer{Addr: raw.Addr().String(), TLS: &tls.Config{RootCAs: cert.Pool, ServerName: "localhost"}}}
	e.errs = vlesstest.Serve(t, e.ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}}, srv, e.handler)
	return e
}

func (e *tlsE2E) client(t *testing.T, opts vlessclient.Options) *vlessclient.Client {
	t.Helper()
	if opts.ID == (uuid.UUID{}) {
		opts.ID = alice
	}
	if opts.Carrier == nil {
		opts.Carrier = e.carrier
	}
	opts.Version, opts.Secure = 1, true
	c, err := vlessclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdle)
	return c
}

// roundTrip runs one clean stream: size checksummed bytes both ways through
// the echo server, then CloseWrite, EOF, Close.
func roundTrip(t *testing.T, c *vlessclient.Client, dst protocols.Addr, size int64, seed uint64) {
	t.Helper()
	conn, err := c.DialStream(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := vlesstest.Exchange(conn, size, seed); err != nil {
		conn.Close()
		t.Fatalf("stream %d: %v", seed, err)
	}
	if err := vlesstest.CloseWrite(conn); err != nil {
		t.Fatalf("stream %d: CloseWrite: %v", seed, err)
	}
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Fatalf("stream %d: after the echo: %d bytes, %v; want EOF", seed, len(rest), err)
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("stream %d: Close: %v", seed, err)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestV1Reuse: 20 sequential streams from one keep-alive client ride one
// TLS connection, each with checksummed data both ways.
func TestV1Reuse(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{Inbound: "v1"})
	c := e.client(t, vlessclient.Options{KeepAlive: true})
	const n = 20
	for i := range n {
		roundTrip(t, c, e.echo, int64(1000+i*7919), uint64(i))
	}
	if got := e.ln.Accepted(); got != 1 {
		t.Errorf("%d TCP connections accepted for %d streams; want 1", got, n)
	}
	if st := c.PoolStats(); st != (vlessclient.PoolStats{Idle: 1, Dialed: 1, Reused: n - 1, Returned: n}) {
		t.Errorf("PoolStats = %+v", st)
	}
	reqs := e.handler.Requests()
	if len(reqs) != n {
		t.Fatalf("%d handler calls; want %d", len(reqs), n)
	}
	for _, r := range reqs {
		if r.User != "alice@example.com" || r.Target != e.echo || r.Inbound != "v1" {
			t.Errorf("request %+v", r)
		}
	}
	select {
	case err := <-e.errs:
		t.Errorf("ServeConn returned while the client still holds the connection: %v", err)
	default:
	}
	c.CloseIdle()
	select {
	case err := <-e.errs:
		if err != nil {
			t.Errorf("ServeConn after the client closed an idle connection = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("ServeConn did not end when the client closed its idle connection")
	}
}

// TestV1ReuseConcurrent: several goroutines share a pool of 3; every
// stream is intact and the server never saw more connections than were
// in use at once.
func TestV1ReuseConcurrent(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	c := e.client(t, vlessclient.Options{KeepAlive: true, PoolSize: 3})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				conn, err := c.DialStream(context.Background(), e.echo)
				if err != nil {
					t.Error(err)
					return
				}
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				if err := vlesstest.Exchange(conn, 64<<10, uint64(g*100+i)); err != nil {
					t.Error(err)
				}
				vlesstest.CloseWrite(conn)
				io.ReadAll(conn)
				conn.Close()
			}
		}()
	}
	wg.Wait()
	if got := e.ln.Accepted(); got > 3 {
		t.Errorf("%d connections for 3 concurrent users; want at most 3", got)
	}
	st := c.PoolStats()
	if st.Dialed != e.ln.Accepted() || st.Dialed+st.Reused != 15 || st.Returned != 15 || st.Idle != int(st.Dialed) {
		t.Errorf("PoolStats = %+v, accepted %d", st, e.ln.Accepted())
	}
}

// TestV1UncleanNotPooled: a stream whose target resets does not give its
// connection back; the next stream opens a new one.
func TestV1UncleanNotPooled(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	c := e.client(t, vlessclient.Options{KeepAlive: true})
	roundTrip(t, c, e.echo, 4096, 1)

	conn, err := c.DialStream(context.Background(), vlesstest.ResetTarget(t))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("provoke a reset"))
	_, err = io.ReadAll(conn)
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("reading a reset stream: %v; want an error, not a clean end", err)
	}
	conn.Close()
	if st := c.PoolStats(); st.Idle != 0 || st.Reused != 1 || st.Returned != 1 {
		t.Errorf("after the reset: PoolStats = %+v; want the connection gone", st)
	}
	roundTrip(t, c, e.echo, 4096, 3)
	if got := e.ln.Accepted(); got != 2 {
		t.Errorf("%d connections accepted; want 2 (the reset one not reused)", got)
	}
}

// TestV1ResolvedAddr: the client learns the address the handler dialled
// for a name; without a report it learns "unknown" and the stream works.
func TestV1ResolvedAddr(t *testing.T) {
	for _, noReport := range []bool{false, true} {
		t.Run(fmt.Sprintf("noReport=%v", noReport), func(t *testing.T) {
			e := newTLSE2E(t, vlessserver.Options{})
			e.handler.NoReport = noReport
			c := e.client(t, vlessclient.Options{KeepAlive: true, ResolveAddr: true})
			dst := protocols.Addr{Domain: "localhost", Port: e.echo.Port}
			for i := range 2 { // on a new and on a reused connection
				conn, err := c.DialStream(context.Background(), dst)
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				ap, ok := conn.(vlessclient.Resolver).ResolvedAddr() // before any Write
				want := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.echo.Port), netip.AddrPortFrom(netip.IPv6Loopback(), e.echo.Port)}
				if noReport && (ok || ap.IsValid()) || !noReport && (!ok || ap != want[0] && ap != want[1]) {
					t.Errorf("stream %d: ResolvedAddr = %v, %v", i, ap, ok)
				}
				if err := vlesstest.Exchange(conn, 10000, uint64(i)); err != nil {
					t.Fatal(err)
				}
				vlesstest.CloseWrite(conn)
				io.ReadAll(conn)
				conn.Close()
			}
			if got := e.ln.Accepted(); got != 1 {
				t.Errorf("%d connections; want 1", got)
			}
		})
	}
}

// recordingDialer dials TLS and records the size of every plaintext write
// the client hands the TLS conn, per connection.
type recordingDialer struct {
	vlesstest.Dialer
	mu     sync.Mutex
	writes [][]int // per connection, in dial order
}

type recordingConn struct {
	net.Conn
	d *recordingDialer
	i int
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.d.mu.Lock()
	r.d.writes[r.i] = append(r.d.writes[r.i], len(p))
	r.d.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recordingConn) CloseWrite() error { return r.Conn.(*tls.Conn).CloseWrite() }

func (d *recordingDialer) DialConn(ctx context.Context) (net.Conn, error) {
	c, err := d.Dialer.DialConn(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes = append(d.writes, nil)
	return &recordingConn{Conn: c, d: d, i: len(d.writes) - 1}, nil
}

func (d *recordingDialer) firstWrites() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var f []int
	for _, w := range d.writes {
		if len(w) > 0 {
			f = append(f, w[0])
		}
	}
	return f
}

// TestV1Padding: the first plaintext write on every new TLS connection has
// exactly the pinned size, for payloads smaller and larger than it, with
// and without keep-alive, and the server skips the padding.
func TestV1Padding(t *testing.T) {
	const pad = 700
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			e := newTLSE2E(t, vlessserver.Options{})
			rec := &recordingDialer{Dialer: e.carrier}
			c := e.client(t, vlessclient.Options{Carrier: rec, KeepAlive: keepAlive, PadMin: pad, PadMax: pad})
			if c.PadSize() != pad {
				t.Fatalf("PadSize = %d", c.PadSize())
			}
			var held []net.Conn // keep-alive: hold streams open so each needs a new connection
			for i, size := range []int{1, 10, 300, 650, 699, 700, 2000, 70000} {
				conn, err := c.DialStream(context.Background(), e.echo)
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				if err := vlesstest.Exchange(conn, int64(size), uint64(i)); err != nil {
					t.Fatalf("payload %d: %v", size, err)
				}
				held = append(held, conn)
			}
			// One more whose header goes alone: a Read before any Write.
			conn, err := c.DialStream(context.Background(), e.echo)
			if err != nil {
				t.Fatal(err)
			}
			vlesstest.CloseWrite(conn)
			if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
				t.Fatalf("empty stream: %q, %v", b, err)
			}
			held = append(held, conn)
			for _, c := range held {
				c.Close()
			}
			first := rec.firstWrites()
			if len(first) != 9 {
				t.Fatalf("%d connections recorded; want 9", len(first))
			}
			for i, n := range first {
				if n != pad {
					t.Errorf("connection %d: first write %d bytes; want %d", i, n, pad)
				}
			}
			if keepAlive { // a reused connection's request is not padded
				roundTrip(t, c, e.echo, 5, 99)
				rec.mu.Lock()
				last := rec.writes[len(rec.writes)-1]
				rec.mu.Unlock()
				if len(rec.firstWrites()) != 9 || len(last) < 2 || last[len(last)-2] == pad {
					t.Errorf("reused connection writes %v", last)
				}
			}
		})
	}
}

// TestV1PaddingRandomSource: one source gives one size for every
// connection of a client; two sources give two sizes.
func TestV1PaddingRandomSource(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	sizes := map[int]bool{}
	for seed := range uint64(2) {
		rec := &recordingDialer{Dialer: e.carrier}
		c := e.client(t, vlessclient.Options{Carrier: rec, PadMin: 300, PadMax: 1100,
			PadRand: mathrand.NewChaCha8([32]byte{byte(seed + 1)})})
		for i := range 3 {
			roundTrip(t, c, e.echo, 50, uint64(i))
		}
		first := rec.firstWrites()
		if len(first) != 3 || first[0] != c.PadSize() || first[1] != c.PadSize() || first[2] != c.PadSize() {
			t.Errorf("source %d: first writes %v; want 3 × %d", seed, first, c.PadSize())
		}
		if c.PadSize() < 300 || c.PadSize() > 1100 {
			t.Errorf("source %d: size %d outside 300..1100", seed, c.PadSize())
		}
		sizes[c.PadSize()] = true
	}
	if len(sizes) != 2 {
		t.Errorf("two random sources gave the same size %v", sizes)
	}
	// The same source bytes give the same size.
	a := e.client(t, vlessclient.Options{PadMin: 300, PadMax: 1100, PadRand: bytes.NewReader([]byte{9, 8, 7, 6, 5, 4, 3, 2})})
	b := e.client(t, vlessclient.Options{PadMin: 300, PadMax: 1100, PadRand: bytes.NewReader([]byte{9, 8, 7, 6, 5, 4, 3, 2})})
	if a.PadSize() != b.PadSize() {
		t.Errorf("same bytes, sizes %d and %d", a.PadSize(), b.PadSize())
	}
}

// TestV0ClientOnV1Server: a v1-enabled server still serves v0 clients.
func TestV0ClientOnV1Server(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	c, err := vlessclient.New(vlessclient.Options{ID: bob, Carrier: e.carrier})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.DialStream(context.Background(), e.echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := vlesstest.Exchange(conn, 256<<10, 5); err != nil {
		t.Fatal(err)
	}
	vlesstest.CloseWrite(conn)
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Errorf("v0 stream end: %d bytes, %v", len(rest), err)
	}
}

// TestV1UnknownUUIDEndToEnd: our v1 client with an unknown id gets nothing
// back and the server falls back (ErrNotProtocol).
func TestV1UnknownUUIDEndToEnd(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	c := e.client(t, vlessclient.Options{ID: eve, KeepAlive: true})
	conn, err := c.DialStream(context.Background(), e.echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("hello"))
	if n, err := conn.Read(make([]byte, 100)); n != 0 || err == nil {
		t.Errorf("Read = %d, %v; want nothing and an error", n, err)
	}
	if err := <-e.errs; !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, vlessserver.ErrUnknownUser) {
		t.Errorf("ServeConn = %v", err)
	}
	if len(e.handler.Requests()) != 0 {
		t.Error("handler called for an unknown user")
	}
}

// TestV1ServerIdleClosesPooled: the server drops an idle connection; the
// client's probe notices and the next stream dials anew.
func TestV1ServerIdleClosesPooled(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{IdleTimeout: 100 * time.Millisecond})
	c := e.client(t, vlessclient.Options{KeepAlive: true})
	roundTrip(t, c, e.echo, 1000, 1)
	if err := <-e.errs; err != nil {
		t.Fatalf("ServeConn after the idle timeout = %v", err)
	}
	time.Sleep(50 * time.Millisecond) // let the close_notify arrive
	roundTrip(t, c, e.echo, 1000, 2)
	if got, st := e.ln.Accepted(), c.PoolStats(); got != 2 || st.Reused != 0 {
		t.Errorf("accepted %d, PoolStats %+v; want 2 connections, none reused", got, st)
	}
}

// TestV1PoolLimits: PoolIdleTimeout (checked when a stream takes from the
// pool) and PoolSize.
func TestV1PoolLimits(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	c := e.client(t, vlessclient.Options{KeepAlive: true, PoolSize: 2, PoolIdleTimeout: 100 * time.Millisecond})
	roundTrip(t, c, e.echo, 100, 1)
	time.Sleep(150 * time.Millisecond)
	roundTrip(t, c, e.echo, 100, 2)
	if got := e.ln.Accepted(); got != 2 {
		t.Errorf("%d connections; want 2 (the expired one closed at take time)", got)
	}
	waitFor(t, "the expired connection's ServeConn returns", func() bool { return len(e.errs) >= 1 })

	// Three streams at once, then all end: the pool keeps 2.
	var conns []net.Conn
	for range 3 {
		conn, err := c.DialStream(context.Background(), e.echo)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte("x"))
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		vlesstest.CloseWrite(conn)
		if b, err := io.ReadAll(conn); err != nil || string(b) != "x" {
			t.Fatalf("ReadAll = %q, %v", b, err)
		}
		conn.Close()
	}
	if st := c.PoolStats(); st.Idle != 2 {
		t.Errorf("PoolStats = %+v; want 2 idle", st)
	}
}

// TestV1HandlerSequential: the handler is called once per request, one
// at a time, with a request that knows the user and target each time.
func TestV1HandlerSequential(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	var mu sync.Mutex
	active, most := 0, 0
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		mu.Lock()
		active++
		most = max(most, active)
		mu.Unlock()
		defer func() { mu.Lock(); active--; mu.Unlock() }()
		return e.handler.HandleStream(ctx, conn, req)
	}}
	srv := v1Server(t, vlessserver.Options{})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := vlesstest.SelfSigned(t)
	vlesstest.Serve(t, raw, &tls.Config{Certificates: []tls.Certificate{cert.TLS}}, srv, h)
	c := e.client(t, vlessclient.Options{KeepAlive: true,
		Carrier: vlesstest.Dialer{Addr: raw.Addr().String(), TLS: &tls.Config{RootCAs: cert.Pool, ServerName: "localhost"}}})
	for i := range 5 {
		roundTrip(t, c, e.echo, 3000, uint64(i))
	}
	if h.Calls() != 5 || most != 1 {
		t.Errorf("calls %d, at most %d at once; want 5, 1", h.Calls(), most)
	}
}
