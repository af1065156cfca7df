package ws

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/portico-gw/portico/transports/rawtls"
)

func TestEcho(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tls   bool
		query string
	}{
		{"plain", false, ""},
		{"tls", true, ""},
		{"tls early data", true, "?ed=2048"},
		{"plain early data and other query", false, "?x=1&ed=100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Path: "/tunnel", Next: new(site), Serve: echo}
			srv, cfg := server(t, h, tc.tls)
			d := &Dialer{URL: wsURL(srv, "/tunnel"+tc.query), TLS: cfg}
			c, err := d.DialConn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := writeFirst(c, "first bytes"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := exchange(c, 4<<20, 1); err != nil {
				t.Fatal(err)
			}
			t.Logf("4 MiB each way in %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

func TestConcurrentTunnels(t *testing.T) {
	h := &Handler{Path: "/t", Serve: echo}
	srv, cfg := server(t, h, true)
	d := &Dialer{URL: wsURL(srv, "/t?ed=512"), TLS: cfg}
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
			if err := writeFirst(c, "first"); err != nil {
				errs <- err
				return
			}
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

// TestEarlyDataBeforeUpgrade proves the first bytes travel in the upgrade
// request: the client's connection lets one write through (the request)
// and holds every later one until the server's Serve has read the bytes.
// Had they come as a message after the 101, Serve would wait for the gate
// and the gate for Serve, and the test would time out.
func TestEarlyDataBeforeUpgrade(t *testing.T) {
	first := []byte("GET / HTTP/1.1\r\nHost: target\r\n\r\n") // a tunnel's first request
	got := make(chan []byte, 1)
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len(first))
		_, err := io.ReadFull(conn, buf)
		if err != nil {
			buf = []byte(err.Error())
		}
		got <- buf
		conn.Write([]byte("reply"))
		io.Copy(io.Discard, conn)
	}}
	srv, _ := server(t, h, false)
	gate := make(chan struct{})
	var rec *recorder
	d := &Dialer{URL: wsURL(srv, "/ws?ed=2048"), NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := new(net.Dialer).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		rec = &recorder{Conn: c, gate: gate}
		return rec, nil
	}}
	c, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rec != nil {
		t.Fatal("the connection was made before the first Write")
	}
	if n, err := c.Write(first); err != nil || n != len(first) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	select {
	case b := <-got:
		if string(b) != string(first) {
			t.Fatalf("Serve read %q", b)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("Serve did not get the first bytes without a second client write")
	}
	if w := rec.writes.Load(); w != 1 {
		t.Errorf("client made %d writes before the server had the data; want 1 (the upgrade request)", w)
	}
	req := rec.written.String()
	if !strings.Contains(req, "Sec-WebSocket-Protocol: "+base64.RawURLEncoding.EncodeToString(first)) {
		t.Errorf("upgrade request does not carry the data:\n%s", req)
	}
	if strings.Contains(req, "ed=") {
		t.Errorf("the ed parameter was sent:\n%s", req)
	}
	close(gate)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "reply" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// The echoed subprotocol is what browsers check.
	if p := c.(*lazyConn).cur.Load().subprotocol; p != base64.RawURLEncoding.EncodeToString(first) {
		t.Errorf("101 echoed Sec-WebSocket-Protocol %q", p)
	}
}

// TestEarlyDataSplit: a first write longer than ed sends ed bytes in the
// header and the rest as the first message.
func TestEarlyDataSplit(t *testing.T) {
	headerLen := make(chan int, 1)
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		b, _ := base64.RawURLEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Protocol"))
		headerLen <- len(b)
		echo(conn, r)
	}}
	srv, cfg := server(t, h, true)
	c, err := (&Dialer{URL: wsURL(srv, "/ws?ed=100"), TLS: cfg}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte(strings.Repeat("0123456789", 50))
	if n, err := c.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n := <-headerLen; n != 100 {
		t.Errorf("header carried %d bytes, want 100", n)
	}
	back := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, back); err != nil || string(back) != string(msg) {
		t.Fatalf("read back %q, %v", back, err)
	}
}

// TestEarlyDataIgnoringServer: against a server that knows nothing of early
// data (plain gorilla), a client with ?ed= still works: it sees no echo and
// resends the bytes as a message.
func TestEarlyDataIgnoringServer(t *testing.T) {
	var up websocket.Upgrader
	sawPath := make(chan string, 1)
	srv, cfg := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawPath <- r.URL.RequestURI()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(typ, m)
		}
	}), true)
	c, err := (&Dialer{URL: wsURL(srv, "/plain?ed=2048"), TLS: cfg}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := writeFirst(c, "early"); err != nil {
		t.Fatal(err)
	}
	if err := exchange(c, 1<<20, 3); err != nil {
		t.Fatal(err)
	}
	if p := <-sawPath; p != "/plain" {
		t.Errorf("server saw %q; the ed parameter must not be sent", p)
	}
}

