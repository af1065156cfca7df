// x/net's http2.Transport is deprecated for net/http's, but net/http
// speaks HTTP/2 over TLS only on a *tls.Conn it dialed itself (not on
// tlsbatch's), and over any other conn only with :scheme "http", which a
// CDN or proxy in front of the server may refuse on a TLS connection.
//lint:file-ignore SA1019 see above

package grpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/portico-gw/portico/internal/tlsbatch"
)

// Dialer opens gRPC tunnels, each one call on an HTTP/2 connection that it
// shares between tunnels (opening another when the server's stream limit
// is reached). It implements tunnel.ConnDialer and is safe for concurrent
// use. Its fields must not change, nor the Dialer be copied, once it has
// dialed; CloseIdleConnections releases its connections.
type Dialer struct {
	Address     string // host:port to connect to
	ServiceName string // as the server's (see Paths)
	// Host is the :authority sent; "" means Address.
	Host string
	// TLS configures the connection; nil means h2c (HTTP/2 over TCP with
	// prior knowledge). ServerName defaults to Address's host, NextProtos
	// are replaced by "h2".
	TLS *tls.Config
	// NetDial opens the TCP connection; nil means a net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Multi calls TunMulti instead of Tun. The bytes are the same (this
	// package sends a one-element MultiHunk, which is a Hunk); some
	// servers only serve one of the two.
	Multi bool
	// UserAgent is sent as User-Agent; "" means "grpc-go/1.85.0", as an
	// Xray client built with that gRPC version says.
	UserAgent string

	once sync.Once
	t    *http2.Transport
}

// dialTimeout bounds connecting and the TLS handshake of a new HTTP/2
// connection.
const dialTimeout = 15 * time.Second

func (d *Dialer) transport() *http2.Transport {
	d.once.Do(func() {
		d.t = &http2.Transport{
			AllowHTTP:       true, // h2c when TLS is nil
			DialTLSContext:  func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) { return d.dial(ctx) },
			ReadIdleTimeout: 30 * time.Second, // ping a connection silent this long…
			PingTimeout:     15 * time.Second, // …and drop it if the ping is not answered
			IdleConnTimeout: 5 * time.Minute,
			// No "accept-encoding: gzip" on calls: gRPC clients do not
			// send it, and a call's response is never gzip.
			DisableCompression: true,
			// Let the server send a 32 KiB message as one DATA frame, not
			// two of HTTP/2's default 16 KiB: one round through its
			// connection's goroutines less per message.
			MaxReadFrameSize: 1 << 20,
		}
	})
	return d.t
}

// CloseIdleConnections closes the connections that carry no tunnel.
func (d *Dialer) CloseIdleConnections() {
	d.transport().CloseIdleConnections()
}

func (d *Dialer) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	netDial := d.NetDial
	if netDial == nil {
		nd := &net.Dialer{KeepAlive: 30 * time.Second}
		netDial = nd.DialContext
	}
	raw, err := netDial(ctx, "tcp", d.Address)
	if err != nil {
		return nil, err
	}
	if d.TLS == nil {
		return raw, nil
	}
	cfg := d.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(d.Address)
		if err != nil {
			host = d.Address
		}
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{http2.NextProtoTLS}
	tc := tlsbatch.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		tc.Close()
		return nil, fmt.Errorf("server does not speak HTTP/2 over TLS (ALPN %q)", p)
	}
	return tc, nil
}

// DialConn starts a call and returns once its request headers are sent
// (a new connection is dialed first if needed), without waiting for the
// response: the first Write goes out at once. ctx bounds only that; the
// call lives until Close.
func (d *Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	if d.Address == "" {
		return nil, errors.New("grpc: Dialer has no Address")
	}
	scheme := "https"
	if d.TLS == nil {
		scheme = "http"
	}
	u, err := url.Parse(scheme + "://" + d.Address + requestPath(d.ServiceName, d.Multi))
	if err != nil {
		return nil, fmt.Errorf("grpc: bad Address or ServiceName: %w", err)
	}
	c := &clientConn{gotResp: make(chan struct{}), local: &net.TCPAddr{}, remote: hostAddr(d.Address)}
	c.fr.limit = DefaultMaxMessageSize
	wrote := make(chan struct{})
	var wroteOnce, addrOnce sync.Once
	trace := &httptrace.ClientTrace{
		// GotConn comes before WroteHeaders, which DialConn waits for. A
		// retry on another connection (the transport may retry a call
		// whose body it has not read) keeps the first addresses.
		GotConn: func(info httptrace.GotConnInfo) {
			addrOnce.Do(func() { c.local, c.remote = info.Conn.LocalAddr(), info.Conn.RemoteAddr() })
		},
		WroteHeaders: func() { wroteOnce.Do(func() { close(wrote) }) },
	}
	callCtx, cancel := context.WithCancel(httptrace.WithClientTrace(context.WithoutCancel(ctx), trace))
	c.cancel = cancel
	c.pipe = newBodyPipe(callCtx.Done())
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           u,
		Host:          d.Host,
		Header:        http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}},
		Body:          c.pipe,
		ContentLength: -1,
	}
	ua := d.UserAgent
	if ua == "" {
		ua = "grpc-go/1.85.0"
	}
	req.Header.Set("User-Agent", ua)
	req = req.WithContext(callCtx)
	tr := d.transport()
	go func() {
		resp, err := tr.RoundTrip(req)
		c.resp, c.respErr = resp, err
		close(c.gotResp)
	}()
	select {
	case <-wrote:
	case <-c.gotResp:
		if c.respErr != nil {
			cancel()
			return nil, fmt.Errorf("grpc: %w", c.respErr)
		}
	case <-ctx.Done():
		cancel()
		return nil, fmt.Errorf("grpc: %w", ctx.Err())
	}
	c.rdl = newDeadline(c.abort) // a read blocked in the HTTP/2 body cannot be woken otherwise
	c.wdl = newDeadline(nil)     // writes wait in the pipe, which watches the deadline itself
	return c, nil
}

