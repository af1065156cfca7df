// Package vlessclient is the net side of a VLESS client: an outbound
// [tunnel.Dialer] that opens a carrier connection through a
// [tunnel.ConnDialer] (TLS, WebSocket, gRPC…) and speaks VLESS version 0
// or, with Options.Version 1, version 1 over it (v1.go; the wire format is
// docs/protocols/vless-v1.md): keep-alive connections reused from a pool,
// the server's resolved address, and first-write padding.
//
// The request header travels in the same carrier write as the first payload
// bytes, so a tunnel costs no round trip beyond the carrier's own. The codec
// is package vless; the server is package vlessserver.
//
// Supported: TCP streams and UDP (version 0 framing, one destination per
// tunnel; version 1, classic or udp_multi framing, any destination) with
// flow "". Mux and XTLS flows are not planned.
package vlessclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
)

// Options configures a Client.
type Options struct {
	ID      uuid.UUID         // the VLESS user id; required
	Flow    string            // must be "" for now
	Carrier tunnel.ConnDialer // opens the connection to the server; required

	// HeaderWait is how long a Read that comes before any Write waits for
	// that Write, so that the request header still leaves with the first
	// payload bytes (a relay starts reading and writing at once). After it,
	// the header is sent alone so that server-first protocols work. 0 means
	// DefaultHeaderWait; negative means do not wait.
	HeaderWait time.Duration

	// Version is the VLESS version, 0 (the default) or 1. Version 1 needs
	// Secure; the options below need Version 1.
	Version int
	// Secure says the carrier is TLS (raw TLS, or WebSocket/gRPC over TLS).
	Secure bool

	// KeepAlive asks the server to keep the connection when a stream ends
	// cleanly both ways; the payload is then framed in chunks, and the
	// connection goes to a pool that later DialStream calls take from.
	KeepAlive bool
	// PoolSize is how many idle connections the pool keeps; the oldest is
	// closed when a new one would exceed it. 0 means DefaultPoolSize.
	PoolSize int
	// PoolIdleTimeout is how long a connection may wait in the pool; an
	// older one is closed when DialStream meets it (no timer runs). 0
	// means DefaultPoolIdleTimeout.
	PoolIdleTimeout time.Duration

	// ResolveAddr asks the server for the address it dialled; the streams
	// implement Resolver.
	ResolveAddr bool

	// PadMax > 0 turns padding on: the first write on every new connection
	// is exactly PadTo bytes, PadTo drawn once, in New, uniformly from
	// [PadMin, PadMax]. PadMin 0 means vless.MinPadTo (292, the longest
	// header), which is also its least value; PadMax is at most
	// vless.MaxPadTo (16384). With Go's TLS keep PadMax ≤ 1186 for one
	// record.
	PadMin, PadMax int
	// PadRand is where the 8 random bytes for PadTo, and the 8-byte id of
	// every udp_multi association, come from; nil means crypto/rand. Tests
	// pin PadTo with PadMin == PadMax or a fixed reader. It need not be
	// safe for concurrent use.
	PadRand io.Reader

	// UDPClassic makes DialPacket (Version 1) open one classic tunnel per
	// association, every datagram carrying its address (verysimple's v1
	// UDP without udp_multi). Off, the default: udp_multi, one tunnel per
	// remote, all with the association's id, so that a Portico server
	// gives them one mapped address (full cone).
	UDPClassic bool
	// MaxUDPTunnels bounds the tunnels of one udp_multi association; one
	// more closes the least recently used. 0 means DefaultMaxUDPTunnels.
	MaxUDPTunnels int
}

// Defaults of the keep-alive pool.
const (
	DefaultPoolSize        = 4
	DefaultPoolIdleTimeout = 60 * time.Second
)

// DefaultHeaderWait is V2Ray's own wait for the first payload
// (proxy/vless/outbound: buf.CopyOnceTimeout, 100 ms).
const DefaultHeaderWait = 100 * time.Millisecond

// Errors; use errors.Is.
var (
	// Deprecated: kept for callers of the first release; DialPacket
	// supports UDP now and never returns it.
	ErrUDP        = errors.New("vless: UDP not supported")
	ErrFlow       = errors.New("vless: flow not supported")
	ErrOptions    = errors.New("vless: bad client options")
	ErrInsecureV1 = errors.New("vless: version 1 needs a TLS carrier")
)

// Client is a VLESS client, version 0 or 1. It implements tunnel.Dialer
// and is safe for concurrent use.
type Client struct {
	id      uuid.UUID
	carrier tunnel.ConnDialer
	wait    time.Duration

	version   int
	keepAlive bool
	resolve   bool
	padTo     int // 0: no padding
	poolSize  int

	udpClassic    bool
	maxUDPTunnels int
	randMu        sync.Mutex
	rand          io.Reader // PadRand or crypto/rand; guarded by randMu

	poolIdle time.Duration
	now      func() time.Time // time.Now; tests replace it

	mu       sync.Mutex
	idle     []*carrier // the pool, oldest first; guarded by mu
	dialed   atomic.Int64
	reused   atomic.Int64
	returned atomic.Int64
}