// rawUpgrade sends a hand-written upgrade request and returns the
// response and the connection.
func rawUpgrade(t *testing.T, addr, path string, extra string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n", path, extra)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, c, br
}

func TestEarlyDataHeaderForms(t *testing.T) {
	payload := []byte{0xfb, 0xff, 0xfe, 'h', 'i'} // has '+' '/' in standard base64
	got := make(chan string, 10)
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		b := make([]byte, 100)
		n, _ := conn.Read(b)
		got <- string(b[:n])
	}}
	srv, _ := server(t, h, false)
	addr := srv.Listener.Addr().String()
	big := make([]byte, DefaultMaxEarlyData+1)
	for _, tc := range []struct {
		name, value string
		want        string // early data Serve reads; "" = none
		echo        bool
	}{
		{"raw url", base64.RawURLEncoding.EncodeToString(payload), string(payload), true},
		{"padded url", base64.URLEncoding.EncodeToString(payload), string(payload), true},
		{"standard", base64.StdEncoding.EncodeToString(payload), string(payload), true},
		{"raw standard", base64.RawStdEncoding.EncodeToString(payload), string(payload), true},
		{"not base64", "chat, superchat", "", false},
		{"too long", base64.RawURLEncoding.EncodeToString(big), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, _ := rawUpgrade(t, addr, "/ws", "Sec-WebSocket-Protocol: "+tc.value+"\r\n")
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %s", resp.Status)
			}
			echoed := resp.Header.Get("Sec-WebSocket-Protocol")
			if tc.echo && echoed != tc.value || !tc.echo && echoed != "" {
				t.Errorf("echoed %q", echoed)
			}
			if g := <-got; g != tc.want {
				t.Errorf("Serve read %q, want %q", g, tc.want)
			}
		})
	}
	t.Run("custom header is not echoed", func(t *testing.T) {
		h.EarlyDataHeader = "X-Early"
		defer func() { h.EarlyDataHeader = "" }()
		resp, _, _ := rawUpgrade(t, addr, "/ws", "X-Early: aGk\r\n")
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Protocol") != "" {
			t.Fatalf("status %s, protocol %q", resp.Status, resp.Header.Get("Sec-WebSocket-Protocol"))
		}
		if g := <-got; g != "hi" {
			t.Errorf("Serve read %q", g)
		}
	})
}

