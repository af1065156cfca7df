package grpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/transports/rawtls"
)

const siteBody = "the site"

type site struct{ hits atomic.Int32 }

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, siteBody)
}

// echo copies until the client half-closes; returning ends the call with
// status OK.
func echo(conn net.Conn, r *http.Request) {
	buf := make([]byte, 32<<10)
	io.CopyBuffer(conn, struct{ io.Reader }{conn}, buf)
}

// testServer is the handler served over TLS (HTTP/2 and HTTP/1.1 offered)
// or as h2c (http.Server with Protocols HTTP1 + UnencryptedHTTP2, as the
// gateway serves it), counting connections.
type testServer struct {
	addr  string
	tls   *tls.Config // client config trusting the server; nil for h2c
	conns atomic.Int32
}

func serve(t testing.TB, h http.Handler, withTLS bool) *testServer {
	t.Helper()
	ts := new(testServer)
	connState := func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ts.conns.Add(1)
		}
	}
	if withTLS {
		srv := httptest.NewUnstartedServer(h)
		srv.EnableHTTP2 = true
		srv.Config.ConnState = connState
		srv.StartTLS()
		t.Cleanup(srv.Close)
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		ts.addr, ts.tls = srv.Listener.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "example.com"}
		return ts
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: h, Protocols: &p, ConnState: connState}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	ts.addr = ln.Addr().String()
	return ts
}

// h2Only makes an http.Transport speak HTTP/2 alone over TLS.
func h2Only() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	return p
}

func (ts *testServer) dialer(service string) *Dialer {
	return &Dialer{Address: ts.addr, ServiceName: service, TLS: ts.tls}
}

// tunnel opens a tunnel to service on a Dialer of its own; the test's end
// closes both.
func (ts *testServer) tunnel(t testing.TB, service string) net.Conn {
	t.Helper()
	d := ts.dialer(service)
	t.Cleanup(d.CloseIdleConnections)
	c, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange writes size pseudo-random bytes, half-closes, and reads back
// until EOF, comparing SHA-256 sums: it checks the data, the half-close
// and that the call ends with status OK (io.EOF).
func exchange(conn net.Conn, size int64, seed uint64) error {
	type result struct {
		sum []byte
		err error
	}
	sent := make(chan result, 1)
	go func() {
		h := sha256.New()
		src := mathrand.NewChaCha8([32]byte{byte(seed), 9})
		rng := mathrand.New(src)
		buf := make([]byte, 64<<10)
		for left := size; left > 0; {
			n := int(min(int64(1+rng.IntN(len(buf))), left))
			src.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := conn.Write(buf[:n]); err != nil {
				sent <- result{err: fmt.Errorf("write after %d bytes: %w", size-left, err)}
				return
			}
			left -= int64(n)
		}
		err := conn.(interface{ CloseWrite() error }).CloseWrite()
		sent <- result{h.Sum(nil), err}
	}()
	h := sha256.New()
	got, rerr := io.Copy(h, conn)
	w := <-sent
	switch {
	case w.err != nil:
		return w.err
	case rerr != nil:
		return fmt.Errorf("read %d bytes: %w", got, rerr)
	case got != size:
		return fmt.Errorf("read %d bytes before EOF, want %d", got, size)
	case !bytes.Equal(h.Sum(nil), w.sum):
		return errors.New("SHA-256 of the bytes read back differs")
	}
	return nil
}

// exchangeEach runs exchange on n tunnels at once, tunnel i from conn(i),
// and reports each one's failure.
func exchangeEach(t *testing.T, n int, size int64, conn func(i int) (net.Conn, error)) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := conn(i)
			if err != nil {
				errs <- fmt.Errorf("tunnel %d: %w", i, err)
				return
			}
			defer c.Close()
			if err := exchange(c, size, uint64(i)); err != nil {
				errs <- fmt.Errorf("tunnel %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEcho(t *testing.T) {
	for _, withTLS := range []bool{true, false} {
		for _, multi := range []bool{false, true} {
			name := fmt.Sprintf("tls=%v multi=%v", withTLS, multi)
			t.Run(name, func(t *testing.T) {
				ts := serve(t, &Handler{ServiceName: "svc", Next: new(site), Serve: echo}, withTLS)
				d := ts.dialer("svc")
				d.Multi = multi
				defer d.CloseIdleConnections()
				c, err := d.DialConn(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				start := time.Now()
				if err := exchange(c, 4<<20, 1); err != nil {
					t.Fatal(err)
				}
				t.Logf("4 MiB each way, half-close and status in %v", time.Since(start).Round(time.Millisecond))
			})
		}
	}
}

// TestCallHeaders: a call's request headers are a gRPC client's, as
// grpc-go sends them: no Accept-Encoding (net/http would add gzip), which
// no gRPC client sends.
func TestCallHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	h := &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
		got <- r.Header.Clone()
		echo(conn, r)
	}}
	ts := serve(t, h, true)
	c := ts.tunnel(t, "svc")
	if err := exchange(c, 1, 0); err != nil {
		t.Fatal(err)
	}
	hdr := <-got
	want := map[string]string{"Content-Type": "application/grpc", "Te": "trailers", "User-Agent": "grpc-go/1.85.0", "Accept-Encoding": ""}
	for k, v := range want {
		if hdr.Get(k) != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, hdr.Get(k), v, hdr)
		}
	}
}

