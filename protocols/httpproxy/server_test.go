package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// infoHandler is an origin that describes the request it got.
func infoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("X-Origin", name)
		w.Header().Set("Keep-Alive", "timeout=5") // hop-by-hop: must not reach the client
		fmt.Fprintf(w, "%s %s %s host=%s body=%q", name, r.Method, r.RequestURI, r.Host, body)
	})
}

func proxyClient(proxyAddr string, user *url.Userinfo, tlsConf *tls.Config) *http.Client {
	pu := &url.URL{Scheme: "http", Host: proxyAddr, User: user}
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: tlsConf},
		Timeout:   10 * time.Second,
	}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", u, err)
	}
	return resp, string(b)
}

func TestForwardKeepAliveAcrossHosts(t *testing.T) {
	a := httptest.NewServer(infoHandler("a"))
	defer a.Close()
	b := httptest.NewServer(infoHandler("b"))
	defer b.Close()
	h := &relayHandler{report: true}
	p := startProxy(t, &Server{Inbound: "local-http"}, h)
	c := proxyClient(p.addr, nil, nil)

	for i, u := range []string{a.URL + "/one?x=1", b.URL + "/two", a.URL + "/three"} {
		resp, body := get(t, c, u)
		name := string("aba"[i])
		path := u[strings.Index(u[7:], "/")+7:]
		want := fmt.Sprintf("%s GET %s host=%s body=\"\"", name, path, resp.Request.URL.Host)
		if resp.StatusCode != 200 || body != want {
			t.Errorf("GET %s: %d %q, want 200 %q", u, resp.StatusCode, body, want)
		}
		if resp.Header.Get("X-Origin") != name || resp.Header.Get("Keep-Alive") != "" {
			t.Errorf("GET %s: headers %v", u, resp.Header)
		}
	}
	if n := p.accepts.Load(); n != 1 {
		t.Errorf("%d client connections, want 1 kept alive", n)
	}
	reqs := h.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d tunnels, want one per request", len(reqs))
	}
	got := reqs[1]
	if got.Target.String() != b.Listener.Addr().String() || got.Network != protocols.NetworkTCP ||
		got.Transport != "http" || got.Inbound != "local-http" || got.User != "" || !got.Source.Addr().IsLoopback() {
		t.Errorf("request = %+v", got)
	}
}

func TestConnectTLS(t *testing.T) {
	origin := httptest.NewTLSServer(infoHandler("tls"))
	defer origin.Close()
	h := &relayHandler{report: true}
	p := startProxy(t, &Server{}, h)
	c := proxyClient(p.addr, nil, origin.Client().Transport.(*http.Transport).TLSClientConfig)
	for range 2 {
		resp, body := get(t, c, origin.URL+"/secure")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "tls GET /secure") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	reqs := h.requests()
	if len(reqs) != 1 || reqs[0].Target.String() != origin.Listener.Addr().String() || reqs[0].Transport != "http" {
		t.Fatalf("requests = %+v, want one CONNECT tunnel reused", reqs)
	}
}

func TestAuth(t *testing.T) {
	plain := httptest.NewServer(infoHandler("plain"))
	defer plain.Close()
	secure := httptest.NewTLSServer(infoHandler("secure"))
	defer secure.Close()
	tlsConf := secure.Client().Transport.(*http.Transport).TLSClientConfig
	h := &relayHandler{report: true}
	p := startProxy(t, &Server{Users: map[string]string{"alice": "secret", "bob": "pw"}}, h)

	good := proxyClient(p.addr, url.UserPassword("alice", "secret"), tlsConf)
	for _, u := range []string{plain.URL, secure.URL} {
		if resp, body := get(t, good, u+"/x"); resp.StatusCode != 200 {
			t.Errorf("GET %s with credentials: %d %q", u, resp.StatusCode, body)
		}
	}
	for _, r := range h.requests() {
		if r.User != "alice" {
			t.Errorf("user = %q", r.User)
		}
	}

	for name, user := range map[string]*url.Userinfo{
		"wrong password": url.UserPassword("alice", "pw"),
		"unknown user":   url.UserPassword("carol", "secret"),
		"none":           nil,
	} {
		t.Run(name, func(t *testing.T) {
			c := proxyClient(p.addr, user, tlsConf)
			resp, body := get(t, c, plain.URL+"/x")
			if resp.StatusCode != http.StatusProxyAuthRequired ||
				resp.Header.Get("Proxy-Authenticate") != `Basic realm="portico"` || strings.Contains(body, "plain") {
				t.Errorf("forward: %d %v %q", resp.StatusCode, resp.Header, body)
			}
			if _, err := c.Get(secure.URL + "/x"); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
				t.Errorf("CONNECT: %v", err)
			}
		})
	}
	if n := len(h.requests()); n != 2 {
		t.Errorf("%d tunnels, want 2", n)
	}
}