func TestCustomEarlyDataHeader(t *testing.T) {
	h := &Handler{Path: "/ws", EarlyDataHeader: "X-Ed", Serve: func(conn net.Conn, r *http.Request) {
		if r.Header.Get("X-Ed") == "" {
			conn.Write([]byte("no header"))
			return
		}
		echo(conn, r)
	}}
	srv, _ := server(t, h, false)
	c, err := (&Dialer{URL: wsURL(srv, "/ws?ed=64"), EarlyDataHeader: "x-ed"}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Write first: a Read that comes first upgrades without early data.
	if err := writeFirst(c, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := exchange(c, 64<<10, 4); err != nil {
		t.Fatal(err)
	}
}

// TestNext: everything that is not an upgrade for the route reaches the
// site, never a WebSocket error.
func TestNext(t *testing.T) {
	served := make(chan struct{}, 10)
	s := new(site)
	h := &Handler{Path: "/ws", Host: "example.com", Next: s, Serve: func(net.Conn, *http.Request) { served <- struct{}{} }}
	srv, cfg := server(t, h, true)
	addr := srv.Listener.Addr().String()
	upgrade := "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, tc := range []struct{ name, request string }{
		{"wrong path", "GET /other HTTP/1.1\r\nHost: example.com\r\n" + upgrade},
		{"path prefix", "GET /ws/x HTTP/1.1\r\nHost: example.com\r\n" + upgrade},
		{"plain GET on the path", "GET /ws HTTP/1.1\r\nHost: example.com\r\n"},
		{"POST with upgrade", "POST /ws HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n" + upgrade},
		{"wrong host", "GET /ws HTTP/1.1\r\nHost: other.test\r\n" + upgrade},
		{"bad version", "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"},
		{"short key", "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n"},
		{"upgrade to something else", "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", addr, cfg)
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
		req, _ := http.NewRequest("GET", srv.URL+"/ws", nil)
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
	t.Run("client sees the site's status", func(t *testing.T) {
		_, err := (&Dialer{URL: wsURL(srv, "/nope"), TLS: cfg, Host: "example.com"}).DialConn(context.Background())
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("err = %v, want a refusal naming 404", err)
		}
	})
	if len(served) != 0 {
		t.Errorf("Serve was called %d times", len(served))
	}
	if s.hits.Load() == 0 {
		t.Error("the site was never asked")
	}
	t.Run("right host with port", func(t *testing.T) {
		c, err := (&Dialer{URL: wsURL(srv, "/ws"), TLS: cfg, Host: "Example.COM:443"}).DialConn(context.Background())
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
	t.Run("nil Next is a 404", func(t *testing.T) {
		rr := httptest.NewRecorder()
		(&Handler{Path: "/ws"}).ServeHTTP(rr, httptest.NewRequest("GET", "/x", nil))
		if rr.Code != http.StatusNotFound {
			t.Errorf("status %d", rr.Code)
		}
	})
}

func TestAddrs(t *testing.T) {
	type addrs struct{ local, remote net.Addr }
	got := make(chan addrs, 1)
	var remote string
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		remote = r.RemoteAddr
		got <- addrs{conn.LocalAddr(), conn.RemoteAddr()}
	}}
	srv, _ := server(t, h, false)
	c, err := (&Dialer{URL: wsURL(srv, "/ws")}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := <-got
	if a.remote.String() != remote || a.remote.String() != c.LocalAddr().String() {
		t.Errorf("server RemoteAddr %v; request %s; client LocalAddr %v", a.remote, remote, c.LocalAddr())
	}
	if _, ok := a.remote.(*net.TCPAddr); !ok {
		t.Errorf("RemoteAddr is %T", a.remote)
	}
	if a.local.String() != srv.Listener.Addr().String() {
		t.Errorf("server LocalAddr %v, listener %v", a.local, srv.Listener.Addr())
	}
	if ap := netip.MustParseAddrPort(c.RemoteAddr().String()); ap.String() != srv.Listener.Addr().String() {
		t.Errorf("client RemoteAddr %v", ap)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestDeadlines(t *testing.T) {
	release := make(chan struct{})
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		<-release // neither reads nor writes until told
		echo(conn, r)
	}}
	srv, cfg := server(t, h, true)
	defer close(release)
	d := &Dialer{URL: wsURL(srv, "/ws"), TLS: cfg}

	t.Run("past deadline is harmless", func(t *testing.T) {
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(-time.Second))
		if _, err := c.Read(make([]byte, 10)); !isTimeout(err) {
			t.Fatalf("Read = %v, want a timeout", err)
		}
		c.SetReadDeadline(time.Time{})
		release <- struct{}{}
		if err := exchange(c, 64<<10, 5); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("read", func(t *testing.T) {
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(start.Add(200 * time.Millisecond))
		_, err = c.Read(make([]byte, 10))
		if el := time.Since(start); !isTimeout(err) || el < 150*time.Millisecond || el > 3*time.Second {
			t.Fatalf("Read = %v after %v, want a timeout after 200ms", err, el)
		}
	})
	t.Run("write", func(t *testing.T) {
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetWriteDeadline(start.Add(300 * time.Millisecond))
		chunk := make([]byte, 1<<20)
		for {
			_, err = c.Write(chunk)
			if err != nil || time.Since(start) > 10*time.Second {
				break
			}
		}
		if el := time.Since(start); !isTimeout(err) || el > 5*time.Second {
			t.Fatalf("Write = %v after %v, want a timeout soon after 300ms", err, el)
		}
	})
	t.Run("deferred upgrade honors the write deadline", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // accepts and never answers
			c, err := ln.Accept()
			if err == nil {
				defer c.Close()
				io.Copy(io.Discard, c)
			}
		}()
		c, err := (&Dialer{URL: "ws://" + ln.Addr().String() + "/?ed=10"}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetWriteDeadline(start.Add(200 * time.Millisecond))
		_, err = c.Write([]byte("hello"))
		if el := time.Since(start); !isTimeout(err) || el > 3*time.Second {
			t.Fatalf("Write = %v after %v", err, el)
		}
	})
}

func TestKeepalive(t *testing.T) {
	errc := make(chan error, 2)
	h := &Handler{Path: "/ws", PingInterval: 100 * time.Millisecond, Serve: func(conn net.Conn, r *http.Request) {
		b := make([]byte, 10)
		n, err := conn.Read(b)
		if err == nil {
			conn.Write(b[:n])
			_, err = conn.Read(b)
		}
		errc <- err
	}}
	srv, _ := server(t, h, false)

	t.Run("silent peer is closed", func(t *testing.T) {
		// A gorilla client that never reads cannot answer pings.
		wc, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/ws"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		start := time.Now()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrPeerSilent) {
				t.Errorf("Serve's Read = %v, want ErrPeerSilent", err)
			}
			if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
				t.Errorf("closed after %v, want about 200-300ms", el)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("silent peer not closed")
		}
	})
	t.Run("reading peer stays", func(t *testing.T) {
		c, err := (&Dialer{URL: wsURL(srv, "/ws")}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		readErr := make(chan error, 1)
		go func() { // answers pings while blocked in Read
			b := make([]byte, 10)
			n, err := c.Read(b)
			if err == nil && string(b[:n]) != "late" {
				err = fmt.Errorf("read %q", b[:n])
			}
			readErr <- err
		}()
		time.Sleep(600 * time.Millisecond) // six intervals of silence from the app
		select {
		case err := <-errc:
			t.Fatalf("server gave up on a reading client: %v", err)
		default:
		}
		if _, err := c.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
		if err := <-readErr; err != nil {
			t.Fatal(err)
		}
	})
}

func TestTextMessageRefused(t *testing.T) {
	errc := make(chan error, 1)
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		_, err := conn.Read(make([]byte, 10))
		errc <- err
	}}
	srv, _ := server(t, h, false)
	wc, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	wc.WriteMessage(websocket.TextMessage, []byte("hello"))
	if err := <-errc; !errors.Is(err, ErrTextMessage) {
		t.Errorf("Read = %v", err)
	}
	wc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = wc.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseUnsupportedData) {
		t.Errorf("client got %v, want close 1003", err)
	}
}

