// Package vmessclient is the net side of a VMess client: an outbound
// [tunnel.Dialer] that opens a carrier connection through a
// [tunnel.ConnDialer] (TLS, WebSocket, gRPC…) and speaks VMess over it,
// with the VMessAEAD header (alterId 0, the default) or the legacy MD5
// header (alterId > 0, or ForceLegacy for servers older than V2Ray 4.28
// that run with alterId 0).
//
// The request header travels in the same carrier write as the first body
// chunk, so a tunnel costs no round trip beyond the carrier's own. The
// codec is package vmess; the server is package vmessserver.
//
// Supported: TCP streams with every security V2Ray clients offer
// (aes-128-gcm, chacha20-poly1305, auto, none, zero), and UDP (one datagram
// per chunk, one destination per tunnel) with every security but zero;
// Mux is not planned.
package vmessclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmessconn"
)

// Options configures a Client.
type Options struct {
	ID      uuid.UUID // the VMess user id; required
	AlterID int       // 0 (VMessAEAD, recommended) .. 65535 (legacy MD5 header, with one of that many alter ids)
	// Security is the body cipher: "aes-128-gcm", "chacha20-poly1305",
	// "auto" (the default: aes-128-gcm on amd64, arm64 and s390x,
	// chacha20-poly1305 elsewhere), "none" or "zero" (none without chunk
	// framing).
	Security string
	// ForceLegacy sends the legacy MD5 header even with AlterID 0: V2Ray's
	// V2RAY_VMESS_AEAD_DISABLED=true, for servers older than V2Ray 4.28.
	ForceLegacy bool
	Carrier     tunnel.ConnDialer // opens the connection to the server; required
	Now         func() time.Time  // nil: time.Now
	Rand        io.Reader         // keys, nonces and padding; nil: crypto/rand.Reader

	// HeaderWait is how long a Read that comes before any Write waits for
	// that Write, so that the request header still leaves with the first
	// payload (a relay starts reading and writing at once). After it, the
	// header is sent alone so that server-first protocols work. 0 means
	// DefaultHeaderWait; negative means do not wait.
	HeaderWait time.Duration
}

// DefaultHeaderWait is V2Ray's own wait for the first payload
// (proxy/vmess/outbound: buf.CopyOnceTimeout, 100 ms).
const DefaultHeaderWait = 100 * time.Millisecond

// Errors; use errors.Is.
var (
	ErrUDP     = errors.New("vmess: UDP not supported with this security")
	ErrOptions = errors.New("vmess: bad client options")
	// ErrNoResponse: the server closed the connection, or has not answered
	// yet, without a response header. A VMess server that refuses a
	// client says nothing, so the message lists the usual causes.
	ErrNoResponse = errors.New("vmess: no response header from the server")
)

// noResponseHint is what a silent server usually means.
const noResponseHint = `a VMess server that refuses a client stays silent: check the id, the alterId (0 = VMessAEAD; servers since 2022 refuse legacy clients with alterId > 0 unless allowed, and a server user with a smaller alterId than the client refuses it), the security, and that the client and server clocks agree within 120 s`

// Client is a VMess client. It implements tunnel.Dialer and is safe for
// concurrent use.
type Client struct {
	key      *vmess.UserKey
	legacy   bool
	ids      [][16]byte // legacy: the ids to sign with (alter ids, or the main id)
	security vmess.Security
	options  vmess.Option
	carrier  tunnel.ConnDialer
	now      func() time.Time
	wait     time.Duration

	randMu sync.Mutex
	rand   io.Reader
}

var _ tunnel.Dialer = (*Client)(nil)

