// Package grpc is the gRPC transport as Xray calls it ("gun"): each tunnel
// is one bidirectional-streaming gRPC call, POST /<ServiceName>/Tun (or
// /TunMulti) over HTTP/2, whose messages are protobuf Hunks carrying the
// tunnel's bytes (the layout is in gun.go). It passes CDNs that proxy
// gRPC, and many tunnels share one HTTP/2 connection.
//
// The server side is a [Handler], an http.Handler written against
// net/http's HTTP/2 server (TLS or h2c) with hand-written framing — no
// gRPC library. The client side is a [Dialer] over
// golang.org/x/net/http2's Transport, a tunnel.ConnDialer.
//
// # Stream mapping
//
// A Write sends one message (several of at most 32 KiB when longer),
// flushed at once; Read returns data across message boundaries. The
// client's CloseWrite ends the request body, which the server reads as
// io.EOF. The server cannot end its half early — a gRPC server ends its
// side of a call with the status, when the call is over — so the server's
// conn has no CloseWrite; the response ends (trailers "grpc-status: 0")
// when Serve returns, and the client reads io.EOF then.
//
// # Deadlines
//
// SetReadDeadline and SetWriteDeadline interrupt blocked calls. A deadline
// that passes while nobody is reading (writing) only makes later calls
// fail; one that passes during a blocked read or a write the HTTP/2 layer
// has taken in part ends the stream, since an HTTP/2 body cannot be read
// or written on from the middle of an aborted call.
//
// # Connections
//
// A Dialer's tunnels share one HTTP/2 connection, and it dials another when
// the server's stream limit is reached. Until a new connection's SETTINGS
// arrive the client assumes a limit of 100 streams on it, so a burst that
// opens more tunnels at once than a server's lower limit (below 100; this
// package's server and gRPC's allow far more) gets the excess refused, and
// those tunnels fail: a call whose body has started cannot be retried.
package grpc

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/bufpool"
)

// Handler serves the gRPC tunnels of one service.
//
// A request is a tunnel when it is an HTTP/2 POST to one of the service's
// paths (see [Paths]), with content-type application/grpc or
// application/grpc+proto, and with the Host (:authority) when Host is set.
// Everything else — HTTP/1, another path or method, another content-type —
// goes to Next unchanged, so that a prober sees the site.
//
// Serve is called once per tunnel, in the request's goroutine, after the
// response headers (200, application/grpc) have been sent, with the tunnel
// and the request that carried it (for :authority, RemoteAddr and
// X-Forwarded-For; which to trust is the gateway's decision). When Serve
// returns the conn is closed and the call ends with trailers: grpc-status
// 0, or the code of a framing error the client made (with grpc-message).
// RemoteAddr is the request's RemoteAddr; LocalAddr comes from
// http.LocalAddrContextKey. Read and write deadlines an http.Server sets
// per request (ReadTimeout, WriteTimeout) are cleared before Serve.
//
// Fields must not change once the Handler serves requests.
type Handler struct {
	ServiceName string       // Xray's serviceName: "name", or a custom "/path/Tun|TunMulti"
	Host        string       // required :authority (case-insensitive, port ignored unless given); "" = any
	Next        http.Handler // the site for everything else; nil = 404
	Serve       func(conn net.Conn, r *http.Request)

	// MaxMessageSize bounds a received message; 0 means
	// DefaultMaxMessageSize. A larger message ends the call with
	// RESOURCE_EXHAUSTED.
	MaxMessageSize int
}

// Paths returns the request paths of a service name, following Xray
// (transport/internet/grpc/config.go): "name" is "/name/Tun" and
// "/name/TunMulti"; a name starting with "/" is a custom path whose last
// element names the streams: "/a/b|c" is "/a/b" and "/a/c", "/a/b" is
// "/a/b" for both. The paths are unescaped, as http.Request.URL.Path.
func Paths(serviceName string) (tun, multi string) {
	if !strings.HasPrefix(serviceName, "/") {
		return "/" + serviceName + "/Tun", "/" + serviceName + "/TunMulti"
	}
	i := strings.LastIndex(serviceName, "/")
	dir, streams := serviceName[:i+1], serviceName[i+1:]
	tun, multi, found := strings.Cut(streams, "|")
	if !found {
		multi = tun
	}
	return dir + tun, dir + multi
}

// requestPath is the path a client requests: that of Paths, with an
// old-style name escaped as Xray's client escapes it.
func requestPath(serviceName string, multi bool) string {
	if !strings.HasPrefix(serviceName, "/") {
		stream := "/Tun"
		if multi {
			stream = "/TunMulti"
		}
		return "/" + url.PathEscape(serviceName) + stream
	}
	tun, m := Paths(serviceName)
	if multi {
		return m
	}
	return tun
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.matches(r) {
		if h.Next != nil {
			h.Next.ServeHTTP(w, r)
		} else {
			http.NotFound(w, r)
		}
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/grpc")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	limit := h.MaxMessageSize
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	c := newServerConn(w, rc, r, limit)
	func() {
		defer c.Close()
		if h.Serve != nil {
			h.Serve(c, r)
		}
	}()
	c.finish()
	code, msg := c.status()
	w.Header().Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(code))
	if msg != "" {
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", encodeMessage(msg))
	}
}

