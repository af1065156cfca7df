package httpupgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portico-gw/portico/internal/tlsbatch"
)

// Dialer opens HTTPUpgrade tunnels. It implements tunnel.ConnDialer and is
// safe for concurrent use; its fields must not change while it dials.
type Dialer struct {
	// URL is http://host[:port]/path or https://… (ws:// and wss:// are
	// accepted as the same). An "ed" query parameter (Xray's early data)
	// is taken out of the path requested and makes the first Write carry
	// the request; other query parameters stay.
	URL string
	// Host overrides the Host header; "" = the URL's.
	Host string
	// TLS configures https; nil means the system roots and the URL's host
	// as server name. Its NextProtos are replaced by "http/1.1".
	TLS *tls.Config
	// NetDial opens the TCP connection; nil means a net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Header is added to the request (User-Agent, say). Connection,
	// Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version are set by the
	// Dialer and override it.
	Header http.Header
}

// ErrBadResponse is returned when the server does not answer the upgrade
// with a 101 to websocket; the error text carries the status.
var ErrBadResponse = errors.New("httpupgrade: upgrade refused")

// DialConn connects and sends the upgrade request. Without early data it
// returns after reading the 101; with "ed" it returns once connected, and
// the request goes out with the first Write (or alone, before a Read or a
// CloseWrite that comes first), the 101 being read by the first Read. ctx bounds the connection and, without early data, the
// upgrade.
func (d *Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	u, err := url.Parse(d.URL)
	if err != nil {
		return nil, fmt.Errorf("httpupgrade: bad URL: %w", err)
	}
	secure := false
	switch u.Scheme {
	case "http", "ws":
	case "https", "wss":
		secure = true
	default:
		return nil, fmt.Errorf("httpupgrade: URL %q: scheme must be http or https", d.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("httpupgrade: URL %q has no host", d.URL)
	}
	early := false
	if q := u.Query(); q.Has("ed") {
		n, err := strconv.Atoi(q.Get("ed"))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("httpupgrade: URL %q: ed=%q is not a byte count", d.URL, q.Get("ed"))
		}
		early = n > 0
		q.Del("ed")
		u.RawQuery = q.Encode()
	}
	req, key, err := d.request(u)
	if err != nil {
		return nil, err
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
	}
	raw, err := d.dial(ctx, u, secure)
	if err != nil {
		return nil, err
	}
	c := &clientConn{Conn: raw, req: req, key: key}
	if early {
		return c, nil
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	err = c.readResponse()
	if !stop() || err != nil {
		raw.Close()
		cause := ctx.Err()
		if dl, ok := ctx.Deadline(); ok && cause == nil && !time.Now().Before(dl) {
			cause = context.DeadlineExceeded // the conn's deadline fired first
		}
		if cause != nil {
			return nil, fmt.Errorf("httpupgrade: upgrade: %w (%v)", cause, err)
		}
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

// request encodes the upgrade request.
func (d *Dialer) request(u *url.URL) (req []byte, key string, err error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	key = base64.StdEncoding.EncodeToString(nonce[:])
	host := u.Host
	if d.Host != "" {
		host = d.Host
	}
	header := d.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	// The exact forms Xray's server compares (lower-cased) against.
	header.Set("Connection", "Upgrade")
	header.Set("Upgrade", "websocket")
	header.Set("Sec-WebSocket-Key", key)
	header.Set("Sec-WebSocket-Version", "13")
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	r := &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{Opaque: path, RawQuery: u.RawQuery},
		Host:   host,
		Header: header,
	}
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		return nil, "", fmt.Errorf("httpupgrade: request: %w", err)
	}
	return b.Bytes(), key, nil
}

func (d *Dialer) dial(ctx context.Context, u *url.URL, secure bool) (net.Conn, error) {
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if secure {
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
	if err != nil {
		return nil, fmt.Errorf("httpupgrade: %w", err)
	}
	if !secure {
		return raw, nil
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
		return nil, fmt.Errorf("httpupgrade: %w", err)
	}
	return tc, nil
}

// clientConn sends the request with the first Write and reads the 101
// with the first Read.
type clientConn struct {
	net.Conn
	key string

	wmu     sync.Mutex
	req     []byte // the request not sent yet; guarded by wmu
	reqSent atomic.Bool

	rmu      sync.Mutex
	respDone atomic.Bool
	respErr  error         // guarded by rmu
	br       *bufio.Reader // bytes read past the 101; guarded by rmu
	buffered atomic.Bool   // br is set
}

// Write sends p, behind the request on the first call.
func (c *clientConn) Write(p []byte) (int, error) {
	if c.reqSent.Load() {
		return c.Conn.Write(p)
	}
	c.wmu.Lock()
	if c.req == nil {
		c.wmu.Unlock()
		return c.Conn.Write(p)
	}
	b := append(c.req, p...)
	c.req = nil
	n, err := c.Conn.Write(b)
	c.reqSent.Store(true)
	c.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("httpupgrade: sending the request: %w", err)
	}
	return max(n-(len(b)-len(p)), 0), err
}

// sendRequest writes the request alone if no Write has sent it. It
// writes nothing when a Write has, even one that sent it while this waited
// for the lock: the conn may be half-closed by then, and a TLS conn
// refuses any write after CloseWrite, an empty one too.
func (c *clientConn) sendRequest() error {
	if c.reqSent.Load() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.req == nil {
		return nil
	}
	_, err := c.Conn.Write(c.req)
	c.req = nil
	c.reqSent.Store(true)
	if err != nil {
		return fmt.Errorf("httpupgrade: sending the request: %w", err)
	}
	return nil
}

// Read returns tunnel bytes, reading the 101 first.
func (c *clientConn) Read(p []byte) (int, error) {
	if !c.respDone.Load() {
		if err := c.readResponse(); err != nil {
			return 0, err
		}
	}
	if c.buffered.Load() {
		c.rmu.Lock()
		if br := c.br; br != nil {
			n, err := br.Read(p) // only buffered bytes: br is not empty
			if br.Buffered() == 0 {
				c.br = nil
				c.buffered.Store(false)
			}
			c.rmu.Unlock()
			return n, err
		}
		c.rmu.Unlock()
	}
	return c.Conn.Read(p)
}

// readResponse sends the request if no Write has, then reads and checks
// the 101. A failure is final.
func (c *clientConn) readResponse() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.respDone.Load() {
		return nil
	}
	if c.respErr != nil {
		return c.respErr
	}
	if err := c.sendRequest(); err != nil {
		c.respErr = err
		return err
	}
	br := bufio.NewReaderSize(c.Conn, 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	switch {
	case err == io.EOF:
		err = fmt.Errorf("httpupgrade: connection closed before the response: %w", io.ErrUnexpectedEOF)
	case err != nil:
		err = fmt.Errorf("httpupgrade: reading the response: %w", err)
	case resp.StatusCode != http.StatusSwitchingProtocols ||
		!httpguts.HeaderValuesContainsToken(resp.Header["Upgrade"], "websocket") ||
		!httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade"):
		err = fmt.Errorf("%w: %s", ErrBadResponse, resp.Status)
	case resp.Header.Get("Sec-Websocket-Accept") != "" && resp.Header.Get("Sec-Websocket-Accept") != acceptKey(c.key):
		err = fmt.Errorf("%w: wrong Sec-WebSocket-Accept", ErrBadResponse)
	}
	if err != nil {
		c.respErr = err
		return err
	}
	if br.Buffered() > 0 {
		c.br = br
		c.buffered.Store(true)
	}
	c.respDone.Store(true)
	return nil
}

// CloseWrite sends the request if no Write has, then half-closes the
// connection.
func (c *clientConn) CloseWrite() error {
	if err := c.sendRequest(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}
