package ws

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portico-gw/portico/internal/offstack"
	"github.com/portico-gw/portico/internal/tlsbatch"
)

// Dialer opens WebSocket tunnels. It implements tunnel.ConnDialer and is
// safe for concurrent use; its fields must not change while it dials.
type Dialer struct {
	// URL is ws://host[:port]/path or wss://…; an "ed=N" query parameter
	// (Xray's early data) is taken out of the path actually requested and
	// turns on early data of up to N bytes. Other query parameters stay.
	URL string
	// Host overrides the Host header (a CDN's front name, say); "" = the URL's.
	Host string
	// TLS configures wss; nil means the system roots and the URL's host as
	// server name. Its NextProtos are replaced by "http/1.1": a WebSocket
	// upgrade needs HTTP/1.1.
	TLS *tls.Config
	// NetDial opens the TCP connection; nil means a net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// EarlyDataHeader names the header carrying early data; "" means
	// Sec-WebSocket-Protocol (the only one a server can echo).
	EarlyDataHeader string
	// Header is added to the upgrade request. It must not hold Upgrade,
	// Connection, Sec-WebSocket-Key, -Version or -Extensions.
	Header http.Header
	// PingInterval makes the client ping too, closing a peer silent for two
	// intervals; 0 leaves keepalive to the server (ours pings).
	PingInterval time.Duration
	// HandshakeTimeout bounds the upgrade, TCP and TLS included; 0 = 10 s.
	HandshakeTimeout time.Duration
}

// target is what DialConn learns from the URL.
type target struct {
	url string // without "ed"
	ed  int    // early data bytes allowed, 0 = off
	tls bool
}

func (d *Dialer) parse() (target, error) {
	u, err := url.Parse(d.URL)
	if err != nil {
		return target{}, fmt.Errorf("ws: bad URL: %w", err)
	}
	var t target
	switch u.Scheme {
	case "ws":
	case "wss":
		t.tls = true
	default:
		return target{}, fmt.Errorf("ws: URL %q: scheme must be ws or wss", d.URL)
	}
	if u.Host == "" {
		return target{}, fmt.Errorf("ws: URL %q has no host", d.URL)
	}
	q := u.Query()
	if s := q.Get("ed"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return target{}, fmt.Errorf("ws: URL %q: ed=%q is not a byte count", d.URL, s)
		}
		t.ed = n
		q.Del("ed")
		u.RawQuery = q.Encode()
	}
	if u.Path == "" {
		u.Path = "/"
	}
	t.url = u.String()
	return t, nil
}

// DialConn opens a tunnel. Without early data it returns after the 101.
// With "ed=N" it returns at once, and the upgrade is made by the first
// Write, whose first N bytes ride in the early-data header (the rest follow
// as the first message), or by a Read that comes before any Write, without
// early data (protocol clients write first: vlessclient holds an early Read
// back until its first Write). ctx bounds the upgrade made by DialConn itself; a deferred
// upgrade is bounded by HandshakeTimeout, a deadline set on the conn and
// Close.
func (d *Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	t, err := d.parse()
	if err != nil {
		return nil, err
	}
	if t.ed == 0 {
		return d.dial(ctx, t, nil)
	}
	return &lazyConn{d: d, t: t, ctx: context.WithoutCancel(ctx)}, nil
}