// TestSharedConnection: concurrent tunnels of one Dialer ride one HTTP/2
// connection.
func TestSharedConnection(t *testing.T) {
	for _, withTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			ts := serve(t, &Handler{ServiceName: "svc", Serve: echo}, withTLS)
			d := ts.dialer("svc")
			defer d.CloseIdleConnections()
			exchangeEach(t, 20, 256<<10, func(int) (net.Conn, error) { return d.DialConn(context.Background()) })
			if n := ts.conns.Load(); n != 1 {
				t.Errorf("%d connections for 20 tunnels, want 1", n)
			}
		})
	}
}

// TestStreamLimit: tunnels beyond the server's HTTP/2 stream limit are not
// held back: the Dialer opens another connection for them. Each tunnel
// makes a round trip before the next opens: until a new connection's
// SETTINGS arrive, the client assumes a limit of 100 on it, and a stream the
// server refuses after the tunnel's first bytes went out fails the tunnel
// (see the package doc).
func TestStreamLimit(t *testing.T) {
	const limit, tunnels = 4, 10
	ts := new(testServer)
	srv := httptest.NewUnstartedServer(&Handler{ServiceName: "svc", Serve: echo})
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: limit}
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ts.conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ts.addr, ts.tls = srv.Listener.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "example.com"}
	d := ts.dialer("svc")
	defer d.CloseIdleConnections()

	// All tunnels are open at once before any ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conns := make([]net.Conn, tunnels)
	for i := range conns {
		c, err := d.DialConn(ctx)
		if err != nil {
			t.Fatalf("tunnel %d of %d (stream limit %d): %v", i+1, tunnels, limit, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		conns[i] = c
		var b [1]byte
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
	}
	exchangeEach(t, tunnels, 64<<10, func(i int) (net.Conn, error) { return conns[i], nil })
	if n, want := ts.conns.Load(), int32(tunnels+limit-1)/limit; n != want {
		t.Errorf("%d connections for %d tunnels at a stream limit of %d, want %d", n, tunnels, limit, want)
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct{ name, tun, multi, reqTun string }{
		{"svc", "/svc/Tun", "/svc/TunMulti", "/svc/Tun"},
		{"my service", "/my service/Tun", "/my service/TunMulti", "/my%20service/Tun"},
		{"/custom/path/Up|Down", "/custom/path/Up", "/custom/path/Down", "/custom/path/Up"},
		{"/custom/One", "/custom/One", "/custom/One", "/custom/One"},
	} {
		tun, multi := Paths(tc.name)
		if tun != tc.tun || multi != tc.multi || requestPath(tc.name, false) != tc.reqTun {
			t.Errorf("%q: %q %q %q", tc.name, tun, multi, requestPath(tc.name, false))
		}
	}
	// Escaped and custom names reach the handler.
	for _, name := range []string{"my service", "/custom/path/Up|Down", "a/b"} {
		ts := serve(t, &Handler{ServiceName: name, Next: new(site), Serve: echo}, false)
		for _, multi := range []bool{false, true} {
			d := ts.dialer(name)
			d.Multi = multi
			c, err := d.DialConn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := exchange(c, 1000, 2); err != nil {
				t.Errorf("%q multi=%v: %v", name, multi, err)
			}
			c.Close()
			d.CloseIdleConnections()
		}
	}
}

// TestNext: everything that is not a gRPC call for the service reaches the
// site.
func TestNext(t *testing.T) {
	served := make(chan struct{}, 10)
	s := new(site)
	h := &Handler{ServiceName: "svc", Host: "example.com", Next: s, Serve: func(net.Conn, *http.Request) { served <- struct{}{} }}
	ts := serve(t, h, true)
	h2 := &http.Transport{TLSClientConfig: ts.tls, Protocols: h2Only()}
	defer h2.CloseIdleConnections()
	h1 := &http.Transport{TLSClientConfig: ts.tls} // HTTP/1.1 only: no ForceAttemptHTTP2
	defer h1.CloseIdleConnections()
	for _, tc := range []struct {
		name, method, path, ct, host string
		rt                           http.RoundTripper
	}{
		{"HTTP/1.1", "POST", "/svc/Tun", "application/grpc", "example.com", h1},
		{"GET", "GET", "/svc/Tun", "application/grpc", "example.com", h2},
		{"wrong content-type", "POST", "/svc/Tun", "application/json", "example.com", h2},
		{"grpc+json", "POST", "/svc/Tun", "application/grpc+json", "example.com", h2},
		{"no content-type", "POST", "/svc/Tun", "", "example.com", h2},
		{"other service", "POST", "/other/Tun", "application/grpc", "example.com", h2},
		{"other method", "POST", "/svc/Other", "application/grpc", "example.com", h2},
		{"wrong host", "POST", "/svc/Tun", "application/grpc", "other.test", h2},
		{"site page", "GET", "/", "", "example.com", h2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "https://"+ts.addr+tc.path, strings.NewReader("\x00\x00\x00\x00\x00"))
			req.Host = tc.host
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			resp, err := tc.rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || string(body) != siteBody {
				t.Errorf("got %s %s %q, want the site", resp.Proto, resp.Status, body)
			}
			if tc.name == "HTTP/1.1" && resp.ProtoMajor != 1 {
				t.Errorf("HTTP/1.1 case went over %s", resp.Proto)
			}
		})
	}
	if len(served) != 0 {
		t.Errorf("Serve called %d times", len(served))
	}
	t.Run("accepted forms", func(t *testing.T) {
		for _, ct := range []string{"application/grpc", "application/grpc+proto", "Application/GRPC; charset=x"} {
			req, _ := http.NewRequest("POST", "https://"+ts.addr+"/svc/TunMulti", http.NoBody)
			req.Host = "example.com:443"
			req.Header.Set("Content-Type", ct)
			resp, err := h2.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Trailer.Get("Grpc-Status") != "0" {
				t.Errorf("%q: %s, trailers %v", ct, resp.Status, resp.Trailer)
			}
			select {
			case <-served:
			case <-time.After(5 * time.Second):
				t.Fatalf("%q: Serve not called", ct)
			}
		}
	})
}

