package ws

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Errors of the stream; use errors.Is.
var (
	// ErrTextMessage: the peer sent a text message; tunnels are binary.
	// The conn is closed with code 1003.
	ErrTextMessage = errors.New("ws: text message on a binary tunnel")
	// ErrPeerSilent: nothing, not even a pong, came from the peer for two
	// ping intervals while the conn was being read.
	ErrPeerSilent = errors.New("ws: peer silent for two ping intervals")
	// errHalfClose is returned by CloseWrite before the peer has closed.
	errHalfClose = fmt.Errorf("ws: CloseWrite before the peer's close frame: %w (WebSocket has no half-close; the write side stays open until Close)", errors.ErrUnsupported)
)

// closeWait bounds the writing of a close frame or pong.
const closeWait = time.Second

// conn is a tunnel over a WebSocket. Read and Write may be called
// concurrently with each other and with everything else; concurrent Reads
// (or Writes) are serialized.
type conn struct {
	ws            *websocket.Conn
	local, remote net.Addr

	rmu   sync.Mutex
	early []byte    // early data not yet read; guarded by rmu
	r     io.Reader // the message being read; guarded by rmu
	rerr  error     // sticky read error; guarded by rmu

	wmu sync.Mutex // serializes Write, CloseWrite and the close frame of Close

	readDeadline atomic.Int64 // unix nanos, 0 = none; lets a Read past its deadline return harmlessly
	peerClosed   atomic.Bool  // the peer's close frame (or EOF) ended its stream
	closeSent    atomic.Bool  // our close frame is out
	closed       atomic.Bool  // Close was called

	// keepalive, when interval > 0
	interval  time.Duration
	timer     atomic.Pointer[time.Timer]
	lastHeard atomic.Int64 // unix nanos of the last sign of life
	reading   atomic.Int32 // Reads in progress
	silent    atomic.Bool  // the keepalive gave up on the peer
}

func newConn(wsc *websocket.Conn, local, remote net.Addr) *conn {
	c := &conn{ws: wsc, local: local, remote: remote}
	// The peer's close frame is not echoed here: the echo waits for
	// CloseWrite or Close so that data still owed to the peer can go first.
	wsc.SetCloseHandler(func(int, string) error { return nil })
	wsc.SetPingHandler(func(data string) error {
		c.touch()
		err := wsc.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(closeWait))
		var ne net.Error
		if err == websocket.ErrCloseSent || errors.As(err, &ne) && ne.Timeout() {
			return nil // as gorilla's default handler: not worth failing the read
		}
		return err
	})
	wsc.SetPongHandler(func(string) error { c.touch(); return nil })
	return c
}

// startKeepalive pings every d and closes a peer silent for 2d. It uses a
// timer rather than a goroutine, so an idle tunnel costs no stack.
func (c *conn) startKeepalive(d time.Duration) {
	c.interval = d
	c.touch()
	t := time.AfterFunc(time.Hour, c.keepalive)
	c.timer.Store(t)
	t.Reset(d)
}

func (c *conn) touch() {
	if c.interval > 0 {
		c.lastHeard.Store(time.Now().UnixNano())
	}
}

func (c *conn) keepalive() {
	if c.closed.Load() {
		return
	}
	// Silence only counts while someone reads: control frames are processed
	// by Read, so a conn nobody reads cannot hear pongs.
	if c.reading.Load() == 0 {
		c.touch()
	}
	if time.Duration(time.Now().UnixNano()-c.lastHeard.Load()) >= 2*c.interval {
		c.silent.Store(true)
		if c.closeSent.CompareAndSwap(false, true) {
			c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "keepalive timeout"), time.Now().Add(closeWait))
		}
		c.ws.NetConn().Close() // Read and Write fail; Close still runs as usual
		return
	}
	c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.interval))
	c.timer.Load().Reset(c.interval)
}

