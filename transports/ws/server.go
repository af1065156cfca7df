// Package ws is the WebSocket transport (RFC 6455, as V2Ray and Xray speak
// it): the tunnel's bytes ride in binary messages over an HTTP/1.1 upgrade.
//
// The server side is a [Handler], an http.Handler for one path that yields
// one net.Conn per upgraded request and sends everything else to the site.
// The client side is a [Dialer], a tunnel.ConnDialer.
//
// # Stream mapping
//
// Each Write sends one binary message (a Write longer than 32 KiB, several
// of 32 KiB), as one frame built in a pooled buffer and written with one
// write of the connection; Read returns message bytes, read straight into
// the caller's buffer, and spans message and frame boundaries, so their
// sizes carry no meaning. An idle tunnel holds no buffer. A text message is
// a protocol error (close code 1003), and so is broken framing (1002). A
// close frame from the peer is the end of its stream: Read returns io.EOF
// for codes 1000, 1001 and 1005, a *CloseError naming the code otherwise,
// and io.ErrUnexpectedEOF when the connection ends without a close frame.
//
// gorilla/websocket answers the server's upgrade; the framing after it
// (frame.go) is this package's own, and so is the client's upgrade
// request, worded as gorilla's.
//
// # Early data
//
// Xray's "?ed=N" (also V2Fly's maxEarlyData): the client puts up to N of its
// first bytes, base64url-encoded, in a request header — by default
// Sec-WebSocket-Protocol — so that the tunnel's first request travels with
// the upgrade and costs no extra round trip. The server decodes it (padded,
// unpadded, URL or standard alphabet), hands it out as the conn's first
// bytes, and echoes the header value in the 101 response's
// Sec-WebSocket-Protocol, as browsers and CDNs require of a subprotocol
// offer. Our client sends the bytes again as an ordinary message when the
// echo is missing (a server that ignored them), so "?ed=" is safe against
// any server.
//
// # Half-close
//
// WebSocket has no half-close: once an endpoint sends a close frame it may
// send no more data. CloseWrite therefore sends the close frame only when
// the peer's close frame has already arrived (Read returned io.EOF), which
// completes the closing handshake; before that it does nothing and returns an
// error wrapping errors.ErrUnsupported, so that a relay keeps the other
// direction flowing. For the same reason a received close frame is not
// echoed at once: the echo goes out with CloseWrite or Close, after the data
// still owed to the peer.
//
// # Deadlines
//
// SetReadDeadline and SetWriteDeadline reach the underlying connection, so
// they interrupt blocked calls. A read or write that times out leaves the
// WebSocket unusable (it may have struck inside a frame); a deadline
// already past when a Read starts returns a timeout without harm.
package ws

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/http/httpguts"
)

// Defaults for the zero values of Handler's options.
const (
	DefaultPingInterval    = 30 * time.Second
	DefaultMaxEarlyData    = 8192
	DefaultEarlyDataHeader = "Sec-WebSocket-Protocol"
	handshakeTimeout       = 10 * time.Second
	secProtocol            = "Sec-Websocket-Protocol" // canonical form
)

// Handler serves the WebSocket tunnels of one route.
//
// A request is a tunnel when it is an HTTP/1.x GET for Path (the query is
// ignored, so a client path "/ws?ed=2048" matches Path "/ws"), with the Host
// when Host is set, and a valid WebSocket upgrade (Connection: upgrade,
// Upgrade: websocket, Sec-WebSocket-Version: 13, a 16-byte
// Sec-WebSocket-Key). Every other request — another path, a plain GET, an
// HTTP/2 request — goes to Next unchanged, so that a prober sees the site.
//
// Serve is called once per tunnel, on a goroutine of its own, after the
// 101 response has been written, with the tunnel and the request that
// carried it (for Host, RemoteAddr and X-Forwarded-For: which of them to
// trust is the gateway's decision; the request's context is done, as
// ServeHTTP has returned). When Serve returns the conn is closed.
// The conn's RemoteAddr is the request's RemoteAddr; its LocalAddr comes
// from http.LocalAddrContextKey. Deadlines the http.Server set on the
// connection are cleared before Serve.
//
// Fields must not change once the Handler serves requests.
type Handler struct {
	Path  string       // exact path; "" means "/", and a missing leading "/" is added
	Host  string       // required Host (case-insensitive, port ignored unless given); "" = any
	Next  http.Handler // the site for everything else; nil = 404
	Serve func(conn net.Conn, r *http.Request)

	// EarlyDataHeader names the request header that may carry early data;
	// "" means Sec-WebSocket-Protocol. Only with Sec-WebSocket-Protocol is
	// the value echoed in the response.
	EarlyDataHeader string
	// MaxEarlyData bounds the decoded early data. 0 means
	// DefaultMaxEarlyData; negative disables early data. A longer or
	// undecodable header is not early data: it is neither taken nor echoed,
	// and the upgrade goes on (our client then resends the bytes).
	MaxEarlyData int
	// PingInterval is how often the server pings; a peer that sends nothing
	// (not even a pong) for two intervals while the conn is being read is
	// closed with code 1001. 0 means DefaultPingInterval, negative disables.
	PingInterval time.Duration
}

// upgrader answers the upgrade (gorilla words the 101); the frames after
// it are this package's own (conn.go), so gorilla's connection and its
// buffers are left behind at once, and given none of their own here.
var upgrader = websocket.Upgrader{
	HandshakeTimeout: handshakeTimeout,
	CheckOrigin:      func(*http.Request) bool { return true },
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.matches(r) {
		h.next(w, r)
		return
	}
	early, echo := h.earlyData(r)
	var respHeader http.Header
	if echo != "" {
		respHeader = http.Header{secProtocol: {echo}}
	}
	wsc, err := upgrader.Upgrade(w, r, respHeader)
	if err != nil {
		return // gorilla has answered or closed; nothing else to do
	}
	// gorilla refuses a client that sent bytes before the 101, so none are
	// buffered in its reader: the connection itself carries the frames.
	raw := wsc.NetConn()
	raw.SetDeadline(time.Time{})
	c := newConn(raw, nil, false, localAddr(r, raw.LocalAddr()), remoteAddr(r, raw.RemoteAddr()))
	c.early = early
	if d := h.pingInterval(); d > 0 {
		c.startKeepalive(d)
	}
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

func (h *Handler) next(w http.ResponseWriter, r *http.Request) {
	if h.Next != nil {
		h.Next.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}

func (h *Handler) pingInterval() time.Duration {
	switch {
	case h.PingInterval == 0:
		return DefaultPingInterval
	case h.PingInterval < 0:
		return 0
	}
	return h.PingInterval
}

// matches reports whether r is a WebSocket upgrade for this route that
// gorilla will accept, so that gorilla never answers a request with its own
// error text.
func (h *Handler) matches(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet {
		return false
	}
	if requestPath(r) != normalizePath(h.Path) || !hostMatches(h.Host, r.Host) {
		return false
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Sec-Websocket-Version"], "13") {
		return false
	}
	key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-Websocket-Key"))
	return err == nil && len(key) == 16
}

// earlyData returns the decoded early data of r and the header value to
// echo in Sec-WebSocket-Protocol ("" for none).
func (h *Handler) earlyData(r *http.Request) (data []byte, echo string) {
	limit := h.MaxEarlyData
	switch {
	case limit == 0:
		limit = DefaultMaxEarlyData
	case limit < 0:
		return nil, ""
	}
	name := h.EarlyDataHeader
	if name == "" {
		name = DefaultEarlyDataHeader
	}
	name = http.CanonicalHeaderKey(name)
	value := r.Header.Get(name)
	data, ok := decodeEarlyData(value, limit)
	if !ok {
		return nil, ""
	}
	if name == secProtocol {
		echo = value
	}
	return data, echo
}

// decodeEarlyData decodes base64 in the URL or standard alphabet, with or
// without padding, refusing empty values and values longer than limit bytes
// once decoded.
func decodeEarlyData(s string, limit int) ([]byte, bool) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if s == "" || len(s) > base64.RawURLEncoding.EncodedLen(limit) {
		return nil, false
	}
	if strings.ContainsAny(s, "+/") {
		if strings.ContainsAny(s, "-_") {
			return nil, false // a mix of alphabets is no encoding at all
		}
		s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 || len(b) > limit {
		return nil, false
	}
	return b, true
}

// requestPath is r's path with anything from a literal '?' on removed, for
// clients that escape the query of a configured path like "/ws?ed=2048".
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

// remoteAddr is the request's RemoteAddr as a *net.TCPAddr, or fallback.
func remoteAddr(r *http.Request, fallback net.Addr) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return fallback
}

// localAddr is the address the request arrived at, or fallback.
func localAddr(r *http.Request, fallback net.Addr) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		return a
	}
	return fallback
}
