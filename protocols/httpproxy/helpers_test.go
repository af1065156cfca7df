package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// relayHandler is a fake router: it dials the target over loopback TCP (or
// fails with dialErr), reports the outcome when report is set, and relays
// with io.Copy, half-closing each direction as it ends.
type relayHandler struct {
	dialErr error
	report  bool

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
	var out net.Conn
	err := h.dialErr
	if err == nil {
		var d net.Dialer
		out, err = d.DialContext(ctx, "tcp", req.Target.String())
	}
	if dr, ok := conn.(tunnel.DialReporter); ok && h.report {
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

// scriptedHandler runs a test's function as the handler.
type scriptedHandler func(conn net.Conn, req tunnel.Request) error

func (f scriptedHandler) HandleStream(_ context.Context, conn net.Conn, req tunnel.Request) error {
	defer conn.Close()
	return f(conn, req)
}

func (scriptedHandler) HandlePacket(context.Context, tunnel.PacketConn, tunnel.Request) error {
	return errors.New("no packets")
}

// memOrigin is a handler that is its own origin server, in memory: it
// reports a successful dial, then answers each forwarded request with a
// fixed response and echoes CONNECT streams. It needs no network.
type memOrigin struct{}

func (memOrigin) HandleStream(_ context.Context, conn net.Conn, req tunnel.Request) error {
	defer conn.Close()
	conn.(tunnel.DialReporter).ReportDial(nil)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if req.Target.Port == 443 {
		_, err := io.Copy(conn, conn)
		return err
	}
	r, err := http.ReadRequest(bufio.NewReader(conn))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, r.Body)
	_, err = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return err
}

func (memOrigin) HandlePacket(context.Context, tunnel.PacketConn, tunnel.Request) error {
	return errors.New("no packets")
}

type proxyInfo struct {
	addr    string
	errs    chan error    // what each ServeConn returned
	accepts *atomic.Int32 // client connections accepted
}

// startProxy runs srv on a loopback listener.
func startProxy(t *testing.T, srv *Server, h tunnel.Handler) proxyInfo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := proxyInfo{addr: ln.Addr().String(), errs: make(chan error, 100), accepts: new(atomic.Int32)}
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
			p.accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := srv.ServeConn(ctx, c, h)
				if errors.Is(err, protocols.ErrNotProtocol) {
					c.Close()
				}
				p.errs <- err
			}()
		}
	}()
	return p
}

// rawConn dials addr with a deadline.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", n, err, b)
	}
	return b
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