func TestAuthKeepAlive(t *testing.T) {
	origin := httptest.NewServer(infoHandler("o"))
	defer origin.Close()
	p := startProxy(t, &Server{Users: map[string]string{"alice": "secret"}}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	br := bufio.NewReader(c)
	// A browser first tries without credentials, then again on the same
	// connection with them.
	fmt.Fprintf(c, "POST %s/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", origin.URL)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 407 || resp.Close {
		t.Fatalf("first: %v %+v", err, resp)
	}
	io.Copy(io.Discard, resp.Body)
	auth := "Basic " + "YWxpY2U6c2VjcmV0" // alice:secret
	fmt.Fprintf(c, "GET %s/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", origin.URL, auth)
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("second: %v %+v", err, resp)
	}
}

func TestParseAuthorization(t *testing.T) {
	s := &Server{Users: map[string]string{"alice": "se:cret", "": "empty"}}
	tests := []struct {
		header string
		user   string
		ok     bool
	}{
		{"Basic YWxpY2U6c2U6Y3JldA==", "alice", true}, // alice:se:cret
		{"basic   YWxpY2U6c2U6Y3JldA== ", "alice", true},
		{"Basic YWxpY2U6c2U=", "alice", false},     // alice:se
		{"Basic YWxpY2U=", "alice", false},         // alice, no colon
		{"Basic OmVtcHR5", "", true},               // :empty
		{"Bearer YWxpY2U6c2U6Y3JldA==", "", false}, // other scheme
		{"Basic !!!", "", false},                   // not base64
		{"", "", false},                            // missing
		{"Basic", "", false},                       // no credentials
	}
	for _, tt := range tests {
		req := &http.Request{Header: http.Header{}}
		if tt.header != "" {
			req.Header.Set("Proxy-Authorization", tt.header)
		}
		user, ok := s.authenticate(req)
		if user != tt.user || ok != tt.ok {
			t.Errorf("%q: got %q %v, want %q %v", tt.header, user, ok, tt.user, tt.ok)
		}
	}
	if user, ok := (&Server{}).authenticate(&http.Request{Header: http.Header{}}); !ok || user != "" {
		t.Errorf("no users: %q %v", user, ok)
	}
}

func TestDialFailures(t *testing.T) {
	refused := closedPort(t)
	tests := []struct {
		name   string
		h      tunnel.Handler
		target string
		status int
		body   string
	}{
		{"refused", &relayHandler{report: true}, refused, 502, "connection refused"},
		{"blocked", &relayHandler{report: true, dialErr: fmt.Errorf("rule: %w", protocols.ErrBlocked)}, "example.com:80", 403, "blocked by policy"},
		{"timeout", &relayHandler{report: true, dialErr: fmt.Errorf("dial: %w", context.DeadlineExceeded)}, "example.com:80", 504, "deadline exceeded"},
		{"unreachable", &relayHandler{report: true, dialErr: &net.OpError{Op: "dial", Net: "tcp",
			Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}}, "192.0.2.1:80", 502, "no route to host"},
		// Handlers that do not report: the returned error decides.
		{"unreported refused", &relayHandler{}, refused, 502, "connection refused"},
		{"unreported blocked", &relayHandler{dialErr: protocols.ErrBlocked}, "example.com:80", 403, "blocked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, &Server{}, tt.h)

			// Forwarded: the error is answered and the connection lives on.
			c := rawConn(t, p.addr)
			br := bufio.NewReader(c)
			for range 2 {
				fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", tt.target, tt.target)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) || resp.Close {
					t.Fatalf("forward: %d close=%v %q, want %d %q", resp.StatusCode, resp.Close, body, tt.status, tt.body)
				}
			}

			// CONNECT: the error is the last word.
			c = rawConn(t, p.addr)
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tt.target, tt.target)
			all, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil)
			if err != nil {
				t.Fatalf("CONNECT: %v in %q", err, all)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
				t.Fatalf("CONNECT: %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
		})
	}
}

