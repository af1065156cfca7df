package ws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/portico-gw/portico/internal/bufpool"
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

// CloseError is the peer's close frame with a code other than 1000, 1001
// or none (which end the stream with io.EOF).
type CloseError struct {
	Code int
	Text string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("ws: peer closed the tunnel: code %d %q", e.Code, e.Text)
}

// closeWait bounds the writing of a close frame or pong.
const closeWait = time.Second

// maxMessage is the most one data frame carries: a Write longer than this
// is sent as several frames. It is the relay's chunk, so that one chunk is
// one frame, one TLS write, and it fits a pooled buffer with its header.
const maxMessage = bufpool.LargeChunk

var _ [bufpool.LargeSize - maxMessage - maxFrameHeader]struct{} // a frame fits a pooled buffer

// lookahead bounds what a Read takes from the connection to parse a frame
// header: a header is at most 14 bytes, and the rest (the start of its
// payload, or of the next frame) is used before the connection is read
// again.
const lookahead = 64

// conn is a tunnel over a WebSocket, framed by this package (frame.go)
// over the upgraded connection. Read and Write may be called concurrently
// with each other and with everything else; concurrent Reads (or Writes)
// are serialized.
//
// It holds no buffer while it waits: a frame's payload is read straight
// into the caller's buffer (unmasked in place), and a frame written is
// built in a pooled buffer for the length of the Write.
type conn struct {
	nc            net.Conn  // the upgraded connection: TLS or TCP
	rd            io.Reader // nc, after bytes the client's handshake read past the 101
	client        bool      // our frames are masked, the peer's must not be
	local, remote net.Addr
	subprotocol   string // the client's: what the 101 echoed in Sec-WebSocket-Protocol

	rmu       sync.Mutex
	early     []byte // early data not yet read
	la        [lookahead]byte
	laR, laW  int   // la[laR:laW] is read from the connection, not parsed
	left      int64 // payload bytes of the current data frame not yet read
	mask      [4]byte
	masked    bool
	maskPos   int
	inMessage bool  // inside a fragmented binary message: continuations come next
	rerr      error // sticky

	wmu  sync.Mutex    // serializes Write, CloseWrite and the close frame of Close
	fsem chan struct{} // held while a frame goes out: data and control frames do not interleave
	werr error         // sticky, under fsem: a frame cut by a failed write breaks the stream

	readDeadline  atomic.Int64 // unix nanos, 0 = none; lets a Read past its deadline return harmlessly
	writeDeadline atomic.Int64 // unix nanos, 0 = none; restored after a control frame's own
	peerClosed    atomic.Bool  // the peer's close frame (or EOF) ended its stream
	closeSent     atomic.Bool  // our close frame is out
	closed        atomic.Bool  // Close was called

	// keepalive, when interval > 0
	interval  time.Duration
	timer     atomic.Pointer[time.Timer]
	lastHeard atomic.Int64 // unix nanos of the last sign of life
	reading   atomic.Int32 // Reads in progress
	silent    atomic.Bool  // the keepalive gave up on the peer
}

// newConn frames over nc; rd is where reads come from (nc, or nc after
// bytes already read from it), client says which end this is.
func newConn(nc net.Conn, rd io.Reader, client bool, local, remote net.Addr) *conn {
	if rd == nil {
		rd = nc
	}
	return &conn{nc: nc, rd: rd, client: client, local: local, remote: remote, fsem: make(chan struct{}, 1)}
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
			c.writeControl(opClose, closePayload(closeGoingAway, "keepalive timeout"), time.Now().Add(closeWait))
		}
		c.nc.Close() // Read and Write fail; Close still runs as usual
		return
	}
	c.writeControl(opPing, nil, time.Now().Add(c.interval))
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
		if c.left > 0 {
			// Within a frame the rest is on its way (the peer wrote the
			// frame whole), so reading on until p or the frame is full
			// cannot wait for long: a relay gets a frame in one read, not
			// a TLS record at a time.
			want := min(int64(len(p)), c.left)
			n, err := c.readPayload(p[:want])
			for err == nil && n > 0 && int64(n) < want {
				var m int
				m, err = c.readPayload(p[n:want])
				if m == 0 && err == nil {
					break
				}
				n += m
			}
			if n > 0 {
				c.touch()
				return n, nil // an error comes back with the next Read
			}
			if err != nil {
				return 0, c.fail(err)
			}
			continue
		}
		h, err := c.nextHeader()
		if err != nil {
			return 0, c.fail(err)
		}
		c.touch()
		if err := c.frame(h); err != nil {
			return 0, c.fail(err)
		}
	}
}