// rawCall makes a call whose request body is body, and returns the
// response body and trailers.
func rawCall(t *testing.T, ts *testServer, path string, body []byte) ([]byte, http.Header) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: ts.tls, Protocols: h2Only()}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "https://"+ts.addr+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, resp.Trailer
}

// TestFraming: the server reads messages split anyhow and several per
// DATA frame, and ends a call whose framing is broken with the matching
// status.
func TestFraming(t *testing.T) {
	readErr := make(chan error, 1)
	ts := serve(t, &Handler{ServiceName: "svc", MaxMessageSize: 1 << 10, Serve: func(conn net.Conn, r *http.Request) {
		b, err := io.ReadAll(conn)
		conn.Write(b)
		readErr <- err
	}}, true)
	t.Run("several messages and multi-hunks", func(t *testing.T) {
		var body []byte
		for _, s := range []string{"one", "", "two"} {
			body = appendHunk(body, []byte(s))
		}
		multi := append(append([]byte{0x0a, 1, 'x'}, 0x12, 1, 'z'), 0x0a, 1, 'y') // data "x", unknown field 2, data "y"
		body = append(append(body, 0, 0, 0, 0, byte(len(multi))), multi...)
		got, tr := rawCall(t, ts, "/svc/TunMulti", body)
		if err := <-readErr; err != nil {
			t.Fatal(err)
		}
		f := frameReader{r: bytes.NewReader(got), limit: DefaultMaxMessageSize}
		data, err := io.ReadAll(&f)
		if string(data) != "onetwoxy" || err != nil || tr.Get("Grpc-Status") != "0" {
			t.Errorf("echo %q %v, trailers %v", data, err, tr)
		}
	})
	for _, tc := range []struct {
		name, code string
		body       []byte
	}{
		{"compressed", "12", []byte{1, 0, 0, 0, 1, 0}},
		{"too large", "8", []byte{0, 0, 0, 4, 1}},
		{"malformed hunk", "13", []byte{0, 0, 0, 0, 2, 0x08, 0x01}},
		{"cut inside a message", "13", []byte{0, 0, 0, 0, 9, 0x0a}},
		{"cut inside a header", "13", []byte{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tr := rawCall(t, ts, "/svc/Tun", tc.body)
			err := <-readErr
			if err == nil {
				t.Error("Serve's read succeeded")
			}
			if tr.Get("Grpc-Status") != tc.code || (tc.code != "0") != (tr.Get("Grpc-Message") != "") {
				t.Errorf("trailers %v, want grpc-status %s (read error: %v)", tr, tc.code, err)
			}
		})
	}
}

