package socks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// relayHandler is a fake router: it dials the target over loopback TCP (or
// returns dialErr), reports the outcome, and relays with io.Copy.
type relayHandler struct {
	dialErr error // when set, the dial "fails" with it
	report  bool  // call ReportDial (a well-behaved handler does)

	mu   sync.Mutex
	reqs []tunnel.Request
}

func (h *relayHandler) requests() []tunnel.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.Request(nil), h.reqs...)
}

func (h *relayHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	defer conn.Close()
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.mu.Unlock()
	dr, _ := conn.(tunnel.DialReporter)
	var out net.Conn
	err := h.dialErr
	if err == nil {
		var d net.Dialer
		out, err = d.DialContext(ctx, "tcp", req.Target.String())
	}
	if h.report && dr != nil {
		dr.ReportDial(err)
	}
	if err != nil {
		return err
	}
	defer out.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, conn)
		_ = out.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(conn, out)
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	<-done
	return nil
}

func (h *relayHandler) HandlePacket(context.Context, tunnel.PacketConn, tunnel.Request) error {
	return errors.New("no packets")
}

// startProxy runs srv on a loopback listener; ServeConn's errors go to the
// returned channel.
func startProxy(t *testing.T, srv *Server, h tunnel.Handler) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
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
				err := srv.ServeConn(ctx, c, h)
				if errors.Is(err, protocols.ErrNotProtocol) {
					c.Close()
				}
				errs <- err
			}()
		}
	}()
	return ln.Addr().String(), errs
}

func echoRoundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func TestXNetClientNoAuth(t *testing.T) {
	echo := nettest.Echo(t)
	h := &relayHandler{report: true}
	addr, _ := startProxy(t, &Server{Inbound: "local-socks"}, h)
	d, err := proxy.SOCKS5("tcp", addr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{echo.String(), net.JoinHostPort("localhost", strconv.Itoa(echo.Port))} {
		c, err := d.Dial("tcp", target)
		if err != nil {
			t.Fatalf("dial %s: %v", target, err)
		}
		echoRoundTrip(t, c, "hello through socks "+target)
		c.Close()
	}
	reqs := h.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	want := tunnel.Request{Protocol: "socks", Network: protocols.NetworkTCP, Target: protocols.AddrFromAddrPort(echo.AddrPort()),
		Inbound: "local-socks", Transport: "socks"}
	got := reqs[0]
	if !got.Source.Addr().IsLoopback() || got.Source.Port() == 0 {
		t.Errorf("source = %v", got.Source)
	}
	got.Source = netip.AddrPort{}
	if got != want {
		t.Errorf("request = %+v, want %+v", got, want)
	}
	if d := reqs[1].Target; d.Domain != "localhost" || d.Port != uint16(echo.Port) {
		t.Errorf("domain target = %v", d)
	}
}

func TestXNetClientUserPass(t *testing.T) {
	echo := nettest.Echo(t)
	h := &relayHandler{report: true}
	srv := &Server{Users: map[string]string{"alice": "secret", "bob": "hunter2"}}
	addr, errs := startProxy(t, srv, h)

	d, _ := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: "alice", Password: "secret"}, nil)
	c, err := d.Dial("tcp", echo.String())
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, c, "authenticated")
	c.Close()
	if reqs := h.requests(); len(reqs) != 1 || reqs[0].User != "alice" {
		t.Fatalf("requests = %+v, want one by alice", reqs)
	}
	if err := <-errs; err != nil {
		t.Errorf("ServeConn: %v", err)
	}

	for _, tt := range []struct {
		name string
		auth *proxy.Auth
		want error
	}{
		{"wrong password", &proxy.Auth{User: "alice", Password: "hunter2"}, ErrAuthFailed},
		{"unknown user", &proxy.Auth{User: "mallory", Password: "secret"}, ErrAuthFailed},
		{"no credentials", nil, ErrNoAcceptableMethod},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := proxy.SOCKS5("tcp", addr, tt.auth, nil)
			if c, err := d.Dial("tcp", echo.String()); err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if err := <-errs; !errors.Is(err, tt.want) {
				t.Errorf("ServeConn: %v, want %v", err, tt.want)
			}
		})
	}
	if n := len(h.requests()); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
}