// abort ends the call at once. Cancelling its context is not enough once
// the response has come: the transport may be waiting for flow control,
// deaf to the context, so the response body is closed too, which resets
// the stream and wakes everything.
func (c *clientConn) abort() {
	c.cancel()
	select {
	case <-c.gotResp:
		if c.resp != nil {
			c.resp.Body.Close()
		}
	default: // RoundTrip still waits, and watches the context
	}
}

// hostAddr is a host:port not resolved.
type hostAddr string

func (hostAddr) Network() string  { return "tcp" }
func (a hostAddr) String() string { return string(a) }

// clientConn is a tunnel on a gRPC call made by http2.Transport: writes go
// into the request body through a pipe, reads come from the response body.
type clientConn struct {
	pipe          *bodyPipe
	cancel        context.CancelFunc
	local, remote net.Addr

	gotResp chan struct{} // closed when RoundTrip returns
	resp    *http.Response
	respErr error

	rmu     sync.Mutex // serializes Reads
	checked bool       // the response headers were checked; guarded by rmu
	fr      frameReader
	rerr    error // sticky; guarded by rmu

	wmu sync.Mutex // serializes Writes
	hdr [maxHunkHeader]byte

	rdl, wdl *deadline
	closed   atomic.Bool
}

// Read returns the data of the response's messages. At the end of the
// call it returns io.EOF if the status is OK, or a *StatusError.
func (c *clientConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, c.rerr
	}
	if c.closed.Load() {
		return 0, opError("read", c.local, c.remote, net.ErrClosed)
	}
	if !c.checked {
		// Waiting for the response headers can time out harmlessly.
		select {
		case <-c.gotResp:
		case <-c.rdl.done():
			return 0, timeoutError("read", c.local, c.remote)
		}
		if err := c.checkResponse(); err != nil {
			if c.closed.Load() {
				err = opError("read", c.local, c.remote, net.ErrClosed)
			}
			c.rerr = err
			return 0, err
		}
		c.checked = true
		c.fr.r = c.resp.Body
	}
	if c.rdl.begin() {
		return 0, timeoutError("read", c.local, c.remote)
	}
	n, err := c.fr.Read(p)
	c.rdl.end()
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		err = c.trailerStatus()
	case c.closed.Load():
		err = opError("read", c.local, c.remote, net.ErrClosed)
	case c.rdl.expired():
		err = timeoutError("read", c.local, c.remote) // the call was cancelled for it
	default:
		if _, ok := protocolError(err); !ok {
			err = fmt.Errorf("grpc: %w", err)
		}
	}
	c.rerr = err
	return n, err
}

// checkResponse checks the response headers of the call.
func (c *clientConn) checkResponse() error {
	if c.respErr != nil {
		return fmt.Errorf("grpc: %w", c.respErr)
	}
	r := c.resp
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("grpc: server answered %s", r.Status)
	}
	if s := r.Header.Get("Grpc-Status"); s != "" { // a trailers-only response: the call failed at once
		return statusError(s, r.Header.Get("Grpc-Message"))
	}
	if !strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/grpc") {
		return fmt.Errorf("grpc: response content-type %q is not gRPC", r.Header.Get("Content-Type"))
	}
	return nil
}

// trailerStatus turns the end of the response into io.EOF for status OK.
func (c *clientConn) trailerStatus() error {
	s := c.resp.Trailer.Get("Grpc-Status")
	if s == "" {
		return fmt.Errorf("grpc: response ended without grpc-status: %w", io.ErrUnexpectedEOF)
	}
	if s == "0" {
		return io.EOF
	}
	return statusError(s, c.resp.Trailer.Get("Grpc-Message"))
}