func TestConnectPipelined(t *testing.T) {
	echo := nettest.Echo(t)
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	// The CONNECT, and the first payload bytes in the same segment.
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nearly bytes", echo, echo)
	want := connectEstablished + "early bytes"
	if got := readN(t, c, len(want)); string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	io.WriteString(c, "later")
	if got := readN(t, c, 5); string(got) != "later" {
		t.Fatalf("got %q", got)
	}
}

func TestConnectWaitsForDial(t *testing.T) {
	release := make(chan struct{})
	h := scriptedHandler(func(conn net.Conn, req tunnel.Request) error {
		<-release
		conn.(tunnel.DialReporter).ReportDial(nil)
		_, err := io.WriteString(conn, "hi")
		return err
	})
	p := startProxy(t, &Server{}, h)
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // runs before startProxy's cleanup, even after a failure
	c := rawConn(t, p.addr)
	io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("before the dial: read %d, %v; want a timeout", n, err)
	}
	unblock()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := connectEstablished + "hi"
	if got := readN(t, c, len(want)); string(got) != want {
		t.Fatalf("got %q", got)
	}
}

func TestConnectLazySuccess(t *testing.T) {
	// A handler that never reports but writes: 200 goes first.
	h := scriptedHandler(func(conn net.Conn, req tunnel.Request) error {
		_, err := io.WriteString(conn, "hi")
		return err
	})
	p := startProxy(t, &Server{}, h)
	c := rawConn(t, p.addr)
	io.WriteString(c, "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n")
	all, _ := io.ReadAll(c)
	if string(all) != connectEstablished+"hi" {
		t.Fatalf("got %q", all)
	}
}

func TestConnectBadTarget(t *testing.T) {
	for _, target := range []string{"example.com", "example.com:http", "[::1", ":443"} {
		h := &relayHandler{report: true}
		p := startProxy(t, &Server{}, h)
		c := rawConn(t, p.addr)
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 400 {
			t.Errorf("CONNECT %s: %v %v", target, err, resp)
		}
		if n := len(h.requests()); n != 0 {
			t.Errorf("CONNECT %s: handler called", target)
		}
	}
}

// recordingOrigin is an origin that keeps the requests it got.
type recordingOrigin struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func newRecordingOrigin(t *testing.T) *recordingOrigin {
	o := &recordingOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		o.mu.Lock()
		o.reqs = append(o.reqs, r)
		o.body = append(o.body, string(b))
		o.mu.Unlock()
		fmt.Fprintf(w, "got %d bytes", len(b))
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *recordingOrigin) last() (*http.Request, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reqs[len(o.reqs)-1], o.body[len(o.body)-1]
}

func TestForwardHeaders(t *testing.T) {
	o := newRecordingOrigin(t)
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	host := o.Listener.Addr().String()
	fmt.Fprintf(c, "GET http://%s/p?q=1 HTTP/1.1\r\n"+
		"Host: wrong.example\r\n"+
		"Connection: keep-alive, X-Drop-Me\r\n"+
		"X-Drop-Me: 1\r\n"+
		"X-Keep-Me: 2\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"TE: trailers\r\n"+
		"Upgrade: websocket\r\n"+
		"\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %+v", err, resp)
	}
	r, _ := o.last()
	if r.RequestURI != "/p?q=1" {
		t.Errorf("request URI %q, want origin form", r.RequestURI)
	}
	if r.Host != host {
		t.Errorf("Host %q, want the URI's %q", r.Host, host)
	}
	for _, h := range []string{"X-Drop-Me", "Proxy-Connection", "Proxy-Authorization", "Keep-Alive", "Te", "Upgrade", "User-Agent"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("origin got %s: %q", h, v)
		}
	}
	if r.Header.Get("X-Keep-Me") != "2" {
		t.Errorf("X-Keep-Me lost: %v", r.Header)
	}
	if !r.Close {
		t.Error("origin request is not Connection: close")
	}
}