var _ tunnel.Dialer = (*Client)(nil)

// New returns a client for opts. It fails without an ID or a Carrier, on
// any flow other than "", on Version 1 without Secure, on v1 options with
// Version 0, on negative pool settings, on a padding range outside
// [vless.MinPadTo, vless.MaxPadTo], and when PadRand fails.
func New(opts Options) (*Client, error) {
	if opts.ID == (uuid.UUID{}) {
		return nil, fmt.Errorf("%w: no id", ErrOptions)
	}
	if opts.Carrier == nil {
		return nil, fmt.Errorf("%w: no carrier dialer", ErrOptions)
	}
	if opts.Flow != "" {
		return nil, fmt.Errorf(`%w: flow %q is not supported by Portico yet; set it to ""`, ErrFlow, opts.Flow)
	}
	wait := opts.HeaderWait
	if wait == 0 {
		wait = DefaultHeaderWait
	}
	c := &Client{id: opts.ID, carrier: opts.Carrier, wait: wait, version: opts.Version,
		keepAlive: opts.KeepAlive, resolve: opts.ResolveAddr,
		poolSize: opts.PoolSize, poolIdle: opts.PoolIdleTimeout, now: time.Now,
		udpClassic: opts.UDPClassic, maxUDPTunnels: opts.MaxUDPTunnels, rand: opts.PadRand}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if err := c.checkV1(&opts); err != nil {
		return nil, err
	}
	return c, nil
}

// DialStream opens a carrier connection (for version 1 with KeepAlive, it
// takes one from the pool first; see dialV1) and returns a VLESS TCP tunnel
// to dst over it. Nothing is sent yet: the request header goes out with the
// first Write (or alone, before the first Read or a CloseWrite, if those
// come first). The first Read checks and strips the response header.
//
// The returned conn's Read returns io.EOF if the server closes without a
// response header and without data (V2Ray sends its header only with the
// first payload byte, so this is how an empty reply looks), and an error
// wrapping io.ErrUnexpectedEOF if it closes in the middle of the header.
// ctx bounds the carrier dial only.
func (c *Client) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	if c.version == 1 {
		return c.dialV1(ctx, dst)
	}
	req := vless.RequestHeader{ID: c.id, Command: vless.CommandTCP, Target: dst}
	hdr, err := vless.AppendRequest(make([]byte, 0, 64), &req)
	if err != nil {
		return nil, fmt.Errorf("vless: dial %v: %w", dst, err)
	}
	carrier, err := c.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("vless: dial %v: carrier: %w", dst, err)
	}
	c.dialed.Add(1)
	return newConn(carrier, hdr, c.wait), nil
}

// DialPacket returns a UDP association whose first destination is dst.
//
// Version 0: a VLESS v0 UDP tunnel (command 2) to dst on a new carrier,
// carrying packets to dst only: WritePacket to another address returns an
// error wrapping tunnel.ErrOtherDestination. ReadPacket checks the response
// header first, and yields replies as coming from dst.
//
// Version 1 (udpv1.go, docs/protocols/vless-v1.md section 9): any
// destination. With UDPClassic, one tunnel on a new carrier whose frames
// carry their address; otherwise udp_multi: one tunnel per remote, opened
// by the first WritePacket to it, all with one random association id, at
// most MaxUDPTunnels of them. Replies carry their source either way. No v1
// tunnel rides the keep-alive pool.
//
// The request header goes out with the first packet. ctx bounds the first
// carrier dial only; later udp_multi dials are bounded by UDPDialTimeout.
func (c *Client) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	if c.version == 1 {
		return c.dialPacketV1(ctx, dst)
	}
	req := vless.RequestHeader{ID: c.id, Command: vless.CommandUDP, Target: dst}
	hdr, err := vless.AppendRequest(make([]byte, 0, 64), &req)
	if err != nil {
		return nil, fmt.Errorf("vless: udp %v: %w", dst, err)
	}
	carrier, err := c.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("vless: udp %v: carrier: %w", dst, err)
	}
	c.dialed.Add(1)
	return newPacketConn(carrier, hdr, dst), nil
}