// rawConn dials addr with a deadline.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v (got % x)", n, err, b)
	}
	return b
}

func TestAuthFailureBytes(t *testing.T) {
	addr, errs := startProxy(t, &Server{Users: map[string]string{"alice": "secret"}}, &relayHandler{})
	c := rawConn(t, addr)
	b, _ := AppendGreeting(nil, MethodNoAuth, MethodUserPass)
	b, _ = AppendUserPass(b, "alice", "wrong")
	c.Write(b)
	if got := readN(t, c, 4); !bytes.Equal(got, []byte{5, MethodUserPass, 1, AuthFailure}) {
		t.Fatalf("got % x", got)
	}
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after failure: read %d, %v; want EOF", n, err)
	}
	if err := <-errs; !errors.Is(err, ErrAuthFailed) {
		t.Errorf("ServeConn: %v", err)
	}

	// Only no-auth offered to a server that wants a password.
	c = rawConn(t, addr)
	c.Write([]byte{5, 1, MethodNoAuth})
	if got := readN(t, c, 2); !bytes.Equal(got, []byte{5, MethodNoAcceptable}) {
		t.Fatalf("got % x", got)
	}
	if err := <-errs; !errors.Is(err, ErrNoAcceptableMethod) {
		t.Errorf("ServeConn: %v", err)
	}
}

func TestDialReplyCodes(t *testing.T) {
	// A port with nothing listening, for a real ECONNREFUSED.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr)
	ln.Close()

	tests := []struct {
		name    string
		h       *relayHandler
		dst     protocols.Addr
		wantRep byte
	}{
		{"refused", &relayHandler{report: true}, protocols.AddrFromAddrPort(closed.AddrPort()), ReplyConnectionRefused},
		{"blocked", &relayHandler{report: true, dialErr: fmt.Errorf("rule 3: %w", protocols.ErrBlocked)}, domain, ReplyNotAllowed},
		{"timeout", &relayHandler{report: true, dialErr: fmt.Errorf("dial: %w", context.DeadlineExceeded)}, domain, ReplyTTLExpired},
		{"host unreachable", &relayHandler{report: true, dialErr: &net.OpError{Op: "dial", Net: "tcp",
			Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}}, v4, ReplyHostUnreachable},
		{"general", &relayHandler{report: true, dialErr: errors.New("tunnel down")}, domain, ReplyGeneralFailure},
		// A handler that ignores DialReporter and just returns: ServeConn
		// replies from the returned error.
		{"unreported refused", &relayHandler{}, protocols.AddrFromAddrPort(closed.AddrPort()), ReplyConnectionRefused},
		{"unreported blocked", &relayHandler{dialErr: protocols.ErrBlocked}, domain, ReplyNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, errs := startProxy(t, &Server{}, tt.h)
			c := rawConn(t, addr)
			err := Dial(context.Background(), c, tt.dst, "", "")
			var re *ReplyError
			if !errors.As(err, &re) || re.Code != tt.wantRep {
				t.Fatalf("Dial: %v, want reply %d", err, tt.wantRep)
			}
			if n, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("after failure reply: read %d, %v; want EOF", n, err)
			}
			if err := <-errs; err == nil {
				t.Error("ServeConn returned nil for a failed dial")
			}
		})
	}
}

// scriptedHandler lets a test drive ReportDial and the stream by hand.
type scriptedHandler struct {
	run func(conn net.Conn, req tunnel.Request) error
}

func (h scriptedHandler) HandleStream(_ context.Context, conn net.Conn, req tunnel.Request) error {
	defer conn.Close()
	return h.run(conn, req)
}

func (h scriptedHandler) HandlePacket(context.Context, tunnel.PacketConn, tunnel.Request) error {
	return errors.New("no packets")
}

