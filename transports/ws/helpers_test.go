package ws

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// siteBody is what the decoy site answers, so tests can tell it from a
// WebSocket error.
const siteBody = "the site"

// site is the decoy: 404 with siteBody, counting its requests.
type site struct{ hits atomic.Int32 }

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, siteBody)
}

// echo is a Serve func that echoes until the peer closes.
func echo(conn net.Conn, r *http.Request) {
	buf := make([]byte, 32<<10)
	io.CopyBuffer(conn, struct{ io.Reader }{conn}, buf)
}

// server starts an httptest server for h, over TLS (with HTTP/2 offered, as
// the gateway does) or plain, and returns it with a client TLS config that
// trusts it.
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

// wsURL turns an httptest URL into a ws:// or wss:// URL with path.
func wsURL(srv *httptest.Server, path string) string {
	u := strings.Replace(srv.URL, "http", "ws", 1)
	return u + path
}

// exchange writes size pseudo-random bytes to conn in chunks of up to
// chunk bytes while reading size bytes back, and compares SHA-256 sums.
func exchange(conn net.Conn, size int64, seed uint64) error {
	type result struct {
		sum [32]byte
		err error
	}
	sent := make(chan result, 1)
	go func() {
		h := sha256.New()
		src := mathrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7})
		rng := mathrand.New(src)
		buf := make([]byte, 32<<10)
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
		var r result
		h.Sum(r.sum[:0])
		sent <- r
	}()
	h := sha256.New()
	got, rerr := io.CopyN(h, conn, size)
	w := <-sent
	if rerr != nil {
		return fmt.Errorf("read %d of %d bytes: %w (writer: %v)", got, size, rerr, w.err)
	}
	if w.err != nil {
		return w.err
	}
	if !bytes.Equal(h.Sum(nil), w.sum[:]) {
		return fmt.Errorf("SHA-256 of the %d bytes read back differs from the bytes written", size)
	}
	return nil
}

// recorder is a net.Conn that records what is written to it and can hold
// writes after the first one until released.
type recorder struct {
	net.Conn
	writes  atomic.Int32
	written bytes.Buffer  // guarded by the single writer
	gate    chan struct{} // when not nil, writes after the first wait for it
}

func (c *recorder) Write(p []byte) (int, error) {
	if c.writes.Add(1) > 1 && c.gate != nil {
		select {
		case <-c.gate:
		case <-time.After(10 * time.Second):
			return 0, fmt.Errorf("recorder: gate never opened")
		}
	}
	c.written.Write(p)
	return c.Conn.Write(p)
}

// writeFirst writes s and reads it back from an echoing peer, so that the
// tunnel's first call is a Write (which carries early data).
func writeFirst(c net.Conn, s string) error {
	if _, err := c.Write([]byte(s)); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, len(s))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != s {
		return fmt.Errorf("echo of the first write: %q", b)
	}
	return nil
}