// New returns a client for opts. It fails without an ID or a Carrier, on an
// unknown security and on an AlterID outside 0..65535.
func New(opts Options) (*Client, error) {
	if opts.ID == (uuid.UUID{}) {
		return nil, fmt.Errorf("%w: no id", ErrOptions)
	}
	if opts.Carrier == nil {
		return nil, fmt.Errorf("%w: no carrier dialer", ErrOptions)
	}
	if opts.AlterID < 0 || opts.AlterID > 65535 {
		return nil, fmt.Errorf(`%w: alterId %d is outside 0..65535 (0, VMessAEAD, is recommended)`, ErrOptions, opts.AlterID)
	}
	sec, err := vmess.ParseSecurity(opts.Security)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if sec == vmess.SecurityLegacy {
		return nil, fmt.Errorf(`%w: security "aes-128-cfb" is not offered by V2Ray clients; use "aes-128-gcm", "chacha20-poly1305" or "auto"`, ErrOptions)
	}
	c := &Client{key: vmess.NewUserKey(opts.ID), carrier: opts.Carrier, now: opts.Now, rand: opts.Rand, wait: opts.HeaderWait}
	c.security, c.options = vmess.ClientOptions(sec, false)
	if c.now == nil {
		c.now = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if c.wait == 0 {
		c.wait = DefaultHeaderWait
	}
	switch {
	case opts.AlterID > 0:
		c.legacy, c.ids = true, vmess.AlterIDs(opts.ID, opts.AlterID)
	case opts.ForceLegacy:
		c.legacy, c.ids = true, [][16]byte{opts.ID}
	}
	return c, nil
}

// random is what one request needs: keys, V, padding, the AuthID's bytes
// and nonce, the legacy choices, and a seed for the chunk padding.
type random struct {
	IV, Key  [16]byte
	V        byte
	PadLen   byte
	Pad      [15]byte
	AuthRand [4]byte
	Nonce    [8]byte
	Pick     uint32 // legacy: which id
	Jitter   uint32 // legacy: time jitter
	PadSeed  [32]byte
}

func (c *Client) draw() (random, error) {
	var b [16 + 16 + 1 + 1 + 15 + 4 + 8 + 4 + 4 + 32]byte
	c.randMu.Lock()
	_, err := io.ReadFull(c.rand, b[:])
	c.randMu.Unlock()
	if err != nil {
		return random{}, fmt.Errorf("vmess: randomness: %w", err)
	}
	var r random
	i := 0
	take := func(n int) []byte { s := b[i : i+n]; i += n; return s }
	r.IV, r.Key = [16]byte(take(16)), [16]byte(take(16))
	r.V, r.PadLen = take(1)[0], take(1)[0]%16
	r.Pad, r.AuthRand, r.Nonce = [15]byte(take(15)), [4]byte(take(4)), [8]byte(take(8))
	r.Pick, r.Jitter = binary.BigEndian.Uint32(take(4)), binary.BigEndian.Uint32(take(4))
	r.PadSeed = [32]byte(take(32))
	return r, nil
}

// header builds the request header for dst and its session.
func (c *Client) header(dst protocols.Addr, cmd vmess.Command) ([]byte, vmess.Session, *vmess.Sealer, error) {
	rnd, err := c.draw()
	if err != nil {
		return nil, vmess.Session{}, nil, err
	}
	req := vmess.Request{
		IV: rnd.IV, Key: rnd.Key, ResponseAuth: rnd.V,
		Options: c.options, Security: c.security,
		Command: cmd, Target: dst,
		Padding: rnd.Pad[:rnd.PadLen],
	}
	now := c.now().Unix()
	var hdr []byte
	if c.legacy {
		// V2Ray's legacy client signs with a random alter id and a time
		// up to 30 s off (common/protocol NewTimestampGenerator).
		ts := now + int64(rnd.Jitter%61) - 30
		id := c.ids[int(rnd.Pick%uint32(len(c.ids)))]
		hdr, err = vmess.AppendLegacyRequest(make([]byte, 0, vmess.MaxLegacyHeaderLen), vmess.LegacyAuth(id, ts), c.key.CmdKey, ts, &req)
	} else {
		seed := vmess.AEADSeed{Time: now, AuthRand: rnd.AuthRand, Nonce: rnd.Nonce}
		hdr, err = vmess.AppendAEADRequest(make([]byte, 0, vmess.MaxAEADHeaderLen), c.key, seed, &req)
	}
	if err != nil {
		return nil, vmess.Session{}, nil, err
	}
	sess := req.Session(c.legacy)
	sealer, err := sess.RequestSealer(mathrand.NewChaCha8(rnd.PadSeed))
	return hdr, sess, sealer, err
}

// DialStream opens a carrier connection and returns a VMess TCP tunnel to
// dst over it. Nothing is sent yet: the request header goes out with the
// first Write (or alone, before the first Read, after HeaderWait, or a
// CloseWrite, if those come first). The first Read checks the response
// header.
//
// The returned conn's Read returns an error wrapping ErrNoResponse if the
// server closes without a response header (what a VMess server that
// refuses the client does), vmess.ErrBadResponse if the header does not
// answer this request, and io.EOF at the end of the response (its
// end-of-stream chunk, or the carrier ending between chunks, as V2Ray
// accepts). CloseWrite sends the end-of-stream chunk. ctx bounds the
// carrier dial only.
func (c *Client) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	hdr, sess, sealer, err := c.header(dst, vmess.CommandTCP)
	if err != nil {
		return nil, fmt.Errorf("vmess: dial %v: %w", dst, err)
	}
	carrier, err := c.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmess: dial %v: carrier: %w", dst, err)
	}
	return newConn(carrier, sess, sealer, hdr, c.wait), nil
}

