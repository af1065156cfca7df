package vlessserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// e2e wires our client to our server over loopback TCP (with TLS when
// withTLS), with a relaying handler in front of an echo server.
type e2e struct {
	echo    protocols.Addr
	handler *vlesstest.RelayHandler
	errs    <-chan error
	carrier vlesstest.Dialer
}

func newE2E(t *testing.T, withTLS bool) *e2e {
	t.Helper()
	srv := newServer(t, vlessserver.Options{Inbound: "e2e"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{echo: vlesstest.Echo(t), handler: new(vlesstest.RelayHandler), carrier: vlesstest.Dialer{Addr: ln.Addr().String()}}
	var cfg *tls.Config
	if withTLS {
		cert := vlesstest.SelfSigned(t)
		cfg = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
		e.carrier.TLS = &tls.Config{RootCAs: cert.Pool, ServerName: "localhost"}
	}
	e.errs = vlesstest.Serve(t, ln, cfg, srv, e.handler)
	return e
}

func (e *e2e) client(t *testing.T, id uuid.UUID) *vlessclient.Client {
	t.Helper()
	c, err := vlessclient.New(vlessclient.Options{ID: id, Carrier: e.carrier})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEndToEnd moves 4 MiB each way through client, server, relay and echo,
// over TCP and TLS, and checks the bytes by SHA-256.
func TestEndToEnd(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			e := newE2E(t, withTLS)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := e.client(t, alice).DialStream(ctx, e.echo)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if err := vlesstest.Exchange(conn, 4<<20, 1); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if err := <-e.errs; err != nil {
				t.Logf("ServeConn: %v", err) // the relay may see the close as a reset
			}
			reqs := e.handler.Requests()
			if len(reqs) != 1 || reqs[0].User != "alice@example.com" || reqs[0].Target != e.echo || reqs[0].Inbound != "e2e" {
				t.Errorf("requests = %+v", reqs)
			}
		})
	}
}

// TestEndToEndConcurrent runs several tunnels at once, one per user.
func TestEndToEndConcurrent(t *testing.T) {
	e := newE2E(t, true)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := []uuid.UUID{alice, bob}[i%2]
			conn, err := e.client(t, id).DialStream(context.Background(), e.echo)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if err := vlesstest.Exchange(conn, 512<<10, uint64(i)); err != nil {
				t.Errorf("tunnel %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if n := len(e.handler.Requests()); n != 8 {
		t.Errorf("%d requests, want 8", n)
	}
}

// TestHalfClose: a small payload written with the header, then CloseWrite;
// the echo comes back, then EOF. Nothing is lost between the header and
// the payload in the same write.
func TestHalfClose(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		e := newE2E(t, withTLS)
		conn, err := e.client(t, bob).DialStream(context.Background(), e.echo)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("ping with the header")); err != nil {
			t.Fatal(err)
		}
		if err := vlesstest.CloseWrite(conn); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "ping with the header" {
			t.Errorf("tls=%v: ReadAll = %q, %v", withTLS, got, err)
		}
		conn.Close()
	}
}

// TestWrongUUIDEndToEnd: our real client with an unknown id gets nothing
// back; the server reports ErrNotProtocol and wrote nothing (the harness
// then closes, as a gateway without a decoy would).
func TestWrongUUIDEndToEnd(t *testing.T) {
	e := newE2E(t, false)
	conn, err := e.client(t, eve).DialStream(context.Background(), e.echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("hello"))
	n, err := conn.Read(make([]byte, 100))
	if n != 0 || err != io.EOF {
		t.Errorf("Read = %d, %v; want 0, EOF (the server wrote nothing)", n, err)
	}
	if err := <-e.errs; !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, vlessserver.ErrUnknownUser) {
		t.Errorf("ServeConn = %v", err)
	}
	if len(e.handler.Requests()) != 0 {
		t.Error("handler called for an unknown user")
	}
}
