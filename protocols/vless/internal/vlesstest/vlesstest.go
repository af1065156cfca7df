// Package vlesstest holds test helpers shared by the vlessserver and
// vlessclient tests: a loopback echo server, a checksummed bulk exchange, a
// relaying tunnel.Handler, a self-signed certificate, carrier dialers,
// and a runner for a real V2Ray peer. It is for tests only.
package vlesstest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// RelayHandler is a tunnel.Handler that dials the request's target and
// relays both ways with io.Copy, recording every request. Like the
// gateway's router it reports the dialled address (tunnel.RemoteReporter,
// unless NoReport) and the dial's outcome (tunnel.DialReporter), passes a
// clean end of one direction on as a half-close, and closes both sides
// when a direction fails (so a target's reset reaches the client as an
// abort, not as a clean end).
type RelayHandler struct {
	NoReport bool // do not call ReportRemote

	mu       sync.Mutex
	requests []tunnel.Request
}

// Requests returns the requests seen so far.
func (h *RelayHandler) Requests() []tunnel.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.Request(nil), h.requests...)
}

func (h *RelayHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	defer conn.Close()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", req.Target.String())
	if err == nil && !h.NoReport {
		if rr, ok := conn.(tunnel.RemoteReporter); ok {
			rr.ReportRemote(up.RemoteAddr().(*net.TCPAddr).AddrPort())
		}
	}
	if dr, ok := conn.(tunnel.DialReporter); ok {
		dr.ReportDial(err)
	}
	if err != nil {
		return err
	}
	defer up.Close()
	errc := make(chan error, 2)
	pass := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err != nil {
			conn.Close()
			up.Close()
		} else {
			CloseWrite(dst)
		}
		errc <- err
	}
	go pass(up, conn)
	go pass(conn, up)
	err = <-errc
	select {
	case err2 := <-errc:
		return errors.Join(err, err2)
	case <-time.After(10 * time.Second):
		return errors.Join(err, errors.New("relay: one direction still open 10s after the other ended"))
	}
}

// HandlePacket records req and relays the datagrams through one
// unconnected loopback UDP socket (IP destinations only), until pc ends or
// ctx is done; replies go back with their source.
func (h *RelayHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	defer pc.Close()
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	return RelayPackets(ctx, pc)
}

// ResetTarget starts a TCP server on 127.0.0.1 that reads once from each
// connection and then resets it (RST, SO_LINGER 0), and returns its
// address.
func ResetTarget(t testing.TB) protocols.Addr {
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
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Read(make([]byte, 1024))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	return protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
}

// CountingListener counts the connections it accepts.
type CountingListener struct {
	net.Listener
	n atomic.Int64
}

// Accept counts and returns the next connection.
func (l *CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// Accepted is the number of connections accepted so far.
func (l *CountingListener) Accepted() int64 { return l.n.Load() }

// Serve accepts on ln until it is closed and runs srv on every
// connection, wrapped in TLS when cfg is not nil. ServeConn errors are sent
// to the returned channel when there is room.
func Serve(t testing.TB, ln net.Listener, cfg *tls.Config, srv tunnel.Server, h tunnel.Handler) <-chan error {
	errs := make(chan error, 100)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			go func() {
				err := srv.ServeConn(context.Background(), c, h)
				if errors.Is(err, protocols.ErrNotProtocol) {
					c.Close()
				}
				select {
				case errs <- err:
				default:
				}
			}()
		}
	}()
	return errs
}