func (h *Handler) matches(r *http.Request) bool {
	if r.ProtoMajor != 2 || r.Method != http.MethodPost || !isGRPC(r.Header.Get("Content-Type")) || !hostMatches(h.Host, r.Host) {
		return false
	}
	tun, multi := Paths(h.ServiceName)
	return r.URL.Path == tun || r.URL.Path == multi
}

// isGRPC accepts the content-types of protobuf gRPC.
func isGRPC(ct string) bool {
	ct, _, _ = strings.Cut(ct, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	return ct == "application/grpc" || ct == "application/grpc+proto"
}

// encodeMessage percent-encodes a grpc-message value
// (PROTOCOL-HTTP2.md: bytes outside 0x20–0x7E, and '%').
func encodeMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)>>4, 16)+strconv.FormatUint(uint64(c)&15, 16)))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func hostMatches(want, got string) bool {
	if want == "" || strings.EqualFold(want, got) {
		return true
	}
	if h, _, err := net.SplitHostPort(got); err == nil {
		return strings.EqualFold(strings.Trim(want, "[]"), h)
	}
	return false
}

// serverConn is a tunnel on a gRPC call served by net/http.
type serverConn struct {
	w             http.ResponseWriter
	rc            *http.ResponseController
	body          io.ReadCloser
	local, remote net.Addr

	rmu sync.Mutex // serializes Reads
	fr  frameReader

	wmu sync.Mutex // serializes Writes

	// ctl guards every use of rc from other goroutines (deadline aborts,
	// Close) against the end of the handler, after which rc and w must
	// not be touched.
	ctl      sync.Mutex
	finished bool

	rdl, wdl *deadline
	closed   atomic.Bool
}

func newServerConn(w http.ResponseWriter, rc *http.ResponseController, r *http.Request, limit int) *serverConn {
	c := &serverConn{w: w, rc: rc, body: r.Body, remote: remoteAddr(r), local: localAddr(r)}
	c.fr = frameReader{r: r.Body, limit: limit}
	c.rdl = newDeadline(func() { c.control(func() { c.rc.SetReadDeadline(time.Now()) }) })
	c.wdl = newDeadline(func() { c.control(func() { c.rc.SetWriteDeadline(time.Now()) }) })
	return c
}

// control runs f on the response controller unless the handler is done.
func (c *serverConn) control(f func()) {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if !c.finished {
		f()
	}
}

// finish is called by the handler before it returns.
func (c *serverConn) finish() {
	c.ctl.Lock()
	c.finished = true
	c.ctl.Unlock()
	c.rdl.set(time.Time{})
	c.wdl.set(time.Time{})
}

// status is the call's gRPC status: the framing error the client made, if
// any.
func (c *serverConn) status() (int, string) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if code, ok := protocolError(c.fr.err); ok {
		return code, c.fr.err.Error()
	}
	return codeOK, ""
}

func (c *serverConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return 0, opError("read", c.local, c.remote, net.ErrClosed)
	}
	if c.rdl.begin() {
		return 0, timeoutError("read", c.local, c.remote)
	}
	defer c.rdl.end()
	n, err := c.fr.Read(p)
	if err != nil && err != io.EOF {
		switch {
		case c.closed.Load():
			err = opError("read", c.local, c.remote, net.ErrClosed)
		case c.rdl.expired():
			err = timeoutError("read", c.local, c.remote)
		}
	}
	return n, err
}

// Write sends p as Hunk messages of up to 32 KiB, flushing each.
func (c *serverConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, opError("write", c.local, c.remote, net.ErrClosed)
	}
	if c.wdl.begin() {
		return 0, timeoutError("write", c.local, c.remote)
	}
	defer c.wdl.end()
	bp := bufpool.Large()
	defer bufpool.Put(bp)
	n := 0
	for n < len(p) {
		// One message per ResponseWriter write: net/http hands each write
		// to its connection's goroutine and waits for the frames to go out,
		// so a header written apart from its data costs a round of that (and
		// a small DATA frame of its own).
		chunk := p[n:min(len(p), n+maxChunk)]
		msg := append(appendHunkHeader((*bp)[:0], len(chunk)), chunk...)
		_, err := c.w.Write(msg)
		if err == nil {
			err = c.rc.Flush()
		}
		if err != nil {
			switch {
			case c.closed.Load():
				err = opError("write", c.local, c.remote, net.ErrClosed)
			case c.wdl.expired():
				err = timeoutError("write", c.local, c.remote)
			default:
				err = opError("write", c.local, c.remote, err)
			}
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

// Close ends the tunnel: a blocked Read returns, a blocked Write is
// aborted (resetting the stream: its message is cut), and later calls
// fail. The call itself ends when Serve returns.
func (c *serverConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.body.Close()
	if !c.wmu.TryLock() {
		c.control(func() { c.rc.SetWriteDeadline(time.Now()) })
		c.wmu.Lock() // the Write returns
	}
	c.wmu.Unlock()
	return nil
}

func (c *serverConn) LocalAddr() net.Addr  { return c.local }
func (c *serverConn) RemoteAddr() net.Addr { return c.remote }

func (c *serverConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *serverConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *serverConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// remoteAddr is the request's RemoteAddr as a *net.TCPAddr (or the
// unspecified address, should it not parse).
func remoteAddr(r *http.Request) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}

// localAddr is the address the request arrived at.
func localAddr(r *http.Request) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		return a
	}
	return &net.TCPAddr{}
}