// conn is a client tunnel stream.
type conn struct {
	net.Conn

	wmu     sync.Mutex    // held while the request header is being written
	reqSent atomic.Bool   // the request header is on its way
	sentCh  chan struct{} // closed when reqSent becomes true
	req     []byte        // the request header; guarded by wmu until reqSent
	wait    time.Duration // see Options.HeaderWait

	closeOnce sync.Once
	closed    chan struct{} // closed by Close

	rmu     sync.Mutex  // held while the response header is being read
	resDone atomic.Bool // the response header has been read
	resErr  error       // a failure reading it, returned on every Read; guarded by rmu
	rbuf    []byte      // the response header read so far; guarded by rmu
	rn      int         // bytes in rbuf
	pending []byte      // payload read with the response header; Read's only
}

type closeWriter interface{ CloseWrite() error }

// halfConn is conn for carriers that can half-close.
type halfConn struct{ *conn }

func newConn(carrier net.Conn, req []byte, wait time.Duration) net.Conn {
	c := &conn{Conn: carrier, req: req, wait: wait, sentCh: make(chan struct{}), closed: make(chan struct{})}
	if _, ok := carrier.(closeWriter); ok {
		return halfConn{c}
	}
	return c
}

// Write sends p, preceded on the first call by the request header in the
// same carrier write.
func (c *conn) Write(p []byte) (int, error) {
	if c.reqSent.Load() {
		return c.Conn.Write(p)
	}
	c.wmu.Lock()
	if c.reqSent.Load() {
		c.wmu.Unlock()
		return c.Conn.Write(p)
	}
	b := append(c.req, p...)
	c.req = nil
	n, err := c.Conn.Write(b)
	c.reqSent.Store(true)
	close(c.sentCh)
	c.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("vless: sending request header: %w", err)
	}
	return max(n-(len(b)-len(p)), 0), err
}

// sendHeader writes the request header alone if no Write has. It writes
// nothing when a Write has, even one that sent it while this waited for the
// lock: the carrier may be half-closed by then, and a TLS carrier refuses
// any write after CloseWrite, an empty one too.
func (c *conn) sendHeader() error {
	if c.reqSent.Load() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.reqSent.Load() {
		return nil
	}
	_, err := c.Conn.Write(c.req)
	c.req = nil
	c.reqSent.Store(true)
	close(c.sentCh)
	if err != nil {
		return fmt.Errorf("vless: sending request header: %w", err)
	}
	return nil
}

// Read returns payload from the server, after checking and stripping the
// response header on the first call.
func (c *conn) Read(p []byte) (int, error) {
	if !c.resDone.Load() {
		if err := c.readResponse(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *conn) readResponse() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.resDone.Load() {
		return nil
	}
	if c.resErr != nil {
		return c.resErr
	}
	// A Read before any Write: the server cannot answer a request it has
	// not seen. Give the first Write a moment to carry the header.
	if !c.reqSent.Load() && c.wait > 0 {
		t := time.NewTimer(c.wait)
		select {
		case <-c.sentCh:
		case <-t.C:
		case <-c.closed:
			t.Stop()
			return net.ErrClosed
		}
		t.Stop()
	}
	if err := c.sendHeader(); err != nil {
		c.resErr = err
		return err
	}
	if c.rbuf == nil {
		c.rbuf = make([]byte, 512) // a whole response header, and maybe payload
	}
	for {
		m, err := c.Conn.Read(c.rbuf[c.rn:])
		c.rn += m
		if c.rn > 0 {
			_, used, perr := vless.ParseResponse(c.rbuf[:c.rn])
			if perr == nil {
				if used < c.rn {
					c.pending = c.rbuf[used:c.rn]
				}
				c.rbuf = nil
				c.resDone.Store(true)
				return nil
			}
			if perr != protocols.ErrNeedMore {
				c.resErr = fmt.Errorf("vless: response header: %w", perr)
				return c.resErr
			}
		}
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				// Not fatal: a later Read, with a new deadline, goes on.
				return fmt.Errorf("vless: reading response header: %w", err)
			case err == io.EOF && c.rn == 0:
				c.resErr = io.EOF
			case err == io.EOF:
				c.resErr = fmt.Errorf("vless: response header cut after %d bytes: %w", c.rn, io.ErrUnexpectedEOF)
			default:
				c.resErr = fmt.Errorf("vless: reading response header: %w", err)
			}
			return c.resErr
		}
		if c.rn == len(c.rbuf) { // cannot happen: MaxResponseLen < len(rbuf)
			c.resErr = fmt.Errorf("vless: response header longer than %d bytes", len(c.rbuf))
			return c.resErr
		}
	}
}

// Close closes the carrier; a Read waiting for the first Write returns.
func (c *conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// CloseWrite sends the request header if no Write did (so the server
// learns the target), then half-closes the carrier.
func (c halfConn) CloseWrite() error {
	if err := c.sendHeader(); err != nil {
		return err
	}
	return c.Conn.(closeWriter).CloseWrite()
}