func TestForwardBodies(t *testing.T) {
	o := newRecordingOrigin(t)
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	br := bufio.NewReader(c)
	u := o.URL + "/upload"
	big := strings.Repeat("0123456789", 50000) // larger than every buffer

	requests := []struct {
		name, raw, body string
	}{
		{"content-length", "POST " + u + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"chunked", "PUT " + u + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", "abcdefg"},
		{"large", "POST " + u + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, big},
		{"empty", "GET " + u + " HTTP/1.1\r\nHost: x\r\n\r\n", ""},
	}
	for _, rq := range requests {
		go io.WriteString(c, rq.raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", rq.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("got %d bytes", len(rq.body)); string(b) != want || resp.Close {
			t.Errorf("%s: response %q close=%v, want %q", rq.name, b, resp.Close, want)
		}
		if _, body := o.last(); body != rq.body {
			t.Errorf("%s: origin got %d bytes, want %d", rq.name, len(body), len(rq.body))
		}
	}
	if n := p.accepts.Load(); n != 1 {
		t.Errorf("%d connections", n)
	}
}

func TestExpectContinue(t *testing.T) {
	o := newRecordingOrigin(t)
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "POST %s/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n", o.URL)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("interim: %v %+v", err, resp)
	}
	io.WriteString(c, "data")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("final: %v %+v", err, resp)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "got 4 bytes" {
		t.Errorf("body %q", b)
	}
}

func TestPipelinedRequests(t *testing.T) {
	a := httptest.NewServer(infoHandler("a"))
	defer a.Close()
	b := httptest.NewServer(infoHandler("b"))
	defer b.Close()
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	fmt.Fprintf(c, "GET %s/1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD %s/2 HTTP/1.1\r\nHost: y\r\n\r\nGET %s/3 HTTP/1.1\r\nHost: z\r\nConnection: close\r\n\r\n",
		a.URL, b.URL, b.URL)
	br := bufio.NewReader(c)
	for i, want := range []string{"a GET /1", "", "b GET /3"} {
		method := "GET"
		if i == 1 {
			method = "HEAD"
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), want) || (i == 1 && len(body) != 0) {
			t.Errorf("response %d: %d %q, want prefix %q", i, resp.StatusCode, body, want)
		}
		if i == 1 && resp.ContentLength <= 0 {
			t.Errorf("HEAD lost Content-Length: %d", resp.ContentLength)
		}
		if i == 2 && !resp.Close {
			t.Error("last response not Connection: close")
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after Connection: close: %q %v", rest, err)
	}
}

// rawOrigin serves one canned response per connection, then closes.
func rawOrigin(t *testing.T, response string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, response)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestCloseDelimitedResponse(t *testing.T) {
	// No Content-Length, no chunking: the body ends when the origin closes,
	// which only reaches the proxy if the tunnel half-closes.
	origin := rawOrigin(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	br := bufio.NewReader(c)
	for range 2 { // re-chunked, so the client connection survives
		fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: x\r\n\r\n", origin)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "until the end" || resp.Close || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("%q %v close=%v te=%v", body, err, resp.Close, resp.TransferEncoding)
		}
	}
}

func TestHTTP10Client(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part one, ")
		w.(http.Flusher).Flush() // forces chunked toward the proxy
		io.WriteString(w, "part two")
	}))
	defer origin.Close()
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	fmt.Fprintf(c, "GET %s/ HTTP/1.0\r\n\r\n", origin.URL)
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(all)
	if !strings.HasPrefix(s, "HTTP/1.1 200 OK\r\n") || strings.Contains(s, "chunked") ||
		!strings.HasSuffix(s, "\r\n\r\npart one, part two") || !strings.Contains(s, "Connection: close") {
		t.Fatalf("response %q", s)
	}
}

func TestStreamingResponse(t *testing.T) {
	release := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second")
	}))
	defer origin.Close()
	defer close(release)
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	fmt.Fprintf(c, "GET %s/ HTTP/1.1\r\nHost: x\r\n\r\n", origin.URL)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first part arrives while the origin is still holding the rest.
	if got := readN(t, resp.Body, 5); string(got) != "first" {
		t.Fatalf("got %q", got)
	}
}

func TestHeaderLimit(t *testing.T) {
	o := newRecordingOrigin(t)
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	for _, tt := range []struct {
		size   int
		status int
	}{{60 << 10, 200}, {70 << 10, 431}, {1 << 20, 431}} {
		c := rawConn(t, p.addr)
		go fmt.Fprintf(c, "GET %s/ HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", o.URL, strings.Repeat("b", tt.size))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != tt.status {
			t.Errorf("%d-byte header: %v %v, want %d", tt.size, err, resp, tt.status)
		}
	}
}