// TestCloseAfterPeerClose: the relay case. The peer sends its close frame
// (it is done sending) but keeps reading; the server reads EOF, still
// writes what it owes, then CloseWrite completes the closing handshake.
func TestCloseAfterPeerClose(t *testing.T) {
	steps := make(chan string, 4)
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		cw := conn.(interface{ CloseWrite() error })
		if err := cw.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
			steps <- fmt.Sprintf("early CloseWrite = %v", err)
		}
		b, err := io.ReadAll(conn)
		steps <- fmt.Sprintf("read %q %v", b, err)
		_, err = conn.Write([]byte("owed"))
		steps <- fmt.Sprintf("write %v", err)
		steps <- fmt.Sprintf("CloseWrite %v", cw.CloseWrite())
	}}
	srv, _ := server(t, h, false)
	wc, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	wc.WriteMessage(websocket.BinaryMessage, []byte("request"))
	wc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	wc.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, m, err := wc.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage || string(m) != "owed" {
		t.Fatalf("client read %d %q %v", typ, m, err)
	}
	if _, _, err := wc.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("client got %v, want the close echo", err)
	}
	want := []string{`read "request" <nil>`, "write <nil>", "CloseWrite <nil>"}
	for _, w := range want {
		if g := <-steps; g != w {
			t.Errorf("server: %s, want %s", g, w)
		}
	}
}

func TestClientCloseWrite(t *testing.T) {
	h := &Handler{Path: "/ws", Serve: echo}
	srv, _ := server(t, h, false)
	for _, q := range []string{"", "?ed=10"} {
		c, err := (&Dialer{URL: wsURL(srv, "/ws"+q)}).DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%q: CloseWrite = %v", q, err)
		}
		if err := exchange(c, 1000, 9); err != nil {
			t.Errorf("%q: after CloseWrite: %v", q, err)
		}
		c.Close()
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%q: Write after Close = %v", q, err)
		}
	}
}

func TestPeerCloseIsEOF(t *testing.T) {
	h := &Handler{Path: "/ws", Serve: func(conn net.Conn, r *http.Request) {
		conn.Write([]byte("bye"))
	}}
	srv, _ := server(t, h, false)
	c, err := (&Dialer{URL: wsURL(srv, "/ws")}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
}

func TestDialerErrors(t *testing.T) {
	for _, u := range []string{"http://x/", "ws:///path", "ws://x/?ed=abc", "%zz"} {
		if _, err := (&Dialer{URL: u}).DialConn(context.Background()); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// TestRawTLSConfig: the gateway builds client TLS with rawtls.ClientConfig
// (here a pin, and h2 in ALPN as a shared config might have); the Dialer
// still asks for HTTP/1.1, which a WebSocket upgrade needs.
func TestRawTLSConfig(t *testing.T) {
	srv, _ := server(t, &Handler{Path: "/ws", Serve: echo}, true)
	cfg, err := rawtls.ClientConfig("example.com", rawtls.Pin(srv.Certificate()), false, []string{"h2", "http/1.1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := (&Dialer{URL: wsURL(srv, "/ws"), TLS: cfg}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := exchange(c, 64<<10, 10); err != nil {
		t.Fatal(err)
	}
	if len(cfg.NextProtos) != 2 {
		t.Errorf("the caller's config was changed: %v", cfg.NextProtos)
	}
}