func TestReplyWaitsForDial(t *testing.T) {
	release := make(chan struct{})
	h := scriptedHandler{run: func(conn net.Conn, req tunnel.Request) error {
		<-release
		conn.(tunnel.DialReporter).ReportDial(nil)
		_, err := io.WriteString(conn, "hi")
		return err
	}}
	addr, _ := startProxy(t, &Server{}, h)
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // runs before startProxy's cleanup, even after a failure
	c := rawConn(t, addr)
	b, _ := AppendGreeting(nil, MethodNoAuth)
	b, _ = AppendRequest(b, CmdConnect, domain)
	c.Write(b)
	if got := readN(t, c, 2); !bytes.Equal(got, []byte{5, 0}) {
		t.Fatalf("method selection % x", got)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("before the dial: read %d, %v; want a timeout", n, err)
	}
	unblock()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := append(AppendReply(nil, ReplySucceeded, protocols.Addr{}), "hi"...)
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestLazySuccessOnIO(t *testing.T) {
	for _, op := range []string{"write", "read", "closewrite"} {
		t.Run(op, func(t *testing.T) {
			h := scriptedHandler{run: func(conn net.Conn, req tunnel.Request) error {
				// Never reports.
				switch op {
				case "write":
					_, err := io.WriteString(conn, "hi")
					return err
				case "read":
					b := make([]byte, 2)
					if _, err := io.ReadFull(conn, b); err != nil {
						return err
					}
					_, err := conn.Write(b)
					return err
				default:
					if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
						return err
					}
					_, err := io.ReadAll(conn)
					return err
				}
			}}
			addr, errs := startProxy(t, &Server{}, h)
			c := rawConn(t, addr)
			if err := Dial(context.Background(), c, domain, "", ""); err != nil {
				t.Fatal(err)
			}
			switch op {
			case "read":
				c.Write([]byte("hi"))
				fallthrough
			case "write":
				if got := readN(t, c, 2); string(got) != "hi" {
					t.Fatalf("got %q", got)
				}
			default:
				if n, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("after CloseWrite: %d, %v", n, err)
				}
				c.(*net.TCPConn).CloseWrite()
			}
			if err := <-errs; err != nil {
				t.Errorf("ServeConn: %v", err)
			}
		})
	}
}

func TestStreamRefusesIOAfterFailure(t *testing.T) {
	ioErr := make(chan error, 2)
	h := scriptedHandler{run: func(conn net.Conn, req tunnel.Request) error {
		conn.(tunnel.DialReporter).ReportDial(protocols.ErrBlocked)
		conn.(tunnel.DialReporter).ReportDial(nil) // ignored: only the first report counts
		_, werr := conn.Write([]byte("x"))
		_, rerr := conn.Read(make([]byte, 1))
		ioErr <- werr
		ioErr <- rerr
		return protocols.ErrBlocked
	}}
	addr, _ := startProxy(t, &Server{}, h)
	c := rawConn(t, addr)
	var re *ReplyError
	if err := Dial(context.Background(), c, domain, "", ""); !errors.As(err, &re) || !errors.Is(err, protocols.ErrBlocked) {
		t.Fatalf("Dial: %v", err)
	}
	for range 2 {
		if err := <-ioErr; !errors.Is(err, protocols.ErrBlocked) {
			t.Errorf("I/O after failure: %v", err)
		}
	}
	if rest, _ := io.ReadAll(c); len(rest) != 0 {
		t.Errorf("bytes after failure reply: % x", rest)
	}
}

func TestCloseBeforeReport(t *testing.T) {
	h := scriptedHandler{run: func(conn net.Conn, req tunnel.Request) error {
		conn.Close()
		if _, err := conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("write after close: %v", err)
		}
		return fmt.Errorf("gave up: %w", context.DeadlineExceeded)
	}}
	addr, errs := startProxy(t, &Server{}, h)
	c := rawConn(t, addr)
	var re *ReplyError
	if err := Dial(context.Background(), c, domain, "", ""); !errors.As(err, &re) || re.Code != ReplyTTLExpired {
		t.Fatalf("Dial: %v, want TTL expired", err)
	}
	if err := <-errs; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ServeConn: %v", err)
	}
}