// fail makes err the sticky read error, answering a broken framing with
// close code 1002 and a text message with 1003. A timeout is sticky too:
// the framing may be cut where it struck.
func (c *conn) fail(err error) error {
	switch {
	case errors.Is(err, errProtocol):
		c.sendClose(closeProtocolError, "")
	case errors.Is(err, ErrTextMessage):
		c.sendClose(closeUnsupportedData, "binary messages only")
	case err == io.EOF, err == io.ErrUnexpectedEOF, errors.Is(err, ErrPeerSilent), isCloseError(err):
	default:
		err = c.ioError("read", err)
	}
	if c.rerr == nil {
		c.rerr = err
	}
	return c.rerr
}

func isCloseError(err error) bool {
	var ce *CloseError
	return errors.As(err, &ce)
}

// frame takes in the header of the next frame: a data frame becomes the
// payload Read returns next; a control frame is read and answered here.
func (c *conn) frame(h frameHeader) error {
	if h.masked == c.client {
		if c.client {
			return fmt.Errorf("%w: the server sent a masked frame", errProtocol)
		}
		return fmt.Errorf("%w: the client sent an unmasked frame", errProtocol)
	}
	switch h.op {
	case opBinary, opContinuation:
		if h.op == opContinuation && !c.inMessage {
			return fmt.Errorf("%w: a continuation frame outside a message", errProtocol)
		}
		if h.op == opBinary && c.inMessage {
			return fmt.Errorf("%w: a new message before the last one ended", errProtocol)
		}
		c.inMessage = !h.fin
		c.left, c.mask, c.masked, c.maskPos = h.length, h.key, h.masked, 0
		return nil
	case opText:
		if c.inMessage {
			return fmt.Errorf("%w: a text message inside a binary one", errProtocol)
		}
		return ErrTextMessage
	}
	var buf [maxControlBytes]byte
	payload := buf[:h.length]
	if err := c.readFull(payload); err != nil {
		return err
	}
	if h.masked {
		maskBytes(h.key, 0, payload)
	}
	switch h.op {
	case opPing:
		// As gorilla's default: a pong that cannot go out soon is not worth
		// failing the read for.
		c.writeControl(opPong, payload, time.Now().Add(closeWait))
		return nil
	case opPong:
		return nil
	}
	// The peer's close frame is not echoed here: the echo waits for
	// CloseWrite or Close so that data still owed to the peer can go first.
	c.peerClosed.Store(true)
	switch {
	case len(payload) == 0:
		return io.EOF // 1005: no code
	case len(payload) == 1:
		return fmt.Errorf("%w: a close frame of 1 byte", errProtocol)
	}
	code, text := int(binary.BigEndian.Uint16(payload)), string(payload[2:])
	if !utf8.ValidString(text) {
		return fmt.Errorf("%w: a close reason that is not UTF-8", errProtocol)
	}
	if code == closeNormal || code == closeGoingAway {
		return io.EOF
	}
	return &CloseError{Code: code, Text: text}
}

// nextHeader parses the next frame header, reading as little as it needs.
func (c *conn) nextHeader() (frameHeader, error) {
	for {
		h, n, err := parseFrameHeader(c.la[c.laR:c.laW])
		if err == nil {
			c.laR += n
			return h, nil
		}
		if err != errNeedMore {
			return frameHeader{}, err
		}
		if c.laR > 0 {
			c.laW = copy(c.la[:], c.la[c.laR:c.laW])
			c.laR = 0
		}
		m, err := c.rd.Read(c.la[c.laW:])
		c.laW += m
		if m == 0 && err != nil {
			if err == io.EOF {
				return frameHeader{}, c.eofError()
			}
			return frameHeader{}, err
		}
	}
}