func TestNotProxyRequests(t *testing.T) {
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http:///nohost HTTP/1.1\r\nHost: example.com\r\n\r\n",
	} {
		h := &relayHandler{report: true}
		p := startProxy(t, &Server{}, h)
		c := rawConn(t, p.addr)
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 400 || !resp.Close {
			t.Errorf("%q: %v %+v", raw, err, resp)
		}
		if err := <-p.errs; err == nil {
			t.Errorf("%q: ServeConn returned nil", raw)
		}
		if len(h.requests()) != 0 {
			t.Errorf("%q: handler called", raw)
		}
	}
}

func TestMalformedLaterRequest(t *testing.T) {
	p := startProxy(t, &Server{}, memOrigin{})
	c := rawConn(t, p.addr)
	io.WriteString(c, "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nthis is not http\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %+v", err, resp)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 400 {
		t.Fatalf("second: %v %+v", err, resp)
	}
	if err := <-p.errs; err == nil || errors.Is(err, protocols.ErrNotProtocol) {
		t.Errorf("ServeConn: %v", err)
	}
}

// TestNotHTTP checks the tunnel.Server contract: a client that does not
// speak HTTP gets ErrNotProtocol, nothing written, and an open conn.
func TestNotHTTP(t *testing.T) {
	for _, first := range []string{
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // TLS ClientHello
		"\x05\x01\x00",            // SOCKS5 greeting
		"SSH-2.0-OpenSSH_9.6\r\n", // a line, but not a request
	} {
		server, client := net.Pipe()
		res := make(chan error, 1)
		go func() { res <- (&Server{}).ServeConn(context.Background(), server, memOrigin{}) }()
		go io.WriteString(client, first)
		select {
		case err := <-res:
			if !errors.Is(err, protocols.ErrNotProtocol) {
				t.Fatalf("%q: ServeConn: %v", first, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: ServeConn still waiting", first)
		}
		go server.Write([]byte("!"))
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got := readN(t, client, 1); string(got) != "!" {
			t.Fatalf("%q: client read %q", first, got)
		}
		server.Close()
		client.Close()
	}
}

func TestCleanClose(t *testing.T) {
	p := startProxy(t, &Server{}, memOrigin{})
	c := rawConn(t, p.addr)
	c.Close()
	if err := <-p.errs; err != nil {
		t.Errorf("idle close: %v", err)
	}
	c = rawConn(t, p.addr)
	io.WriteString(c, "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %+v", err, resp)
	}
	c.Close()
	if err := <-p.errs; err != nil {
		t.Errorf("close after a request: %v", err)
	}
}

func TestContextCancelClosesConn(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- (&Server{}).ServeConn(ctx, server, memOrigin{}) }()
	io.WriteString(client, "GET http://a/")
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ServeConn: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn did not return")
	}
}

func TestOriginMisbehaves(t *testing.T) {
	for name, response := range map[string]string{
		"no response":  "",
		"garbage":      "SSH-2.0-x\r\n\r\n",
		"unasked 101":  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
		"huge headers": "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("x", 2<<20) + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			origin := rawOrigin(t, response)
			p := startProxy(t, &Server{}, &relayHandler{report: true})
			c := rawConn(t, p.addr)
			fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: x\r\n\r\n", origin)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 502 || !resp.Close {
				t.Fatalf("%v %+v", err, resp)
			}
		})
	}
}

func TestEarlyResponseDropsUnreadBody(t *testing.T) {
	// The origin answers without reading the upload; the client is still
	// sending it, so the proxy cannot find the next request: it closes.
	origin := rawOrigin(t, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n")
	p := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, p.addr)
	fmt.Fprintf(c, "POST http://%s/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nstart", origin)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 413 {
		t.Fatalf("%v %+v", err, resp)
	}
	select {
	case <-p.errs:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn still waiting for the body")
	}
}

func TestErrorResponse(t *testing.T) {
	got := string(errorResponse(407, "auth", false, []string{"Proxy-Authenticate", `Basic realm="portico"`}))
	want := "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"portico\"\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nauth\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(errorResponse(502, "x\n", true, nil)))), nil)
	if err != nil || resp.StatusCode != 502 || !resp.Close || resp.ContentLength != 2 {
		t.Errorf("502: %v %+v", err, resp)
	}
}