// DialPacket opens a carrier connection and returns a VMess UDP tunnel
// (command 2) to dst over it: one datagram per body chunk both ways, as
// V2Ray does. The tunnel carries packets to dst only: WritePacket to
// another address returns an error wrapping tunnel.ErrOtherDestination. The
// request header goes out with the first packet; ReadPacket checks the
// response header first and yields replies as coming from dst. Security
// zero has no chunks and gives ErrUDP. ctx bounds the carrier dial only.
func (c *Client) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	hdr, sess, sealer, err := c.header(dst, vmess.CommandUDP)
	if err != nil {
		return nil, fmt.Errorf("vmess: udp %v: %w", dst, err)
	}
	if !sealer.Framed() {
		return nil, fmt.Errorf(`%w: security "zero" has no chunks to carry datagrams (udp %v); use another security`, ErrUDP, dst)
	}
	carrier, err := c.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmess: udp %v: carrier: %w", dst, err)
	}
	return &packetConn{c: newConn(carrier, sess, sealer, hdr, c.wait), dst: dst, max: sealer.MaxPayload()}, nil
}

// conn is a client tunnel stream.
type conn struct {
	net.Conn
	sess vmess.Session
	w    *vmessconn.Writer
	r    *vmessconn.Reader
	wait time.Duration

	sentOnce sync.Once
	sent     chan struct{} // closed once the request header is on its way
	closing  sync.Once
	closed   chan struct{} // closed by Close

	resDone atomic.Bool // the response header has been read
	resErr  error       // a fatal failure reading it; guarded by r's lock
}

func newConn(carrier net.Conn, sess vmess.Session, sealer *vmess.Sealer, hdr []byte, wait time.Duration) *conn {
	return &conn{
		Conn:   carrier,
		sess:   sess,
		w:      vmessconn.NewWriter(carrier, "request body", sealer, hdr),
		r:      vmessconn.NewReader(carrier, "response body", nil, 0, 0, nil),
		wait:   wait,
		sent:   make(chan struct{}),
		closed: make(chan struct{}),
	}
}

func (c *conn) markSent() { c.sentOnce.Do(func() { close(c.sent) }) }

// Write sends p, preceded on the first call by the request header in the
// same carrier write.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.markSent()
	return n, err
}

// Read returns response payload, after checking the response header on
// the first call.
func (c *conn) Read(p []byte) (int, error) {
	if !c.resDone.Load() {
		if err := c.readResponse(); err != nil {
			return 0, err
		}
	}
	return c.r.Read(p)
}

func (c *conn) readResponse() error {
	c.r.Lock()
	defer c.r.Unlock()
	if c.resDone.Load() {
		return nil
	}
	if c.resErr != nil {
		return c.resErr
	}
	// A Read before any Write: the server cannot answer a request it has
	// not seen. Give the first Write a moment to carry the header.
	if !c.w.PrefixSent() && c.wait > 0 {
		t := time.NewTimer(c.wait)
		select {
		case <-c.sent:
		case <-t.C:
		case <-c.closed:
			t.Stop()
			return net.ErrClosed
		}
		t.Stop()
	}
	if err := c.w.SendPrefix(); err != nil {
		c.resErr = err
		return err
	}
	c.markSent()
	for {
		buffered := c.r.Buffered()
		_, n, opener, err := c.sess.OpenResponse(buffered)
		if err == nil {
			c.r.Consume(n)
			c.r.SetOpener(opener)
			c.resDone.Store(true)
			return nil
		}
		if err != protocols.ErrNeedMore {
			c.resErr = fmt.Errorf("vmess: response header: %w", err)
			return c.resErr
		}
		rerr := c.r.Fill(len(buffered) + 1)
		if rerr == nil {
			continue
		}
		var ne net.Error
		switch {
		case errors.As(rerr, &ne) && ne.Timeout():
			// Not fatal: a later Read, with a new deadline, goes on.
			return fmt.Errorf("%w yet (%d bytes of it): %w; if this persists, %s", ErrNoResponse, len(buffered), rerr, noResponseHint)
		case rerr == io.EOF:
			c.resErr = fmt.Errorf("%w: the server closed the connection after %d bytes of it: %w; %s", ErrNoResponse, len(buffered), io.ErrUnexpectedEOF, noResponseHint)
		default:
			c.resErr = fmt.Errorf("vmess: reading the response header: %w", rerr)
		}
		return c.resErr
	}
}

// Close closes the carrier; a Read waiting for the first Write returns.
// It sends no end-of-stream chunk (see CloseWrite).
func (c *conn) Close() error {
	c.closing.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// CloseWrite ends the request: the header if no Write sent it, then the
// end-of-stream chunk (for security zero, which has none, it half-closes
// the carrier).
func (c *conn) CloseWrite() error {
	err := vmessconn.CloseWrite(c.w, c.Conn)
	c.markSent()
	return err
}
