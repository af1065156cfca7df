package gateway

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/readwait"
)

// rewindConn hands its reader the bytes already peeked, then the live
// connection, and keeps a copy of everything it handed out until the first
// Write. While it still has that copy, Rewind returns a conn that replays
// every byte from the start: that is how a connection a protocol turned down
// reaches the decoy with nothing lost.
//
// Reads must come from one goroutine until the first Write (as they do in a
// protocol's handshake); after it, reads and writes may be concurrent.
type rewindConn struct {
	net.Conn
	tlsState *tls.ConnectionState

	buf       []byte // bytes handed out so far while recording; the replay source
	pos       int    // next byte of buf to hand out
	recording atomic.Bool
	limit     int
}

// maxRecord bounds what a handshake may read before the conn can no longer
// be rewound: far more than any protocol header.
const maxRecord = 64 << 10

func newRewindConn(c net.Conn, state *tls.ConnectionState, prefix []byte) *rewindConn {
	rc := &rewindConn{Conn: c, tlsState: state, buf: prefix, limit: maxRecord}
	rc.recording.Store(true)
	return rc
}

func (c *rewindConn) Read(p []byte) (int, error) {
	if c.pos < len(c.buf) {
		n := copy(p, c.buf[c.pos:])
		c.pos += n
		return n, nil
	}
	if !c.recording.Load() {
		c.buf = nil
		return c.Conn.Read(p)
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if len(c.buf)+n > c.limit {
			c.recording.Store(false)
			c.buf = nil
		} else {
			c.buf = append(c.buf, p[:n]...)
			c.pos = len(c.buf)
		}
	}
	return n, err
}

func (c *rewindConn) Write(p []byte) (int, error) {
	c.recording.Store(false)
	return c.Conn.Write(p)
}

// commit ends the recording: the protocol accepted the connection, so it
// will never be rewound, and an upload must not be copied on the way.
func (c *rewindConn) commit() { c.recording.Store(false) }

// CloseWrite passes a half-close on to the TLS conn (close_notify).
func (c *rewindConn) CloseWrite() error {
	c.recording.Store(false)
	return closeWriteErr(c.Conn)
}

// Rewind returns a conn that replays every byte read so far, or nil when the
// conn has been written to or read past the recording limit.
func (c *rewindConn) Rewind() *prefixConn {
	if !c.recording.Load() {
		return nil
	}
	return newPrefixConn(c.Conn, c.tlsState, c.buf)
}

func closeWriteErr(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// prefixConn reads prefix first, then the live conn. It is what the HTTP
// server gets: a conn whose first bytes were already peeked.
type prefixConn struct {
	net.Conn
	tlsState *tls.ConnectionState
	prefix   []byte
	// readBy, when set, is a read deadline the HTTP server cannot move
	// later: a connection handed over because its handshake time ran out
	// gets no fresh header timeout (see FrontDoor.toHTTP). Set before the
	// HTTP server has the conn, read-only after.
	readBy time.Time
}

func newPrefixConn(c net.Conn, state *tls.ConnectionState, prefix []byte) *prefixConn {
	return &prefixConn{Conn: c, tlsState: state, prefix: prefix}
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// ReadWaiter implements readwait.Waiter: the prefix is ready at once, the
// live conn is waited on.
func (c *prefixConn) ReadWaiter() func() error {
	inner := readwait.For(c.Conn)
	if inner == nil {
		return nil
	}
	return func() error {
		if len(c.prefix) > 0 {
			return nil
		}
		return inner()
	}
}

func (c *prefixConn) CloseWrite() error { return closeWriteErr(c.Conn) }

// SetReadDeadline sets t, or readBy if that is earlier.
func (c *prefixConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// SetDeadline sets t, the read side no later than readBy.
func (c *prefixConn) SetDeadline(t time.Time) error {
	if c.readBy.IsZero() {
		return c.Conn.SetDeadline(t)
	}
	c.Conn.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *prefixConn) clamp(t time.Time) time.Time {
	if !c.readBy.IsZero() && (t.IsZero() || t.After(c.readBy)) {
		return c.readBy
	}
	return t
}

// frontTLSState lets the HTTP server's ConnContext recover the TLS state of
// the front door. It is deliberately not named ConnectionState: net/http
// takes a conn with that method for TLS and then never looks for the
// prior-knowledge HTTP/2 preface, which is how h2 arrives here.
func (c *prefixConn) frontTLSState() *tls.ConnectionState { return c.tlsState }

// chanListener is a net.Listener fed by the front door: the HTTP server
// accepts the connections the classifier decided are HTTP (or decoy
// fallbacks), exactly as it would from a real listener.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// push hands c to the HTTP server; it reports false (and the caller closes
// c) when the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