// eofError is what the connection ending without a close frame means.
func (c *conn) eofError() error {
	c.peerClosed.Store(true)
	switch {
	case c.silent.Load():
		return ErrPeerSilent
	case c.closed.Load():
		return c.opError("read", net.ErrClosed)
	}
	return io.ErrUnexpectedEOF
}

// readPayload reads payload bytes of the current data frame into p (at
// most what is left of it): bytes read ahead first, then the connection.
func (c *conn) readPayload(p []byte) (int, error) {
	var n int
	var err error
	if c.laR < c.laW {
		n = copy(p, c.la[c.laR:c.laW])
		c.laR += n
	} else {
		n, err = c.rd.Read(p)
		if err == io.EOF {
			err = c.eofError()
		}
	}
	if c.masked {
		c.maskPos = maskBytes(c.mask, c.maskPos, p[:n])
	}
	c.left -= int64(n)
	return n, err
}

// readFull reads len(p) bytes, read-ahead first.
func (c *conn) readFull(p []byte) error {
	n := copy(p, c.la[c.laR:c.laW])
	c.laR += n
	if n < len(p) {
		if _, err := io.ReadFull(c.rd, p[n:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return c.eofError()
			}
			return err
		}
	}
	return nil
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
		return c.opError(op, os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("ws: %s: %w", op, err)
}

func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "ws", Source: c.local, Addr: c.remote, Err: err}
}

// Write sends p as binary messages of up to maxMessage bytes (one, unless
// p is longer), each with one write of the connection.
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
	bp := bufpool.Large()
	defer bufpool.Put(bp)
	n := 0
	for n < len(p) {
		m := min(len(p)-n, maxMessage)
		f := c.appendFrame((*bp)[:0], opBinary, p[n:n+m])
		c.fsem <- struct{}{}
		err := c.writeFrame(f)
		<-c.fsem
		if err != nil {
			return n, c.ioError("write", err)
		}
		n += m
	}
	c.touch()
	return n, nil
}

// appendFrame appends a whole final frame: header and payload, masked when
// this is the client.
func (c *conn) appendFrame(dst []byte, op byte, payload []byte) []byte {
	if !c.client {
		return append(appendFrameHeader(dst, op, len(payload), nil), payload...)
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], mathrand.Uint32()) // ChaCha8 from OS entropy
	dst = appendFrameHeader(dst, op, len(payload), &key)
	start := len(dst)
	dst = slices.Grow(dst, len(payload))[:start+len(payload)]
	maskCopy(dst[start:], payload, key, 0)
	return dst
}

// writeFrame writes a frame; fsem is held. A write that fails leaves a
// frame cut, so every later one fails too.
func (c *conn) writeFrame(f []byte) error {
	if c.werr != nil {
		return c.werr
	}
	if _, err := c.nc.Write(f); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// writeControl sends a control frame by deadline: it waits that long for
// a data frame in progress to end, and its write is bounded by it too. It
// gives up (reporting why) when the deadline passes first.
func (c *conn) writeControl(op byte, payload []byte, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case c.fsem <- struct{}{}:
	case <-t.C:
		return c.opError("write", os.ErrDeadlineExceeded)
	}
	defer func() { <-c.fsem }()
	var buf [maxFrameHeader + maxControlBytes]byte
	f := c.appendFrame(buf[:0], op, payload)
	c.nc.SetWriteDeadline(deadline)
	err := c.writeFrame(f)
	var user time.Time
	if d := c.writeDeadline.Load(); d != 0 {
		user = time.Unix(0, d)
	}
	c.nc.SetWriteDeadline(user)
	return err
}

// closePayload is a close frame's payload.
func closePayload(code int, text string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(code))
	return append(b, text...)
}

// sendClose writes our close frame once.
func (c *conn) sendClose(code int, text string) error {
	if !c.closeSent.CompareAndSwap(false, true) {
		return nil
	}
	if err := c.writeControl(opClose, closePayload(code, text), time.Now().Add(closeWait)); err != nil {
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
	return c.sendClose(closeNormal, "")
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
		c.sendClose(closeNormal, "")
		c.wmu.Unlock()
	}
	return c.nc.Close()
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
	return c.nc.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of later frames and of a write
// already blocked.
func (c *conn) SetWriteDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.writeDeadline.Store(d)
	return c.nc.SetWriteDeadline(t)
}