// dial upgrades a connection, sending ed in the early-data header, and
// resends ed as a message when the server did not echo it.
func (d *Dialer) dial(ctx context.Context, t target, ed []byte) (*conn, error) {
	timeout := d.HandshakeTimeout
	if timeout <= 0 {
		timeout = handshakeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	header := make(http.Header, len(d.Header)+2)
	for k, v := range d.Header {
		header[http.CanonicalHeaderKey(k)] = v
	}
	if d.Host != "" {
		header.Set("Host", d.Host)
	}
	edName := d.EarlyDataHeader
	if edName == "" {
		edName = DefaultEarlyDataHeader
	}
	edName = http.CanonicalHeaderKey(edName)
	var edValue string
	if len(ed) > 0 {
		edValue = base64.RawURLEncoding.EncodeToString(ed)
		header.Set(edName, edValue)
	}
	nc, err := d.connect(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("ws: %w", err)
	}
	resp, rest, err := upgrade(ctx, nc, t.url, header)
	if err != nil {
		nc.Close()
		if resp != nil {
			return nil, fmt.Errorf("ws: upgrade refused: %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("ws: %w", err)
	}
	var rd io.Reader = nc
	if len(rest) > 0 { // frames the server sent right behind its 101
		rd = io.MultiReader(bytes.NewReader(rest), nc)
	}
	c := newConn(nc, rd, true, nc.LocalAddr(), nc.RemoteAddr())
	c.subprotocol = resp.Header.Get(secProtocol)
	if len(ed) > 0 && edName == secProtocol && resp.Header.Get(secProtocol) != edValue {
		// The server did not take the early data: send it the usual way.
		if _, err := c.Write(ed); err != nil {
			c.Close()
			return nil, err
		}
	}
	if d.PingInterval > 0 {
		c.startKeepalive(d.PingInterval)
	}
	return c, nil
}

// connect opens the connection the upgrade goes over: TCP, and TLS for
// wss (offering only HTTP/1.1, which an upgrade needs).
func (d *Dialer) connect(ctx context.Context, t target) (net.Conn, error) {
	u, err := url.Parse(t.url)
	if err != nil {
		return nil, err
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if t.tls {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	netDial := d.NetDial
	if netDial == nil {
		nd := &net.Dialer{KeepAlive: 30 * time.Second}
		netDial = nd.DialContext
	}
	raw, err := netDial(ctx, "tcp", addr)
	if err != nil || !t.tls {
		return raw, err
	}
	cfg := &tls.Config{}
	if d.TLS != nil {
		cfg = d.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tlsbatch.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// errBadHandshake is a response that is not a WebSocket's 101.
var errBadHandshake = errors.New("bad handshake")

// maxResponseHeader bounds the 101 response read.
const maxResponseHeader = 16 << 10

// upgrade sends the upgrade request for rawURL over nc, as gorilla's
// client words it (a Host header from header wins), and reads the 101. It
// returns the response (also when it is not a 101) and the bytes read past
// its end: the server's first frames.
func upgrade(ctx context.Context, nc net.Conn, rawURL string, header http.Header) (*http.Response, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1) // wss -> https
	var keyBytes [16]byte
	rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	req := &http.Request{Method: http.MethodGet, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Upgrade":               {"websocket"},
			"Connection":            {"Upgrade"},
			"Sec-WebSocket-Key":     {key},
			"Sec-WebSocket-Version": {"13"},
		},
		Host: u.Host}
	for k, vs := range header {
		switch k {
		case "Host":
			if len(vs) > 0 {
				req.Host = vs[0]
			}
		case secProtocol:
			req.Header["Sec-WebSocket-Protocol"] = vs
		default:
			req.Header[k] = vs
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(nc); err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	br := bufio.NewReaderSize(&io.LimitedReader{R: nc, N: maxResponseHeader}, 4096)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		!httpguts.HeaderValuesContainsToken(resp.Header["Upgrade"], "websocket") ||
		!httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade") ||
		resp.Header.Get("Sec-Websocket-Accept") != acceptKey(key) {
		return resp, nil, errBadHandshake
	}
	if resp.Header.Get("Sec-Websocket-Extensions") != "" {
		return resp, nil, fmt.Errorf("%w: the server chose an extension none was offered", errBadHandshake)
	}
	if !stop() {
		return nil, nil, ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	rest, _ := br.Peek(br.Buffered())
	return resp, bytes.Clone(rest), nil
}

// ctxErr is err, naming the cancellation when ctx was cancelled (which
// cut the I/O with a deadline in the past); a deadline that passed is the
// timeout err already says.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// acceptKey is the Sec-WebSocket-Accept answering key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// lazyConn is a tunnel whose upgrade waits for the first Write (or Read).
type lazyConn struct {
	d   *Dialer
	t   target
	ctx context.Context

	dialMu sync.Mutex // held during the upgrade
	err    error      // the upgrade's failure; guarded by dialMu

	cur atomic.Pointer[conn] // the tunnel, once upgraded

	mu       sync.Mutex // guards what follows
	closed   bool
	cancel   context.CancelFunc // cancels an upgrade in progress
	rdl, wdl time.Time          // deadlines set before the upgrade
}

// upgrade makes the connection, with ed as early data, unless it exists.
// It reports how many bytes of ed were sent.
func (l *lazyConn) upgrade(ed []byte, forWrite bool) (*conn, int, error) {
	l.dialMu.Lock()
	defer l.dialMu.Unlock()
	if c := l.cur.Load(); c != nil {
		return c, 0, nil
	}
	if l.err != nil {
		return nil, 0, l.err
	}
	if len(ed) > l.t.ed {
		ed = ed[:l.t.ed]
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, 0, &net.OpError{Op: "dial", Net: "ws", Err: net.ErrClosed}
	}
	deadline := l.rdl
	if forWrite {
		deadline = l.wdl
	}
	var (
		ctx    context.Context
		cancel context.CancelFunc
	)
	if deadline.IsZero() {
		ctx, cancel = context.WithCancel(l.ctx)
	} else {
		ctx, cancel = context.WithDeadline(l.ctx, deadline)
	}
	l.cancel = cancel
	l.mu.Unlock()

	// The upgrade (TLS handshake and all) runs on a goroutine of its own:
	// the caller is the tunnel's, which would keep the stack it grows.
	c, err := offstack.Do(func() (*conn, error) { return l.d.dial(ctx, l.t, ed) })
	cancel()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancel = nil
	switch {
	case l.closed:
		if c != nil {
			c.Close()
		}
		err = &net.OpError{Op: "dial", Net: "ws", Err: net.ErrClosed}
	case err != nil && errors.Is(err, context.DeadlineExceeded) && !deadline.IsZero() && !time.Now().Before(deadline):
		err = &net.OpError{Op: "dial", Net: "ws", Err: fmt.Errorf("%w (during the upgrade): %w", os.ErrDeadlineExceeded, err)}
	}
	if err != nil {
		l.err = err
		return nil, 0, err
	}
	if !l.rdl.IsZero() {
		c.SetReadDeadline(l.rdl)
	}
	if !l.wdl.IsZero() {
		c.SetWriteDeadline(l.wdl)
	}
	l.cur.Store(c)
	return c, len(ed), nil
}

func (l *lazyConn) Write(p []byte) (int, error) {
	if c := l.cur.Load(); c != nil {
		return c.Write(p)
	}
	c, sent, err := l.upgrade(p, true)
	if err != nil {
		return 0, err
	}
	if sent == len(p) {
		return sent, nil
	}
	n, err := c.Write(p[sent:])
	return sent + n, err
}

func (l *lazyConn) Read(p []byte) (int, error) {
	c := l.cur.Load()
	if c == nil {
		var err error
		if c, _, err = l.upgrade(nil, false); err != nil {
			return 0, err
		}
	}
	return c.Read(p)
}

// CloseWrite is that of the tunnel; before the upgrade there is nothing to
// half-close, so it returns the same ErrUnsupported error.
func (l *lazyConn) CloseWrite() error {
	if c := l.cur.Load(); c != nil {
		return c.CloseWrite()
	}
	return errHalfClose
}

func (l *lazyConn) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if l.cancel != nil {
		l.cancel()
	}
	l.mu.Unlock()
	if c := l.cur.Load(); c != nil {
		return c.Close()
	}
	return nil
}

// LocalAddr is the connection's once upgraded, and the unspecified TCP
// address before.
func (l *lazyConn) LocalAddr() net.Addr {
	if c := l.cur.Load(); c != nil {
		return c.LocalAddr()
	}
	return &net.TCPAddr{}
}

// RemoteAddr is the connection's once upgraded, and the URL's host before.
func (l *lazyConn) RemoteAddr() net.Addr {
	if c := l.cur.Load(); c != nil {
		return c.RemoteAddr()
	}
	u, _ := url.Parse(l.t.url)
	return hostAddr(u.Host)
}

func (l *lazyConn) SetDeadline(t time.Time) error {
	l.SetReadDeadline(t)
	return l.SetWriteDeadline(t)
}

func (l *lazyConn) SetReadDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rdl = t
	if c := l.cur.Load(); c != nil {
		return c.SetReadDeadline(t)
	}
	return nil
}

func (l *lazyConn) SetWriteDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wdl = t
	if c := l.cur.Load(); c != nil {
		return c.SetWriteDeadline(t)
	}
	return nil
}

// hostAddr is a host:port not resolved yet.
type hostAddr string

func (hostAddr) Network() string  { return "tcp" }
func (a hostAddr) String() string { return string(a) }