func TestAddrs(t *testing.T) {
	type addrs struct {
		local, remote net.Addr
		req           string
	}
	got := make(chan addrs, 1)
	ts := serve(t, &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
		got <- addrs{conn.LocalAddr(), conn.RemoteAddr(), r.RemoteAddr}
	}}, false)
	c := ts.tunnel(t, "svc")
	a := <-got
	if a.remote.String() != a.req || a.remote.String() != c.LocalAddr().String() {
		t.Errorf("server RemoteAddr %v, request %s, client LocalAddr %v", a.remote, a.req, c.LocalAddr())
	}
	if a.local.String() != ts.addr || c.RemoteAddr().String() != ts.addr {
		t.Errorf("server LocalAddr %v, client RemoteAddr %v, want %s", a.local, c.RemoteAddr(), ts.addr)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestDeadlines(t *testing.T) {
	type serverResult struct {
		err     error
		elapsed time.Duration
	}
	results := make(chan serverResult, 1)
	mode := make(chan string, 1)
	ts := serve(t, &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
		switch <-mode {
		case "server read":
			start := time.Now()
			conn.SetReadDeadline(start.Add(200 * time.Millisecond))
			_, err := conn.Read(make([]byte, 10))
			results <- serverResult{err, time.Since(start)}
		case "server write":
			start := time.Now()
			conn.SetWriteDeadline(start.Add(300 * time.Millisecond))
			var err error
			chunk := make([]byte, 1<<20)
			for err == nil && time.Since(start) < 10*time.Second {
				_, err = conn.Write(chunk)
			}
			results <- serverResult{err, time.Since(start)}
		case "server idle deadline":
			// A deadline that passes while nobody reads costs nothing.
			conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			time.Sleep(150 * time.Millisecond)
			_, err := conn.Read(make([]byte, 1))
			if !isTimeout(err) {
				results <- serverResult{fmt.Errorf("read past the deadline: %v", err), 0}
				return
			}
			conn.SetReadDeadline(time.Time{})
			echo(conn, r)
			results <- serverResult{}
		case "silent":
			time.Sleep(2 * time.Second)
		case "echo":
			echo(conn, r)
		}
	}}, true)
	// Each case on its own connection: a stalled call holds connection
	// flow control (see TestStalledTunnel).
	dial := func(t *testing.T, m string) net.Conn {
		mode <- m
		d := ts.dialer("svc")
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); d.CloseIdleConnections() })
		return c
	}

	t.Run("server read", func(t *testing.T) {
		dial(t, "server read")
		r := <-results
		if !isTimeout(r.err) || r.elapsed < 150*time.Millisecond || r.elapsed > 3*time.Second {
			t.Errorf("Read = %v after %v", r.err, r.elapsed)
		}
	})
	t.Run("server write", func(t *testing.T) {
		dial(t, "server write") // the client never reads
		r := <-results
		if !isTimeout(r.err) || r.elapsed > 5*time.Second {
			t.Errorf("Write = %v after %v", r.err, r.elapsed)
		}
	})
	t.Run("server deadline passing idle", func(t *testing.T) {
		c := dial(t, "server idle deadline")
		if err := exchange(c, 64<<10, 4); err != nil {
			t.Error(err)
		}
		if r := <-results; r.err != nil {
			t.Error(r.err)
		}
	})
	t.Run("client read", func(t *testing.T) {
		c := dial(t, "silent")
		start := time.Now()
		c.SetReadDeadline(start.Add(200 * time.Millisecond))
		_, err := c.Read(make([]byte, 10))
		if el := time.Since(start); !isTimeout(err) || el < 150*time.Millisecond || el > 3*time.Second {
			t.Errorf("Read = %v after %v", err, el)
		}
	})
	t.Run("client write", func(t *testing.T) {
		c := dial(t, "silent") // the server never reads
		start := time.Now()
		c.SetWriteDeadline(start.Add(300 * time.Millisecond))
		var err error
		chunk := make([]byte, 1<<20)
		for err == nil && time.Since(start) < 10*time.Second {
			_, err = c.Write(chunk)
		}
		if el := time.Since(start); !isTimeout(err) || el > 5*time.Second {
			t.Errorf("Write = %v after %v", err, el)
		}
	})
	t.Run("client past deadline is harmless", func(t *testing.T) {
		c := dial(t, "echo")
		c.SetDeadline(time.Now().Add(-time.Second))
		if _, err := c.Write([]byte("x")); !isTimeout(err) {
			t.Fatalf("Write = %v", err)
		}
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("Read = %v", err)
		}
		c.SetDeadline(time.Time{})
		if err := exchange(c, 64<<10, 5); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStalledTunnel: a tunnel whose Serve stops reading must not stall
// the other tunnels of its HTTP/2 connection. net/http's server returns
// connection-level flow control only as handlers read, so the connection
// window must exceed what stalled streams can hold: the gateway configures
// http.Server.HTTP2 like this (the defaults, 1 MiB for both, stall).
func TestStalledTunnel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
		if r.Header.Get("X-Stall") != "" {
			<-release
		}
		echo(conn, r)
	}}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerConnection: 16 << 20, MaxReceiveBufferPerStream: 1 << 20}
	srv.StartTLS()
	t.Cleanup(srv.Close) // after the deferred close(release)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	d := &Dialer{Address: srv.Listener.Addr().String(), ServiceName: "svc", TLS: &tls.Config{RootCAs: pool, ServerName: "example.com"}}
	defer d.CloseIdleConnections()
	stalled, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	go func() { // fills the stalled stream's window, then blocks until Close
		buf := make([]byte, 256<<10)
		for {
			if _, err := stalled.Write(buf); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	c, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := exchange(c, 2<<20, 8); err != nil {
		t.Fatalf("second tunnel on the connection: %v", err)
	}
}

func TestClose(t *testing.T) {
	serverErr := make(chan error, 1)
	started := make(chan struct{}, 1)
	ts := serve(t, &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
		started <- struct{}{}
		_, err := io.Copy(io.Discard, conn)
		serverErr <- err
	}}, false)
	d := ts.dialer("svc")
	defer d.CloseIdleConnections()

	t.Run("client Close cancels the call", func(t *testing.T) {
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("some"))
		<-started // a call cancelled before Serve never reaches it
		c.Close()
		select {
		case err := <-serverErr:
			if err == nil {
				t.Error("the server read a clean EOF from a cancelled call")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not notice")
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close = %v", err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v", err)
		}
	})
	t.Run("client CloseWrite is EOF", func(t *testing.T) {
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("some"))
		<-started
		c.(interface{ CloseWrite() error }).CloseWrite()
		if err := <-serverErr; err != nil {
			t.Errorf("server read %v, want EOF", err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Errorf("client ReadAll = %q, %v", b, err)
		}
	})
	t.Run("server Close unblocks Read", func(t *testing.T) {
		got := make(chan error, 1)
		ts := serve(t, &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
			time.AfterFunc(100*time.Millisecond, func() { conn.Close() })
			_, err := conn.Read(make([]byte, 1))
			got <- err
		}}, true)
		c := ts.tunnel(t, "svc")
		if err := <-got; !errors.Is(err, net.ErrClosed) {
			t.Errorf("server Read = %v", err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("client Read = %v, want EOF (status OK)", err)
		}
	})
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := (&Dialer{Address: addr, ServiceName: "svc"}).DialConn(context.Background()); err == nil {
		t.Error("dial to a closed port succeeded")
	}
	if _, err := (&Dialer{ServiceName: "svc"}).DialConn(context.Background()); err == nil {
		t.Error("no address accepted")
	}
	// An HTTP/1.1-only TLS server is refused at ALPN.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	_, err = (&Dialer{Address: srv.Listener.Addr().String(), ServiceName: "svc", TLS: &tls.Config{InsecureSkipVerify: true}}).DialConn(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP/2") && !strings.Contains(err.Error(), "application protocol") {
		t.Errorf("HTTP/1.1 server: %v", err)
	}
	// A site answering 404 is an error on the first Read.
	ts := serve(t, new(site), true)
	c := ts.tunnel(t, "svc")
	if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Read from a site = %v", err)
	}
}