// StatusError is a call's end with a gRPC status other than OK.
type StatusError struct {
	Code    int    // the gRPC status code
	Message string // grpc-message, decoded
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("grpc: call ended with status %d: %s", e.Code, e.Message)
}

func statusError(code, msg string) error {
	n, err := strconv.Atoi(code)
	if err != nil {
		n = codeUnknown
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &StatusError{Code: n, Message: msg}
}

// Write sends p as Hunk messages of up to 32 KiB.
func (c *clientConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, opError("write", c.local, c.remote, net.ErrClosed)
	}
	if c.wdl.expired() {
		return 0, timeoutError("write", c.local, c.remote)
	}
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+maxChunk)]
		hdr := appendHunkHeader(c.hdr[:0], len(chunk))
		m, err := c.pipe.write(hdr, chunk, c.wdl.done())
		if m > len(hdr) {
			n += m - len(hdr)
		}
		if err != nil {
			if m > 0 {
				// Part of a message went out: the stream cannot go on.
				c.abort()
			}
			switch {
			case err == errPipeTimeout:
				err = timeoutError("write", c.local, c.remote)
			case c.closed.Load():
				err = opError("write", c.local, c.remote, net.ErrClosed)
			default:
				err = opError("write", c.local, c.remote, err)
			}
			return n, err
		}
	}
	return n, nil
}

// CloseWrite ends the request body after any Write in progress: the
// server reads io.EOF. Reading goes on.
func (c *clientConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.pipe.closeWrite(io.EOF)
	return nil
}

// Close cancels the call (the server sees the request body fail) unless
// it has ended already.
func (c *clientConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.pipe.closeWrite(net.ErrClosed)
	c.abort()
	c.rdl.set(time.Time{})
	c.wdl.set(time.Time{})
	return nil
}

func (c *clientConn) LocalAddr() net.Addr  { return c.local }
func (c *clientConn) RemoteAddr() net.Addr { return c.remote }

func (c *clientConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *clientConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *clientConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

var errPipeTimeout = errors.New("grpc: write deadline")

// bodyPipe is the request body: Write hands the transport a frame header
// and the caller's data together (no copy, no allocation), and the
// transport's Read takes as much as its buffer holds, so a message leaves
// in one DATA frame when it fits.
type bodyPipe struct {
	wmu     sync.Mutex // one write at a time
	pending [][]byte   // what the blocked write offers; read by the transport while wrCh is handed over
	vec     [2][]byte
	wrCh    chan struct{} // a write offers pending
	rdCh    chan int      // the transport took that many bytes

	once sync.Once
	done chan struct{} // closed by closeWrite or Close
	rerr error         // what the transport reads after done (io.EOF after CloseWrite)
	werr error         // what writes get after done

	cancel <-chan struct{} // the call's context
}

func newBodyPipe(cancel <-chan struct{}) *bodyPipe {
	return &bodyPipe{wrCh: make(chan struct{}), rdCh: make(chan int), done: make(chan struct{}), cancel: cancel}
}

// Read is called by the transport. A cancelled call fails it: the
// transport, blocked here, would not notice otherwise, and it is what
// aborts the stream (and so a blocked response read).
func (p *bodyPipe) Read(b []byte) (int, error) {
	select {
	case <-p.wrCh:
		n := 0
		for len(b) > 0 && len(p.pending) > 0 {
			m := copy(b, p.pending[0])
			b = b[m:]
			n += m
			if p.pending[0] = p.pending[0][m:]; len(p.pending[0]) == 0 {
				p.pending = p.pending[1:]
			}
		}
		p.rdCh <- n
		return n, nil
	case <-p.done:
		return 0, p.rerr
	case <-p.cancel:
		return 0, context.Canceled
	}
}

// Close is called by the transport when it is done with the body.
func (p *bodyPipe) Close() error {
	p.closeWith(errors.New("grpc: stream closed"), errors.New("grpc: stream closed"))
	return nil
}

func (p *bodyPipe) closeWrite(err error) {
	p.closeWith(err, net.ErrClosed)
}

func (p *bodyPipe) closeWith(rerr, werr error) {
	p.once.Do(func() {
		p.rerr, p.werr = rerr, werr
		close(p.done)
	})
}

// write offers hdr then data to the transport until it has taken all, the
// pipe closes or timeout is closed, and reports how many bytes it took.
func (p *bodyPipe) write(hdr, data []byte, timeout <-chan struct{}) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.vec = [2][]byte{hdr, data}
	p.pending = p.vec[:]
	defer func() { p.vec, p.pending = [2][]byte{}, nil }()
	total, n := len(hdr)+len(data), 0
	for n < total {
		select {
		case p.wrCh <- struct{}{}:
			n += <-p.rdCh
		case <-p.done:
			return n, p.werr
		case <-timeout:
			return n, errPipeTimeout
		}
	}
	return n, nil
}