func TestStatusFor(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{protocols.ErrBlocked, 403},
		{fmt.Errorf("x: %w", protocols.ErrBlocked), 403},
		{context.DeadlineExceeded, 504},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ETIMEDOUT)}, 504},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, 502},
		{errors.New("x"), 502},
	} {
		if got := statusFor(tt.err); got != tt.want {
			t.Errorf("statusFor(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestRemoveHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":       {"close, X-A", "x-b"},
		"X-A":              {"1"},
		"X-B":              {"2"},
		"X-C":              {"3"},
		"Keep-Alive":       {"timeout=1"},
		"Proxy-Connection": {"keep-alive"},
		"Te":               {"trailers"},
		"Trailer":          {"X-T"},
		"Upgrade":          {"h2c"},
	}
	removeHopByHop(h)
	if len(h) != 1 || h.Get("X-C") != "3" {
		t.Errorf("left %v", h)
	}
}

func TestForwardTarget(t *testing.T) {
	for _, tt := range []struct {
		uri  string
		want string // "" for an error
	}{
		{"http://example.com/x", "example.com:80"},
		{"http://example.com:8080", "example.com:8080"},
		{"http://127.0.0.1:81/", "127.0.0.1:81"},
		{"http://[2001:db8::1]/", "[2001:db8::1]:80"},
		{"HTTP://Example.com/", "Example.com:80"},
		{"https://example.com/", ""},
		{"/relative", ""},
		{"http:///x", ""},
		{"http://example.com:99999/", ""},
	} {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + tt.uri + " HTTP/1.1\r\nHost: h\r\n\r\n")))
		if err != nil {
			if tt.want != "" {
				t.Errorf("%s: %v", tt.uri, err)
			}
			continue
		}
		got, err := forwardTarget(req)
		if (tt.want == "") != (err != nil) || (err == nil && got.String() != tt.want) {
			t.Errorf("%s: %v %v, want %q", tt.uri, got, err, tt.want)
		}
	}
}

func TestHalfPipe(t *testing.T) {
	a, b := halfPipe()
	defer a.Close()
	defer b.Close()
	go func() {
		io.WriteString(a, "request")
		a.CloseWrite()
	}()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "request" {
		t.Fatalf("b read %q %v", got, err)
	}
	// a can still read after its CloseWrite.
	go func() { io.WriteString(b, "response"); b.Close() }()
	got, err = io.ReadAll(a)
	if err != nil || string(got) != "response" {
		t.Fatalf("a read %q %v", got, err)
	}
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("write after CloseWrite succeeded")
	}
	a2, b2 := halfPipe()
	defer b2.Close()
	a2.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := a2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	a2.Close()
	if _, err := b2.Write([]byte("x")); err == nil {
		t.Error("write to a closed peer succeeded")
	}
}

func TestLooksLikeRequestLine(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"GET / HTTP/1.1\r\n", true},
		{"CONNECT example.com:http HTTP/1.1\r\nHost: x\r\n", true},
		{"get http://x/ HTTP/1.0\n", true},
		{"GET /very-long-line-without-its-end", true},
		{"BREW /pot HTTCPCP/1.0\r\n", false},
		{"GET /\r\n", false},
		{"SSH-2.0-OpenSSH_9.6\r\n", false},
		{"\x16\x03\x01\x02\x00", false},
		{" GET / HTTP/1.1\r\n", false},
		{"GE(T / HTTP/1.1\r\n", false},
		{"", false},
	} {
		if got := looksLikeRequestLine([]byte(tt.in)); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestLimitReader(t *testing.T) {
	lr := &limitReader{r: strings.NewReader("0123456789"), n: 4, recMax: 3}
	b, err := io.ReadAll(lr)
	if string(b) != "0123" || !errors.Is(err, errHeaderTooLarge) || !lr.hit || string(lr.rec) != "012" {
		t.Errorf("got %q %v hit=%v rec=%q", b, err, lr.hit, lr.rec)
	}
	lr.n = -1
	if b, err := io.ReadAll(lr); string(b) != "456789" || err != nil {
		t.Errorf("unlimited: %q %v", b, err)
	}
}