// BenchmarkTunnel moves 32 KiB writes one way through a tunnel over h2c or
// TLS (client to server, or server to client), reading them at the other
// end.
func BenchmarkTunnel(b *testing.B) {
	for _, bench := range []struct {
		name    string
		withTLS bool
		dir     string
	}{{"h2c/up", false, "up"}, {"h2c/down", false, "down"}, {"tls/up", true, "up"}, {"tls/down", true, "down"}} {
		dir := bench.dir
		b.Run(bench.name, func(b *testing.B) {
			done := make(chan struct{})
			ts := serve(b, &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
				if dir == "up" {
					io.Copy(io.Discard, conn)
				} else {
					buf := make([]byte, 32<<10)
					for range b.N {
						if _, err := conn.Write(buf); err != nil {
							break
						}
					}
				}
				<-done
			}}, bench.withTLS)
			d := ts.dialer("svc")
			defer d.CloseIdleConnections()
			c, err := d.DialConn(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			defer close(done)
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			if dir == "up" {
				for range b.N {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			for range b.N {
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRawTLSConfig: a pinned config from rawtls.ClientConfig with no ALPN
// works: the Dialer asks for h2.
func TestRawTLSConfig(t *testing.T) {
	srv := httptest.NewUnstartedServer(&Handler{ServiceName: "svc", Serve: echo})
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	cfg, err := rawtls.ClientConfig("example.com", rawtls.Pin(srv.Certificate()), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &Dialer{Address: srv.Listener.Addr().String(), ServiceName: "svc", TLS: cfg}
	defer d.CloseIdleConnections()
	c, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := exchange(c, 64<<10, 10); err != nil {
		t.Fatal(err)
	}
}

// TestRelayChunkOneMessage: a relay's 32 KiB chunk with a protocol's
// framing around it (a VMess chunk sequence, an AnyTLS frame: up to
// bufpool's room past LargeChunk) is written as one gRPC message, not as a
// full one and another of a few bytes; a longer write is split.
func TestRelayChunkOneMessage(t *testing.T) {
	for _, tc := range []struct {
		size, messages int
	}{
		{bufpool.LargeChunk + 36, 1}, // a VMess aes-128-gcm sealing of 32 KiB
		{bufpool.LargeChunk + 7, 1},  // an AnyTLS frame of 32 KiB
		{maxChunk, 1},
		{maxChunk + 1, 2},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			ts := serve(t, &Handler{ServiceName: "svc", Serve: func(conn net.Conn, r *http.Request) {
				io.Copy(io.Discard, conn)
				conn.Write(make([]byte, tc.size))
			}}, true)
			got, _ := rawCall(t, ts, "/svc/Tun", nil)
			n, total := 0, 0
			for len(got) > 0 {
				msg, used, err := readFrame(got, DefaultMaxMessageSize)
				if err != nil {
					t.Fatal(err)
				}
				segs, err := appendHunkData(nil, msg)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range segs {
					total += len(s)
				}
				n++
				got = got[used:]
			}
			if n != tc.messages || total != tc.size {
				t.Errorf("%d bytes went as %d messages carrying %d, want %d", tc.size, n, total, tc.messages)
			}
		})
	}
}
