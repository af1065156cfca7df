// Package vlessclient is the net side of a VLESS v0 client: an outbound
// [tunnel.Dialer] that opens a carrier connection through a
// [tunnel.ConnDialer] (TLS, WebSocket, gRPC…) and speaks VLESS over it.
//
// The request header travels in the same carrier write as the first payload
// bytes, so a tunnel costs no round trip beyond the carrier's own. The codec
// is package vless; the server is package vlessserver.
//
// Supported: TCP streams with flow "". UDP is a later issue; Mux and XTLS
// flows are not planned.
package vlessclient

import (
	"context"
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
}

// DefaultHeaderWait is V2Ray's own wait for the first payload
// (proxy/vless/outbound: buf.CopyOnceTimeout, 100 ms).
const DefaultHeaderWait = 100 * time.Millisecond

// Errors; use errors.Is.
var (
	ErrUDP     = errors.New("vless: UDP not supported yet")
	ErrFlow    = errors.New("vless: flow not supported")
	ErrOptions = errors.New("vless: bad client options")
)

// Client is a VLESS v0 client. It implements tunnel.Dialer and is safe
// for concurrent use.
type Client struct {
	id      uuid.UUID
	carrier tunnel.ConnDialer
	wait    time.Duration
}

var _ tunnel.Dialer = (*Client)(nil)

// New returns a client for opts. It fails without an ID or a Carrier, and
// on any flow other than "".
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
	return &Client{id: opts.ID, carrier: opts.Carrier, wait: wait}, nil
}

// DialStream opens a carrier connection and returns a VLESS TCP tunnel to
// dst over it. Nothing is sent yet: the request header goes out with the
// first Write (or alone, before the first Read or a CloseWrite, if those
// come first). The first Read checks and strips the response header.
//
// The returned conn's Read returns io.EOF if the server closes without a
// response header and without data (V2Ray sends its header only with the
// first payload byte, so this is how an empty reply looks), and an error
// wrapping io.ErrUnexpectedEOF if it closes in the middle of the header.
// ctx bounds the carrier dial only.
func (c *Client) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	req := vless.RequestHeader{ID: c.id, Command: vless.CommandTCP, Target: dst}
	hdr, err := vless.AppendRequest(make([]byte, 0, 64), &req)
	if err != nil {
		return nil, fmt.Errorf("vless: dial %v: %w", dst, err)
	}
	carrier, err := c.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("vless: dial %v: carrier: %w", dst, err)
	}
	return newConn(carrier, hdr, c.wait), nil
}

// DialPacket is not supported yet.
func (c *Client) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	return nil, fmt.Errorf("%w (dial %v)", ErrUDP, dst)
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

// sendHeader writes the request header alone if no Write has.
func (c *conn) sendHeader() error {
	if c.reqSent.Load() {
		return nil
	}
	_, err := c.Write(nil)
	return err
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
