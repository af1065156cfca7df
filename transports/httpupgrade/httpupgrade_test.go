package httpupgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/transports/rawtls"
)

const siteBody = "the site"

type site struct{ hits atomic.Int32 }

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, siteBody)
}

// echo copies until EOF, then half-closes, so the client reads EOF after
// the last byte.
func echo(conn net.Conn, r *http.Request) {
	io.Copy(conn, conn)
	conn.(interface{ CloseWrite() error }).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, conn)
}

func server(t testing.TB, h http.Handler, withTLS bool) (*httptest.Server, *tls.Config) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if !withTLS {
		srv.Start()
		t.Cleanup(srv.Close)
		return srv, nil
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, &tls.Config{RootCAs: pool, ServerName: "example.com"}
}

// sendAll writes size pseudo-random bytes, half-closes, and returns their
// SHA-256; it runs beside a reader that expects them back.
func sendAll(conn net.Conn, size int64, seed uint64) ([]byte, error) {
	h := sha256.New()
	src := mathrand.NewChaCha8([32]byte{byte(seed), 3})
	rng := mathrand.New(src)
	buf := make([]byte, 32<<10)
	for left := size; left > 0; {
		n := int(min(int64(1+rng.IntN(len(buf))), left))
		src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := conn.Write(buf[:n]); err != nil {
			return nil, fmt.Errorf("write after %d bytes: %w", size-left, err)
		}
		left -= int64(n)
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return nil, fmt.Errorf("CloseWrite: %w", err)
	}
	return h.Sum(nil), nil
}