func TestPipelinedPayload(t *testing.T) {
	echo := nettest.Echo(t)
	addr, _ := startProxy(t, &Server{}, &relayHandler{report: true})
	c := rawConn(t, addr)
	// An optimistic client: greeting, request and payload in one write.
	b, _ := AppendGreeting(nil, MethodNoAuth)
	b, _ = AppendRequest(b, CmdConnect, protocols.AddrFromAddrPort(echo.AddrPort()))
	b = append(b, "early data"...)
	c.Write(b)
	want := append(append([]byte{5, 0}, AppendReply(nil, 0, protocols.Addr{})...), "early data"...)
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	echoRoundTrip(t, c, "and more")
}

func TestPipelinedAuth(t *testing.T) {
	echo := nettest.Echo(t)
	addr, _ := startProxy(t, &Server{Users: map[string]string{"u": "p"}}, &relayHandler{report: true})
	c := rawConn(t, addr)
	b, _ := AppendGreeting(nil, MethodUserPass)
	b, _ = AppendUserPass(b, "u", "p")
	b, _ = AppendRequest(b, CmdConnect, protocols.AddrFromAddrPort(echo.AddrPort()))
	b = append(b, "x"...)
	c.Write(b)
	want := append(append([]byte{5, 2, 1, 0}, AppendReply(nil, 0, protocols.Addr{})...), "x"...)
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestRefusedRequests(t *testing.T) {
	tests := []struct {
		name    string
		request []byte
		rep     byte
	}{
		{"bind", hexBytes(5, CmdBind, 0, 1, 127, 0, 0, 1, 0, 80), ReplyCommandNotSupported},
		{"unknown command", hexBytes(5, 9, 0, 1, 127, 0, 0, 1, 0, 80), ReplyCommandNotSupported},
		{"unknown address type", hexBytes(5, 1, 0, 7, 1, 2, 3, 4), ReplyAddressTypeNotSupported},
		{"empty domain", hexBytes(5, 1, 0, 3, 0, 0, 80), ReplyGeneralFailure},
		{"request version 4", hexBytes(4, 1, 0, 1, 127, 0, 0, 1, 0, 80), ReplyGeneralFailure},
		{"domain with slash", hexBytes(5, 1, 0, 3, 3, "a/b", 0, 80), ReplyHostUnreachable},
		{"domain with colon", hexBytes(5, 1, 0, 3, 3, "a:b", 0, 80), ReplyHostUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &relayHandler{report: true}
			addr, errs := startProxy(t, &Server{}, h)
			c := rawConn(t, addr)
			c.Write(append([]byte{5, 1, 0}, tt.request...))
			want := append([]byte{5, 0}, AppendReply(nil, tt.rep, protocols.Addr{})...)
			if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
				t.Fatalf("got % x, want % x", got, want)
			}
			if n, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("read %d, %v; want EOF", n, err)
			}
			err := <-errs
			if err == nil || errors.Is(err, protocols.ErrNotProtocol) || strings.Contains(err.Error(), "\n") {
				t.Errorf("ServeConn: %v", err)
			}
			if n := len(h.requests()); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
}

func TestIPLiteralDomainNormalized(t *testing.T) {
	echo := nettest.Echo(t)
	h := &relayHandler{report: true}
	addr, _ := startProxy(t, &Server{}, h)
	c := rawConn(t, addr)
	dst := protocols.Addr{Domain: "127.0.0.1", Port: uint16(echo.Port)}
	if err := Dial(context.Background(), c, dst, "", ""); err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, c, "x")
	if got := h.requests()[0].Target; got != protocols.AddrFromAddrPort(echo.AddrPort()) {
		t.Errorf("target = %#v, want the IP form", got)
	}
}

func TestMappedIPv6Unmapped(t *testing.T) {
	echo := nettest.Echo(t)
	h := &relayHandler{report: true}
	addr, _ := startProxy(t, &Server{}, h)
	c := rawConn(t, addr)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("127.0.0.1").As16()), uint16(echo.Port))
	c.Write(hexBytes(5, 1, 0, 5, 1, 0, 4, mapped.Addr().AsSlice(), byte(echo.Port>>8), byte(echo.Port)))
	want := append([]byte{5, 0}, AppendReply(nil, 0, protocols.Addr{})...)
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("got % x", got)
	}
	echoRoundTrip(t, c, "x")
	if got := h.requests()[0].Target; got != protocols.AddrFromAddrPort(echo.AddrPort()) || !got.IP.Is4() {
		t.Errorf("target = %#v, want the IPv4 form", got)
	}
}

