// Package httpupgrade is Xray's "HTTPUpgrade" transport: an HTTP/1.1
// request that looks like a WebSocket upgrade (GET, Connection: Upgrade,
// Upgrade: websocket) answered by "101 Switching Protocols", after which
// the raw connection — no WebSocket framing — is the tunnel. It passes
// CDNs and proxies that forward WebSocket upgrades, at the cost of nothing
// per byte.
//
// The server side is a [Handler] for one path; the client side is a
// [Dialer], a tunnel.ConnDialer.
//
// Early data: as in Xray (whose httpupgrade client with "ed" returns the
// connection without waiting for the 101), a client URL with "?ed=N" sends
// its first bytes right behind the request, in the same write, instead of
// a round trip later. The server finds them in net/http's buffer after the
// request and hands them out first. The N itself does not matter here; the
// parameter is taken out of the path requested.
//
// Half-close, deadlines and addresses are the underlying connection's:
// CloseWrite works when that connection can half-close (TCP, TLS).
package httpupgrade

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// handshakeTimeout bounds the writing of the 101 and, in the client, the
// whole upgrade when the context has no deadline.
const handshakeTimeout = 10 * time.Second

// Handler serves the HTTPUpgrade tunnels of one route.
//
// A request is a tunnel when it is an HTTP/1.x GET for Path (the query is
// ignored), with the Host when Host is set, whose Connection header has the
// "upgrade" token and whose Upgrade header has "websocket". Everything else
// — another path, a plain GET, HTTP/2 (which cannot upgrade) — goes to Next
// unchanged, so that a prober sees the site.
//
// Serve is called once per tunnel, on a goroutine of its own, after the
// 101 has been written, with the raw connection (bytes the client sent
// behind its request come first) and the request that carried it (whose
// context is done: ServeHTTP has returned). When Serve returns the conn is
// closed. RemoteAddr is the request's
// RemoteAddr, LocalAddr comes from http.LocalAddrContextKey. Deadlines the
// http.Server set are cleared before Serve.
//
// Fields must not change once the Handler serves requests.
type Handler struct {
	Path  string       // exact path; "" means "/", and a missing leading "/" is added
	Host  string       // required Host (case-insensitive, port ignored unless given); "" = any
	Next  http.Handler // the site for everything else; nil = 404
	Serve func(conn net.Conn, r *http.Request)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.matches(r) {
		h.next(w, r)
		return
	}
	raw, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.next(w, r) // not an HTTP/1 connection after all
		return
	}
	raw.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := raw.Write(response(r.Header.Get("Sec-Websocket-Key"))); err != nil {
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	// Whatever the client sent behind the request (early data) sits in
	// net/http's reader.
	var pending []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pending = append([]byte(nil), b...)
	}
	c := newConn(raw, pending, localAddr(r, raw.LocalAddr()), remoteAddr(r, raw.RemoteAddr()))
	// The tunnel runs on a goroutine of its own and ServeHTTP returns:
	// net/http is done with a hijacked connection, and its goroutine (with
	// the stack its request grew, 16 KiB) and its buffers go with it.
	go func() {
		defer c.Close()
		if h.Serve != nil {
			h.Serve(c, r)
		}
	}()
}

// response is the 101, with Sec-WebSocket-Accept when the client sent a
// key (as Xray's server does, for the benefit of WebSocket-checking
// middleboxes).
func response(key string) []byte {
	b := []byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
	if key != "" {
		b = append(b, "Sec-WebSocket-Accept: "...)
		b = append(b, acceptKey(key)...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// acceptKey is RFC 6455's Sec-WebSocket-Accept for key.
func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func (h *Handler) next(w http.ResponseWriter, r *http.Request) {
	if h.Next != nil {
		h.Next.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}

func (h *Handler) matches(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Method == http.MethodGet &&
		requestPath(r) == normalizePath(h.Path) && hostMatches(h.Host, r.Host) &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// requestPath is r's path with anything from a literal '?' on removed, for
// clients that escape the query of a configured path like "/up?ed=2048".
func requestPath(r *http.Request) string {
	p := r.URL.Path
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return p
}

func normalizePath(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}

// hostMatches compares a configured host with a request's Host:
// case-insensitively, and without the request's port unless want has one.
func hostMatches(want, got string) bool {
	if want == "" || strings.EqualFold(want, got) {
		return true
	}
	if h, _, err := net.SplitHostPort(got); err == nil {
		return strings.EqualFold(strings.Trim(want, "[]"), h)
	}
	return false
}

func remoteAddr(r *http.Request, fallback net.Addr) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return fallback
}

func localAddr(r *http.Request, fallback net.Addr) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		return a
	}
	return fallback
}

// errNoHalfClose is CloseWrite's error when the connection cannot half-close.
var errNoHalfClose = fmt.Errorf("httpupgrade: the underlying connection cannot half-close: %w", errors.ErrUnsupported)

// conn is the raw connection after the upgrade, with bytes already read
// from it served first and the addresses the HTTP layer saw.
type conn struct {
	net.Conn
	local, remote net.Addr

	hasPending atomic.Bool
	mu         sync.Mutex
	pending    []byte // guarded by mu
}

func newConn(c net.Conn, pending []byte, local, remote net.Addr) *conn {
	cc := &conn{Conn: c, local: local, remote: remote, pending: pending}
	cc.hasPending.Store(len(pending) > 0)
	return cc
}

func (c *conn) Read(p []byte) (int, error) {
	if c.hasPending.Load() {
		c.mu.Lock()
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			if len(c.pending) == 0 {
				c.pending = nil
				c.hasPending.Store(false)
			}
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying connection (TCP FIN, or TLS
// close_notify).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }
