package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/internal/dialreply"
	"github.com/portico-gw/portico/protocols/tunnel"
)

const (
	// maxHeaderBytes bounds a client's request line and headers.
	maxHeaderBytes = 64 << 10
	// maxResponseHeaderBytes bounds an origin's status line and headers.
	maxResponseHeaderBytes = 1 << 20
	// headerSlack is what the read-ahead buffer may hold beyond the header.
	headerSlack = 4096
	// idleTimeout is how long a client may take to send the headers of a
	// request, the first one included, unless Server.HeaderTimeout says.
	idleTimeout = 2 * time.Minute
	// maxDiscard is the most request body read and dropped to keep a
	// connection alive after refusing a request.
	maxDiscard = 256 << 10
	// maxInterim bounds the 1xx responses forwarded before a final one.
	maxInterim = 16
)

// connectEstablished is the response to a CONNECT whose dial succeeded.
const connectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// Server is an HTTP/1.1 proxy for CONNECT and absolute-URI requests. The zero
// Server accepts clients without authentication.
//
// A Server is a plain value and is safe for concurrent use as long as its
// fields are not modified.
type Server struct {
	// Users maps usernames to passwords. When it is not empty, every request
	// must carry matching Basic credentials in Proxy-Authorization, or is
	// answered 407.
	Users map[string]string
	// Inbound is the tag put in every Request, for routing and counters.
	Inbound string
	// Log receives a debug record per request and a warning per failed
	// authentication; nil means no logging.
	Log *slog.Logger
	// HeaderTimeout is how long a client may take to send a request's
	// headers, the first one included, and how long a kept-alive
	// connection may wait between requests; zero means 2 minutes.
	HeaderTimeout time.Duration
}

var _ tunnel.Server = (*Server)(nil)

// ServeConn serves proxy requests from one client connection and calls
// h.HandleStream once per tunnel, with Request{User, Network: TCP, Target,
// Source, Inbound, Transport: "http"}. User is the authenticated username,
// or "" without authentication.
//
// A CONNECT ends the HTTP conversation: the conn given to the handler
// implements [tunnel.DialReporter], and "200 Connection established" is
// written only when the handler reports a successful dial (or, if it never
// reports, before its first Read, Write or CloseWrite). A failed dial is
// answered 403 when the error wraps [protocols.ErrBlocked], 504 for a
// timeout, and 502 otherwise. Bytes the client sent after the CONNECT
// request are read by the handler first.
//
// An absolute-URI request is forwarded through a fresh tunnel, over an
// in-memory conn that also implements [tunnel.DialReporter] and
// CloseWrite; a failed dial is answered as above with a short text body.
// Then the next request is read. Request bodies, fixed-length or chunked,
// are streamed to the origin; responses are streamed back, re-chunked when
// their length is unknown.
//
// Other requests get 400; missing or wrong credentials get 407 with
// Proxy-Authenticate: Basic realm="portico"; headers over 64 KiB get 431.
// When the first bytes are not an HTTP request (a TLS or SOCKS client, say)
// ServeConn returns an error wrapping [protocols.ErrNotProtocol], having
// written nothing and left conn open, as the [tunnel.Server] contract
// asks. In every other case conn is closed when ServeConn returns, after
// every tunnel it opened has ended. Cancelling ctx closes the connection.
// The error returned is for logging; a client closing an idle connection
// is not an error.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, h tunnel.Handler) error {
	c := &clientConn{srv: s, ctx: ctx, conn: conn, h: h, source: sourceOf(conn)}
	c.lr = &limitReader{r: conn, n: -1}
	c.br = bufio.NewReaderSize(c.lr, 4096)
	c.bw = bufio.NewWriterSize(conn, 4096)
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	handedOff, notProto, err := c.serve(stop)
	if stopped := stop(); !stopped && !handedOff && ctx.Err() != nil {
		err = fmt.Errorf("httpproxy: %w", context.Cause(ctx))
	}
	if notProto {
		_ = conn.SetReadDeadline(time.Time{})
	} else if !handedOff {
		_ = conn.Close()
	}
	c.tunnels.Wait()
	return err
}

// clientConn is the state of one client connection.
type clientConn struct {
	srv     *Server
	ctx     context.Context
	conn    net.Conn
	h       tunnel.Handler
	source  netip.AddrPort
	lr      *limitReader
	br      *bufio.Reader
	bw      *bufio.Writer
	tunnels sync.WaitGroup // HandleStream calls of forwarded requests
}

// serve reads requests until the connection ends. handedOff reports that
// conn went to the handler (CONNECT); notProto that the first bytes were not
// HTTP and nothing was written.
func (c *clientConn) serve(stopCancel func() bool) (handedOff, notProto bool, err error) {
	for first := true; ; first = false {
		req, err := c.readRequest(first)
		if err == io.EOF {
			return false, false, nil // the client is done
		}
		if err != nil {
			return false, errors.Is(err, protocols.ErrNotProtocol), err
		}
		user, ok := c.srv.authenticate(req)
		if !ok {
			c.srv.logger().Warn("http proxy authentication failed", "user", user, "source", c.source.String())
			keep := !req.Close && discard(req.Body)
			werr := c.writeError(http.StatusProxyAuthRequired, "proxy authentication required", !keep,
				"Proxy-Authenticate", `Basic realm="portico"`)
			if werr != nil {
				return false, false, werr
			}
			if !keep {
				return false, false, fmt.Errorf("httpproxy: proxy authentication failed for user %q", user)
			}
			continue
		}
		if req.Method == http.MethodConnect {
			if !stopCancel() {
				return false, false, fmt.Errorf("httpproxy: %w", context.Cause(c.ctx))
			}
			return true, false, c.connect(req, user)
		}
		keep, err := c.forward(req, user)
		if err != nil || !keep {
			return false, false, err
		}
	}
}

// readRequest reads one request's headers within the size and time limits.
// A clean end of the connection before a request is io.EOF.
func (c *clientConn) readRequest(first bool) (*http.Request, error) {
	wait := c.srv.HeaderTimeout
	if wait <= 0 {
		wait = idleTimeout
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	c.lr.n, c.lr.hit = maxHeaderBytes+headerSlack, false
	if first {
		c.lr.recMax = recordBytes
	}
	defer func() { c.lr.n, c.lr.rec, c.lr.recMax = -1, nil, 0 }()

	if first {
		// A request starts with a method token. Refusing anything else at
		// once keeps a TLS or SOCKS client from waiting for a line end.
		b, err := c.br.Peek(1)
		if err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("httpproxy: read request: %w", err)
		}
		if !isTokenStart(b[0]) {
			return nil, fmt.Errorf("httpproxy: first byte %#x does not start an HTTP request: %w", b[0], protocols.ErrNotProtocol)
		}
	}
	req, err := http.ReadRequest(c.br)
	switch {
	case err == nil:
		return req, nil
	case c.lr.hit:
		_ = c.writeError(http.StatusRequestHeaderFieldsTooLarge, "request header too large", true)
		return nil, fmt.Errorf("httpproxy: read request: header larger than %d bytes", maxHeaderBytes)
	case err == io.EOF && !first:
		return nil, io.EOF
	case isIOError(err):
		return nil, fmt.Errorf("httpproxy: read request: %w", err)
	case first && !looksLikeRequestLine(c.lr.rec):
		return nil, fmt.Errorf("httpproxy: read request: %v: %w", err, protocols.ErrNotProtocol)
	}
	_ = c.writeError(http.StatusBadRequest, "malformed request", true)
	return nil, fmt.Errorf("httpproxy: read request: %w", err)
}

// looksLikeRequestLine reports whether b, the first bytes of a connection,
// starts with something shaped like an HTTP/1 request line, "METHOD SP
// target SP HTTP/", even if the request is then malformed. A line longer
// than b only needs "METHOD SP".
func looksLikeRequestLine(b []byte) bool {
	line, _, complete := bytes.Cut(b, []byte("\n"))
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 {
		return false
	}
	for _, c := range method {
		if !isTokenChar(c) {
			return false
		}
	}
	if !complete {
		return true
	}
	i := bytes.LastIndexByte(rest, ' ')
	return i >= 0 && bytes.HasPrefix(rest[i+1:], []byte("HTTP/"))
}

// isTokenChar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
}

// isTokenStart reports whether b may start an HTTP method (RFC 9110 §9.1:
// methods are tokens; the registered ones are upper-case letters).
func isTokenStart(b byte) bool { return 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' }

// isIOError tells a failed read from a malformed request. (Not net.Error:
// *url.Error implements it.)
func isIOError(err error) bool {
	var oe *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &oe)
}

// connect serves a CONNECT request: conn goes to the handler for good.
func (c *clientConn) connect(req *http.Request, user string) error {
	target, err := protocols.ParseAddr(req.RequestURI)
	if err != nil {
		_ = c.writeError(http.StatusBadRequest, "CONNECT needs host:port", true)
		_ = c.conn.Close()
		return fmt.Errorf("httpproxy: CONNECT %q: %w", req.RequestURI, err)
	}
	preq := c.request(user, target)
	c.srv.logger().Debug("http proxy CONNECT", "user", user, "target", target.String(), "source", c.source.String())

	var replay []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		replay = append([]byte(nil), b...)
	}
	st := dialreply.New("httpproxy", c.conn, replay, func(err error) []byte {
		if err == nil {
			return []byte(connectEstablished)
		}
		return errorResponse(statusFor(err), dialFailureText(target, err), true, nil)
	})
	err = c.h.HandleStream(c.ctx, st, preq)
	st.Finish(err)
	if err != nil {
		return fmt.Errorf("httpproxy: CONNECT %v: %w", target, err)
	}
	return nil
}

func (c *clientConn) request(user string, target protocols.Addr) tunnel.Request {
	return tunnel.Request{
		Protocol:  "http",
		User:      user,
		Network:   protocols.NetworkTCP,
		Target:    target,
		Source:    c.source,
		Inbound:   c.srv.Inbound,
		Transport: "http",
	}
}

// forward sends one absolute-URI request through its own tunnel and copies
// the response back. keep reports whether the client connection can serve
// another request.
func (c *clientConn) forward(req *http.Request, user string) (keep bool, err error) {
	clientClose := req.Close || !req.ProtoAtLeast(1, 1)
	target, err := forwardTarget(req)
	if err != nil {
		_ = c.writeError(http.StatusBadRequest, err.Error(), true)
		return false, fmt.Errorf("httpproxy: %s %q: %w", req.Method, req.RequestURI, err)
	}
	c.srv.logger().Debug("http proxy request", "method", req.Method, "user", user, "target", target.String(), "source", c.source.String())

	local, remote := halfPipe()
	defer local.Close()
	stopTunnel := context.AfterFunc(c.ctx, func() { _ = local.Close() })
	defer stopTunnel()
	tc := &tunnelConn{halfConn: remote, dialed: make(chan error, 1)}
	handled := make(chan error, 1)
	c.tunnels.Add(1)
	go func() {
		defer c.tunnels.Done()
		handled <- c.h.HandleStream(c.ctx, tc, c.request(user, target))
	}()

	var dialErr error
	select {
	case dialErr = <-tc.dialed:
	case dialErr = <-handled:
		if dialErr == nil {
			dialErr = errors.New("tunnel closed before the dial was reported")
		}
	}
	if dialErr != nil {
		c.srv.logger().Debug("http proxy dial failed", "target", target.String(), "err", dialErr)
		keep := !clientClose && discard(req.Body)
		if werr := c.writeError(statusFor(dialErr), dialFailureText(target, dialErr), !keep); werr != nil {
			return false, werr
		}
		return keep, nil
	}

	// Send the request in origin form while reading the response: the
	// origin may answer before the body is complete, or send 100 Continue.
	out := outgoingRequest(req)
	pw := bufio.NewWriter(local)
	var body *bodyReader
	if req.Body != nil && req.Body != http.NoBody {
		body = &bodyReader{r: req.Body, flush: pw}
		out.Body = body
	}
	written := make(chan error, 1)
	go func() {
		err := out.Write(byteWriter{pw})
		if err == nil {
			err = pw.Flush()
		}
		if err != nil {
			// The request was cut short (a bad chunk, the client gone): let
			// the origin see its end rather than wait for the rest.
			_ = local.CloseWrite()
		}
		written <- err
	}()
	// After the response, the body must have been read to its end for the
	// next request to start at the right byte.
	bodyDone := func() bool {
		_ = local.Close()
		if body != nil && !body.eof.Load() {
			_ = c.conn.Close() // unblock a body read; the connection is lost
			<-written
			return false
		}
		return <-written == nil
	}

	keep, err = c.relayResponse(local, out, req, target, clientClose)
	ok := bodyDone()
	return keep && ok, err
}

// relayResponse reads the origin's response from the tunnel and writes it to
// the client.
func (c *clientConn) relayResponse(tunnel net.Conn, out, req *http.Request, target protocols.Addr, clientClose bool) (keep bool, err error) {
	lr := &limitReader{r: tunnel, n: maxResponseHeaderBytes}
	tr := bufio.NewReader(lr)
	var resp *http.Response
	for interim := 0; ; interim++ {
		lr.n = maxResponseHeaderBytes
		resp, err = http.ReadResponse(tr, out)
		if err == nil && (resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols) {
			break
		}
		if err == nil && interim < maxInterim {
			// 1xx: pass on, then read the final response.
			removeHopByHop(resp.Header)
			_, _ = c.bw.WriteString("HTTP/1.1 " + resp.Status + "\r\n")
			_ = resp.Header.Write(c.bw)
			_, _ = c.bw.WriteString("\r\n")
			if err := c.bw.Flush(); err != nil {
				return false, fmt.Errorf("httpproxy: write response: %w", err)
			}
			continue
		}
		if err == nil {
			err = errors.New("too many interim responses")
		}
		if lr.hit {
			err = fmt.Errorf("response header larger than %d bytes", maxResponseHeaderBytes)
		}
		_ = c.writeError(http.StatusBadGateway, fmt.Sprintf("portico: bad response from %v: %s\n", target, oneLine(err)), true)
		return false, fmt.Errorf("httpproxy: %s %v: read response: %w", out.Method, target, err)
	}
	lr.n = -1
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		_ = c.writeError(http.StatusBadGateway, fmt.Sprintf("portico: %v switched protocols unasked\n", target), true)
		return false, fmt.Errorf("httpproxy: %s %v: unexpected 101 response", out.Method, target)
	}

	removeHopByHop(resp.Header)
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	switch {
	case !req.ProtoAtLeast(1, 1):
		// An HTTP/1.0 client knows no chunked coding: the end of the
		// connection ends the body.
		resp.TransferEncoding = nil
	case resp.ContentLength < 0 && !chunked && bodyAllowed(out.Method, resp.StatusCode) && !clientClose:
		resp.TransferEncoding = []string{"chunked"} // keep the client connection
	}
	chunked = len(resp.TransferEncoding) > 0
	resp.Close = clientClose || (resp.ContentLength < 0 && !chunked)
	if resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = &bodyReader{r: resp.Body, flush: c.bw}
	}
	if err := resp.Write(byteWriter{c.bw}); err != nil {
		return false, fmt.Errorf("httpproxy: %s %v: relay response: %w", out.Method, target, err)
	}
	if err := c.bw.Flush(); err != nil {
		return false, fmt.Errorf("httpproxy: %s %v: write response: %w", out.Method, target, err)
	}
	return !resp.Close, nil
}

// forwardTarget is where an absolute-URI request goes.
func forwardTarget(req *http.Request) (protocols.Addr, error) {
	u := req.URL
	if !u.IsAbs() || u.Host == "" {
		return protocols.Addr{}, errors.New("not a proxy request: the request target must be an absolute http:// URI")
	}
	if u.Scheme != "http" {
		return protocols.Addr{}, fmt.Errorf("cannot forward %s:// URIs; use CONNECT", u.Scheme)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	if u.Hostname() == "" {
		return protocols.Addr{}, errors.New("empty host in request URI")
	}
	return protocols.ParseAddr(net.JoinHostPort(u.Hostname(), port))
}

// hopByHop are the headers that concern one connection only (RFC 9110
// §7.6.1), plus Proxy-Connection (a non-standard alias of Connection) and
// the proxy credentials.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes hop-by-hop headers, including those that Connection
// names.
func removeHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// outgoingRequest is req in origin form for the tunnel. The tunnel carries
// this one request: Connection: close.
func outgoingRequest(req *http.Request) *http.Request {
	out := req.Clone(context.Background())
	removeHopByHop(out.Header)
	out.RequestURI = ""
	out.Close = true
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	if _, ok := out.Header["User-Agent"]; !ok {
		// Request.Write adds Go's User-Agent unless one is present; an
		// empty one is written as nothing at all.
		out.Header["User-Agent"] = []string{""}
	}
	return out
}

func bodyAllowed(method string, status int) bool {
	return method != http.MethodHead && status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// bodyReader streams a body from one side to the other. Before each read it
// flushes what was written so far, so a slow body is never held in a
// buffer; it records reaching the end; its Close does nothing, so a body cut
// short is not drained from the client.
type bodyReader struct {
	r     io.Reader
	flush *bufio.Writer
	eof   atomic.Bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.flush.Buffered() > 0 {
		if err := b.flush.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

func (b *bodyReader) Close() error { return nil }

// byteWriter is a bufio.Writer without its ReadFrom: bufio.Writer.ReadFrom
// reads straight into the buffer, which a bodyReader flushing that same
// buffer would corrupt. Being an io.ByteWriter, it also keeps Request.Write
// from adding a buffer of its own.
type byteWriter struct{ w *bufio.Writer }

func (b byteWriter) Write(p []byte) (int, error)       { return b.w.Write(p) }
func (b byteWriter) WriteByte(c byte) error            { return b.w.WriteByte(c) }
func (b byteWriter) WriteString(s string) (int, error) { return b.w.WriteString(s) }

// discard reads and drops a refused request's body; it reports whether the
// body ended within maxDiscard bytes, so the connection can go on.
func discard(body io.Reader) bool {
	if body == nil || body == http.NoBody {
		return true
	}
	n, err := io.CopyN(io.Discard, body, maxDiscard+1)
	return err == io.EOF && n <= maxDiscard
}

// tunnelConn is the handler's end of a forwarding tunnel. It implements
// [tunnel.DialReporter]; a handler that does not report and reads,
// writes or half-closes instead is taken to have dialed successfully.
type tunnelConn struct {
	*halfConn
	once   sync.Once
	dialed chan error // receives the dial outcome once
}

func (t *tunnelConn) ReportDial(err error) { t.once.Do(func() { t.dialed <- err }) }

func (t *tunnelConn) Read(p []byte) (int, error) {
	t.ReportDial(nil)
	return t.halfConn.Read(p)
}

func (t *tunnelConn) Write(p []byte) (int, error) {
	t.ReportDial(nil)
	return t.halfConn.Write(p)
}

func (t *tunnelConn) CloseWrite() error {
	t.ReportDial(nil)
	return t.halfConn.CloseWrite()
}

// statusFor maps a dial error to the status answered to the client: 403 for
// [protocols.ErrBlocked], 504 for a timeout, 502 for anything else.
func statusFor(err error) int {
	switch {
	case errors.Is(err, protocols.ErrBlocked):
		return http.StatusForbidden
	case isTimeout(err):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func dialFailureText(target protocols.Addr, err error) string {
	if errors.Is(err, protocols.ErrBlocked) {
		return fmt.Sprintf("portico: %v is blocked by policy\n", target)
	}
	return fmt.Sprintf("portico: cannot reach %v: %s\n", target, oneLine(err))
}

func oneLine(err error) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(err.Error())
}

// errorResponse is a complete response with a text body. extra holds header
// name, value pairs.
func errorResponse(code int, text string, closeConn bool, extra []string) []byte {
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	b := make([]byte, 0, 160+len(text))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	for i := 0; i+1 < len(extra); i += 2 {
		b = append(b, extra[i]...)
		b = append(b, ": "...)
		b = append(b, extra[i+1]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	b = append(b, "\r\n"...)
	if closeConn {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, text...)
}

func (c *clientConn) writeError(code int, text string, closeConn bool, extra ...string) error {
	_, _ = c.bw.Write(errorResponse(code, text, closeConn, extra))
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("httpproxy: write %d response: %w", code, err)
	}
	return nil
}

// authenticate checks Proxy-Authorization against s.Users. user is the
// name the client gave, if any.
func (s *Server) authenticate(req *http.Request) (user string, ok bool) {
	if len(s.Users) == 0 {
		return "", true
	}
	scheme, cred, found := strings.Cut(strings.TrimSpace(req.Header.Get("Proxy-Authorization")), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", false
	}
	user, pass, found := strings.Cut(string(raw), ":")
	want, known := s.Users[user]
	// Compare even for an unknown user, so timing says little about names.
	eq := subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
	return user, found && known && eq
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// sourceOf is the client's address, or the zero AddrPort when conn's remote
// address is not an IP (a pipe, a Unix socket).
func sourceOf(conn net.Conn) netip.AddrPort {
	switch ra := conn.RemoteAddr().(type) {
	case nil:
		return netip.AddrPort{}
	case *net.TCPAddr:
		ap := ra.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	default:
		ap, err := netip.ParseAddrPort(ra.String())
		if err != nil {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
}

// recordBytes is how much of a connection's start is kept to tell a
// malformed HTTP request from another protocol.
const recordBytes = 512

// limitReader bounds the bytes read while reading a header; n < 0 means no
// limit. hit records that the limit stopped a read. The first recMax bytes
// read are copied to rec.
type limitReader struct {
	r      io.Reader
	n      int64
	hit    bool
	rec    []byte
	recMax int
}

var errHeaderTooLarge = errors.New("httpproxy: header too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		l.hit = true
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if room := l.recMax - len(l.rec); room > 0 {
		l.rec = append(l.rec, p[:min(n, room)]...)
	}
	return n, err
}