// TestNotSOCKS5 checks the tunnel.Server contract for a client that is
// not SOCKS5: an error wrapping ErrNotProtocol, nothing written, conn open.
func TestNotSOCKS5(t *testing.T) {
	for _, first := range [][]byte{
		hexBytes(4, 1, 0, 80, 127, 0, 0, 1, "user", 0), // SOCKS4 CONNECT
		[]byte("GET http://example.com/ HTTP/1.1\r\n\r\n"),
	} {
		server, client := net.Pipe()
		res := make(chan error, 1)
		go func() { res <- (&Server{}).ServeConn(context.Background(), server, &relayHandler{}) }()
		go client.Write(first)
		err := <-res
		var ve *VersionError
		if !errors.As(err, &ve) || ve.Version != first[0] || !errors.Is(err, protocols.ErrNotProtocol) {
			t.Fatalf("ServeConn: %v, want VersionError %d", err, first[0])
		}
		// Still open, and nothing was written before: the first byte the
		// client reads is ours.
		go server.Write([]byte("!"))
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got := readN(t, client, 1); string(got) != "!" {
			t.Fatalf("client read %q", got)
		}
		server.Close()
		client.Close()
	}
}

func TestHandshakeAbortedByContext(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- (&Server{}).ServeConn(ctx, server, &relayHandler{}) }()
	client.Write([]byte{5}) // half a greeting, then silence
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ServeConn: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn did not return after cancel")
	}
	if _, err := client.Write([]byte{1}); err == nil {
		t.Error("conn still open after an aborted handshake")
	}
}

func TestDialClient(t *testing.T) {
	echo := nettest.Echo(t)
	h := &relayHandler{report: true}
	addr, _ := startProxy(t, &Server{Users: map[string]string{"alice": "secret"}}, h)

	c := rawConn(t, addr)
	if err := Dial(context.Background(), c, protocols.AddrFromAddrPort(echo.AddrPort()), "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, c, "via Dial")
	if got := h.requests()[0].User; got != "alice" {
		t.Errorf("user = %q", got)
	}

	c = rawConn(t, addr)
	if err := Dial(context.Background(), c, domain, "alice", "nope"); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("wrong password: %v", err)
	}
	c = rawConn(t, addr)
	if err := Dial(context.Background(), c, domain, "", ""); !errors.Is(err, ErrNoAcceptableMethod) {
		t.Errorf("no credentials: %v", err)
	}
	c = rawConn(t, addr)
	if err := Dial(context.Background(), c, domain, strings.Repeat("u", 256), ""); !errors.Is(err, ErrMalformed) {
		t.Errorf("long user: %v", err)
	}
}

func TestDialContext(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	go io.Copy(io.Discard, server) // a "proxy" that never answers
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Dial(ctx, client, domain, "", "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	// The deadline is cleared: the conn is usable again.
	go server.Write([]byte("x"))
	if _, err := client.Read(make([]byte, 1)); err != nil {
		t.Errorf("read after Dial: %v", err)
	}
}

func TestDialMalformedReplies(t *testing.T) {
	tests := []struct {
		name  string
		proxy []byte // everything the fake proxy sends
		want  error
	}{
		{"socks4 answer", []byte{0, 0x5a}, protocols.ErrNotProtocol},
		{"method not offered", []byte{5, MethodUserPass}, ErrMalformed},
		{"no acceptable", []byte{5, MethodNoAcceptable}, ErrNoAcceptableMethod},
		{"unknown address type", hexBytes(5, 0, 5, 0, 0, 9, 0, 0, 0, 0), protocols.ErrBadAddr},
		{"empty domain", hexBytes(5, 0, 5, 0, 0, 3, 0, 0, 0), protocols.ErrBadAddr},
		{"truncated", hexBytes(5, 0, 5, 0, 0, 1, 0), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				go io.Copy(io.Discard, server)
				server.Write(tt.proxy)
			}()
			if err := Dial(context.Background(), client, domain, "", ""); !errors.Is(err, tt.want) {
				t.Errorf("Dial: %v, want %v", err, tt.want)
			}
		})
	}
}