// exchange sends size bytes and half-closes while reading everything back
// until EOF, comparing SHA-256 sums: it checks the data and the half-close.
func exchange(conn net.Conn, size int64, seed uint64) error {
	type result struct {
		sum []byte
		err error
	}
	sent := make(chan result, 1)
	go func() {
		sum, err := sendAll(conn, size, seed)
		sent <- result{sum, err}
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

func TestEcho(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tls   bool
		query string
	}{
		{"plain", false, ""},
		{"tls", true, ""},
		{"tls early data", true, "?ed=2048"},
		{"plain early data with other query", false, "?a=b&ed=1"},
		{"ed=0 is off", false, "?ed=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cfg := server(t, &Handler{Path: "/up", Next: new(site), Serve: echo}, tc.tls)
			c, err := (&Dialer{URL: srv.URL + "/up" + tc.query, TLS: cfg}).DialConn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			start := time.Now()
			if err := exchange(c, 4<<20, 1); err != nil {
				t.Fatal(err)
			}
			t.Logf("4 MiB each way and half-close in %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

func TestConcurrentTunnels(t *testing.T) {
	srv, cfg := server(t, &Handler{Path: "/up", Serve: echo}, true)
	d := &Dialer{URL: srv.URL + "/up?ed=1", TLS: cfg}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			c, err := d.DialConn(context.Background())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := exchange(c, 256<<10, uint64(i)); err != nil {
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

// recorder records writes; writes after the first wait for gate.
type recorder struct {
	net.Conn
	writes atomic.Int32
	first  []byte
	gate   chan struct{}
}

func (c *recorder) Write(p []byte) (int, error) {
	if c.writes.Add(1) == 1 {
		c.first = append([]byte(nil), p...)
	} else {
		select {
		case <-c.gate:
		case <-time.After(10 * time.Second):
			return 0, errors.New("recorder: gate never opened")
		}
	}
	return c.Conn.Write(p)
}

// TestEarlyData proves that with ?ed the first bytes leave in the same
// write as the request and the server has them before any other client
// write: later writes are held until Serve has read them.
func TestEarlyData(t *testing.T) {
	first := []byte("the tunnel's first request")
	got := make(chan string, 1)
	srv, _ := server(t, &Handler{Path: "/up", Serve: func(conn net.Conn, r *http.Request) {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, len(first))
		if _, err := io.ReadFull(conn, b); err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
		conn.Write([]byte("answer"))
	}}, false)
	gate := make(chan struct{})
	var rec *recorder
	d := &Dialer{URL: srv.URL + "/up?ed=2048", NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := new(net.Dialer).DialContext(ctx, network, addr)
		rec = &recorder{Conn: c, gate: gate}
		return rec, err
	}}
	c, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rec.writes.Load() != 0 {
		t.Fatal("the request went out before the first Write")
	}
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != string(first) {
			t.Fatalf("Serve read %q", g)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("Serve did not get the early data")
	}
	if !bytes.HasPrefix(rec.first, []byte("GET /up HTTP/1.1\r\n")) || !bytes.HasSuffix(rec.first, append([]byte("\r\n\r\n"), first...)) {
		t.Errorf("first write:\n%q", rec.first)
	}
	if n := rec.writes.Load(); n != 1 {
		t.Errorf("%d client writes, want 1", n)
	}
	close(gate)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "answer" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestPipelinedBytesKept: bytes sent behind the request, more than
// net/http's buffer holds, all reach Serve in order.
func TestPipelinedBytesKept(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes
	got := make(chan []byte, 1)
	srv, _ := server(t, &Handler{Path: "/up", Serve: func(conn net.Conn, r *http.Request) {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, len(payload))
		n, _ := io.ReadFull(conn, b)
		got <- b[:n]
	}}, false)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	c.Write(append([]byte(req), payload...))
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("Serve read %d bytes, want the %d sent", len(b), len(payload))
	}
}

func TestResponse(t *testing.T) {
	srv, _ := server(t, &Handler{Path: "/up", Serve: func(net.Conn, *http.Request) {}}, false)
	for _, tc := range []struct{ name, extra, accept string }{
		{"websocket key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}, // RFC 6455 §1.3
		{"no key", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n%s\r\n", tc.extra)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			line, _ := br.ReadString('\n')
			if line != "HTTP/1.1 101 Switching Protocols\r\n" { // Xray's client compares the status exactly
				t.Errorf("status line %q", line)
			}
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.Get("Connection") != "Upgrade" || resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("Sec-WebSocket-Accept") != tc.accept {
				t.Errorf("headers %v", resp.Header)
			}
		})
	}
}

// xrayLikeServer checks the request as Xray's httpupgrade hub does:
// Connection and Upgrade compared whole, lower-cased.
func xrayLikeServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.URL.Path != "/xray" || strings.ToLower(req.Header.Get("Connection")) != "upgrade" || strings.ToLower(req.Header.Get("Upgrade")) != "websocket" {
					io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "+acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
				io.Copy(c, br)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestXrayLikeServer(t *testing.T) {
	addr := xrayLikeServer(t)
	for _, q := range []string{"", "?ed=2048"} {
		c, err := (&Dialer{URL: "http://" + addr + "/xray" + q, Header: http.Header{"User-Agent": {"Mozilla/5.0"}}}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := exchange(c, 1<<20, 2); err != nil {
			t.Errorf("%q: %v", q, err)
		}
		c.Close()
	}
}

func TestRefused(t *testing.T) {
	srv, cfg := server(t, &Handler{Path: "/up", Next: new(site), Serve: echo}, true)
	_, err := (&Dialer{URL: srv.URL + "/wrong", TLS: cfg}).DialConn(context.Background())
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "404") {
		t.Errorf("wrong path: %v", err)
	}
	c, err := (&Dialer{URL: srv.URL + "/wrong?ed=1", TLS: cfg}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrBadResponse) {
		t.Errorf("wrong path with early data: Read = %v", err)
	}
	for _, u := range []string{"ftp://x/", "http:///p", "http://x/?ed=no"} {
		if _, err := (&Dialer{URL: u}).DialConn(context.Background()); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func TestNext(t *testing.T) {
	served := make(chan struct{}, 10)
	s := new(site)
	srv, cfg := server(t, &Handler{Path: "/up", Host: "example.com", Next: s, Serve: func(net.Conn, *http.Request) { served <- struct{}{} }}, true)
	upgrade := "Connection: Upgrade\r\nUpgrade: websocket\r\n"
	for _, tc := range []struct{ name, request string }{
		{"wrong path", "GET /other HTTP/1.1\r\nHost: example.com\r\n" + upgrade},
		{"plain GET on the path", "GET /up HTTP/1.1\r\nHost: example.com\r\n"},
		{"POST with upgrade", "POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n" + upgrade},
		{"wrong host", "GET /up HTTP/1.1\r\nHost: other.test\r\n" + upgrade},
		{"upgrade to h2c", "GET /up HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"},
		{"no Connection token", "GET /up HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", srv.Listener.Addr().String(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.request+"\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusNotFound || string(body) != siteBody {
				t.Errorf("got %s %q, want the site", resp.Status, body)
			}
		})
	}
	t.Run("HTTP/2", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true) // HTTP/2 alone
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", srv.URL+"/up", nil)
		req.Host = "example.com"
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusNotFound || string(body) != siteBody {
			t.Errorf("got %s %s %q, want the site over HTTP/2", resp.Proto, resp.Status, body)
		}
	})
	if len(served) != 0 {
		t.Errorf("Serve called %d times", len(served))
	}
	t.Run("Host override matches", func(t *testing.T) {
		c, err := (&Dialer{URL: srv.URL + "/up", TLS: cfg, Host: "EXAMPLE.com"}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve not called")
		}
	})
}

func TestAddrs(t *testing.T) {
	type addrs struct {
		local, remote net.Addr
		req           string
	}
	got := make(chan addrs, 1)
	srv, _ := server(t, &Handler{Path: "/up", Serve: func(conn net.Conn, r *http.Request) {
		got <- addrs{conn.LocalAddr(), conn.RemoteAddr(), r.RemoteAddr}
	}}, false)
	c, err := (&Dialer{URL: srv.URL + "/up"}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := <-got
	if a.remote.String() != a.req || a.remote.String() != c.LocalAddr().String() {
		t.Errorf("server RemoteAddr %v, request %s, client %v", a.remote, a.req, c.LocalAddr())
	}
	if a.local.String() != srv.Listener.Addr().String() {
		t.Errorf("server LocalAddr %v", a.local)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestDeadlines(t *testing.T) {
	release := make(chan struct{})
	srv, cfg := server(t, &Handler{Path: "/up", Serve: func(conn net.Conn, r *http.Request) {
		<-release
		echo(conn, r)
	}}, true)
	defer close(release)
	for _, q := range []string{"", "?ed=1"} {
		t.Run("read"+q, func(t *testing.T) {
			c, err := (&Dialer{URL: srv.URL + "/up" + q, TLS: cfg}).DialConn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.SetReadDeadline(start.Add(200 * time.Millisecond))
			_, err = c.Read(make([]byte, 1))
			if el := time.Since(start); !isTimeout(err) || el > 3*time.Second {
				t.Fatalf("Read = %v after %v", err, el)
			}
		})
	}
	t.Run("read timeout is not final", func(t *testing.T) {
		release := make(chan struct{})
		srv, cfg := server(t, &Handler{Path: "/up", Serve: func(conn net.Conn, r *http.Request) {
			<-release
			echo(conn, r)
		}}, true)
		c, err := (&Dialer{URL: srv.URL + "/up", TLS: cfg}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("Read = %v", err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		close(release)
		if err := exchange(c, 100<<10, 3); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("write", func(t *testing.T) {
		c, err := (&Dialer{URL: srv.URL + "/up", TLS: cfg}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetWriteDeadline(start.Add(300 * time.Millisecond))
		chunk := make([]byte, 1<<20)
		for err == nil && time.Since(start) < 10*time.Second {
			_, err = c.Write(chunk)
		}
		if el := time.Since(start); !isTimeout(err) || el > 5*time.Second {
			t.Fatalf("Write = %v after %v", err, el)
		}
	})
	t.Run("context bounds the upgrade", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				defer c.Close()
				io.Copy(io.Discard, c)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = (&Dialer{URL: "http://" + ln.Addr().String() + "/"}).DialConn(ctx)
		if el := time.Since(start); err == nil || !errors.Is(err, context.DeadlineExceeded) || el > 3*time.Second {
			t.Fatalf("DialConn = %v after %v", err, el)
		}
	})
}

// TestRawTLSConfig: a config from rawtls.ClientConfig (pinned, with h2 in
// ALPN) works: the Dialer asks for HTTP/1.1 only.
func TestRawTLSConfig(t *testing.T) {
	srv, _ := server(t, &Handler{Path: "/up", Serve: echo}, true)
	cfg, err := rawtls.ClientConfig("example.com", rawtls.Pin(srv.Certificate()), false, []string{"h2", "http/1.1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := (&Dialer{URL: srv.URL + "/up", TLS: cfg}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := exchange(c, 64<<10, 10); err != nil {
		t.Fatal(err)
	}
}

// TestRequestRaceWithCloseWrite: with early data, a Read that asks for the
// request while the first Write is sending it, on a tunnel that half-closes
// right after that Write, reads the 101 and the echo. The Read finds the
// request sent and writes nothing; it used to write an empty slice after
// the half-close, which a TLS conn refuses ("tls: protocol is shutdown";
// TestConcurrentTunnels hit it in CI).
func TestRequestRaceWithCloseWrite(t *testing.T) {
	srv, _ := server(t, &Handler{Path: "/up", Serve: echo}, false)
	var carrier *nettest.LateWriteConn
	d := &Dialer{URL: srv.URL + "/up?ed=16", NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		carrier = nettest.NewLateWriteConn(c)
		return carrier, nil
	}}
	conn, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	werr, got, rerr := nettest.WriteCloseWhileReading(conn, carrier, []byte("hi"))
	if werr != nil {
		t.Fatalf("write and half-close: %v", werr)
	}
	if rerr != nil || string(got) != "hi" {
		t.Fatalf("read %q, %v; want the echo", got, rerr)
	}
}