// Read reads the early data first, then binary messages, across message
// boundaries.
func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		if len(c.early) == 0 {
			c.early = nil
		}
		return n, nil
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d := c.readDeadline.Load(); d != 0 && time.Now().UnixNano() >= d {
		return 0, c.opError("read", os.ErrDeadlineExceeded)
	}
	if c.interval > 0 {
		c.reading.Add(1)
		c.touch()
		defer c.reading.Add(-1)
	}
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				c.rerr = c.readError(err)
				return 0, c.rerr
			}
			if typ != websocket.BinaryMessage {
				c.rerr = ErrTextMessage
				c.sendClose(websocket.CloseUnsupportedData, "binary messages only")
				return 0, c.rerr
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			err = nil
		}
		if err != nil {
			c.r = nil
			c.rerr = c.readError(err)
			if n > 0 {
				return n, nil // the error comes with the next Read
			}
			return 0, c.rerr
		}
		if n > 0 {
			c.touch()
			return n, nil
		}
	}
}

// readError turns gorilla's read errors into the conn's.
func (c *conn) readError(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		c.peerClosed.Store(true)
		switch ce.Code {
		case websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived:
			return io.EOF
		case websocket.CloseAbnormalClosure:
			if c.silent.Load() {
				return ErrPeerSilent
			}
			if c.closed.Load() {
				return c.opError("read", net.ErrClosed)
			}
			return io.ErrUnexpectedEOF
		}
		return fmt.Errorf("ws: peer closed the tunnel: %w", err)
	}
	return c.ioError("read", err)
}

func (c *conn) ioError(op string, err error) error {
	switch {
	case c.silent.Load():
		return ErrPeerSilent
	case c.closed.Load():
		return c.opError(op, net.ErrClosed)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// gorilla hides the deadline error behind its own type.
		return c.opError(op, os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("ws: %s: %w", op, err)
}

func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "ws", Source: c.local, Addr: c.remote, Err: err}
}

// Write sends p as binary messages of up to maxMessage bytes (one, unless
// p is longer).
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.closed.Load():
		return 0, c.opError("write", net.ErrClosed)
	case c.closeSent.Load():
		if c.silent.Load() {
			return 0, ErrPeerSilent
		}
		return 0, c.opError("write", net.ErrClosed)
	case len(p) == 0:
		return 0, nil
	}
	n := 0
	for n < len(p) {
		m := min(len(p)-n, maxMessage)
		if err := c.ws.WriteMessage(websocket.BinaryMessage, p[n:n+m]); err != nil {
			return n, c.ioError("write", err)
		}
		n += m
	}
	c.touch()
	return n, nil
}

// sendClose writes our close frame once.
func (c *conn) sendClose(code int, text string) error {
	if !c.closeSent.CompareAndSwap(false, true) {
		return nil
	}
	err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(closeWait))
	if err != nil && err != websocket.ErrCloseSent {
		return c.ioError("close", err)
	}
	return nil
}

// CloseWrite completes the closing handshake once the peer has closed (Read
// returned io.EOF): it sends close code 1000 after any Write in progress.
// Before that it does nothing and returns an error wrapping
// errors.ErrUnsupported.
func (c *conn) CloseWrite() error {
	if !c.peerClosed.Load() {
		return errHalfClose
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendClose(websocket.CloseNormalClosure, "")
}

// Close sends close code 1000 (unless a close frame went out already, or a
// Write is stuck, which would make the frame wait) and closes the
// connection.
func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if t := c.timer.Load(); t != nil {
		t.Stop()
	}
	if c.wmu.TryLock() {
		c.sendClose(websocket.CloseNormalClosure, "")
		c.wmu.Unlock()
	}
	return c.ws.Close()
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.readDeadline.Store(d)
	return c.ws.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of later frames and, on the
// connection, that of a write already blocked.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.ws.SetWriteDeadline(t)
	return c.ws.NetConn().SetWriteDeadline(t)
}
