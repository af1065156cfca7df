package session

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols/anytls"
)

// chunk is a piece of a stream's receive buffer.
type chunk = [chunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// Ways a stream ends, for shutdown.
type shutdownKind int

const (
	shutdownClose      shutdownKind = iota // its user closed it
	shutdownCloseWrite                     // its user half-closed it
	shutdownPeerFIN                        // the peer sent cmdFIN
	shutdownDialFailed                     // cmdSYNACK with an error
	shutdownStalled                        // reset by flow control
	shutdownSession                        // the session ended
)

// Stream is one AnyTLS stream: a net.Conn with CloseWrite. Server streams
// also implement tunnel.DialReporter (ReportDial sends cmdSYNACK). Read and
// Write may be called concurrently with each other; Close and deadlines
// from any goroutine.
type Stream struct {
	s  *Session
	id uint32

	mu          sync.Mutex
	chunks      []*chunk // received bytes: chunks[0][r:], full middle chunks, the last up to w
	r, w        int
	buffered    int
	writing     bool // the session reader is filling the last chunk without mu
	dropped     bool // the buffer was dropped while writing; the reader's commit frees it
	inputDone   bool // no more data is taken
	rerr, werr  error
	finSent     bool
	finDeferred bool // server: Close came before the dial was reported; Finish sends cmdFIN
	peerFIN     bool
	userClosed  bool
	offWire     bool
	released    bool

	readable chan struct{} // a token when data or rerr arrives
	space    chan struct{} // a token when Read makes room
	gone     chan struct{} // closed when writes end
	goneOnce sync.Once

	rdl, wdl  deadline
	reported  atomic.Bool // server: cmdSYNACK decided
	finishing atomic.Bool // server: Finish is running
}

func newStream(s *Session, id uint32) *Stream {
	return &Stream{
		s:        s,
		id:       id,
		readable: make(chan struct{}, 1),
		space:    make(chan struct{}, 1),
		gone:     make(chan struct{}),
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ID is the stream id.
func (st *Stream) ID() uint32 { return st.id }

// Session is the session the stream belongs to.
func (st *Stream) Session() *Session { return st.s }

// Read reads what the peer sent. After the peer's cmdFIN (or CloseWrite)
// it returns the rest, then io.EOF; after Close, a reset or a failed dial,
// an error at once.
func (st *Stream) Read(p []byte) (int, error) {
	for {
		if isClosed(st.rdl.wait()) {
			return 0, os.ErrDeadlineExceeded
		}
		st.mu.Lock()
		if st.buffered > 0 {
			n := st.copyOutLocked(p)
			st.mu.Unlock()
			notify(st.space)
			return n, nil
		}
		if err := st.rerr; err != nil {
			st.mu.Unlock()
			return 0, err
		}
		st.mu.Unlock()
		if len(p) == 0 {
			return 0, nil
		}
		select {
		case <-st.readable:
		case <-st.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (st *Stream) copyOutLocked(p []byte) int {
	n := 0
	for n < len(p) && st.buffered > 0 {
		head := st.chunks[0]
		end := chunkSize
		if len(st.chunks) == 1 {
			end = st.w
		}
		c := copy(p[n:], head[st.r:end])
		n += c
		st.r += c
		st.buffered -= c
		if st.r < end {
			break
		}
		if len(st.chunks) > 1 {
			chunkPool.Put(head)
			// Shifted down, not resliced: the slice keeps its capacity, so
			// the reader's appends do not allocate.
			copy(st.chunks, st.chunks[1:])
			st.chunks[len(st.chunks)-1] = nil
			st.chunks = st.chunks[:len(st.chunks)-1]
			st.r = 0
		}
	}
	if st.buffered == 0 && !st.writing {
		st.freeLocked() // an idle stream holds no memory
	}
	return n
}

func (st *Stream) freeLocked() {
	for i, c := range st.chunks {
		chunkPool.Put(c)
		st.chunks[i] = nil
	}
	st.chunks = st.chunks[:0]
	st.r, st.w, st.buffered = 0, 0, 0
}

// dropLocked discards the received bytes.
func (st *Stream) dropLocked() {
	if st.writing {
		st.dropped = true
		st.buffered = 0
		return
	}
	st.freeLocked()
}

// fill moves n bytes of a cmdPSH from the session reader into the buffer,
// waiting for room (see the package doc); it runs on the reader goroutine.
func (st *Stream) fill(n int) error {
	s := st.s
	var stall *time.Timer
	defer func() {
		if stall != nil {
			stall.Stop()
		}
	}()
	for n > 0 {
		st.mu.Lock()
		if st.inputDone {
			st.mu.Unlock()
			return s.discard(n)
		}
		room := s.lim.RecvBuffer - st.buffered
		if room <= 0 {
			st.mu.Unlock()
			var stallC <-chan time.Time
			if s.lim.StallTimeout > 0 {
				if stall == nil {
					stall = time.NewTimer(s.lim.StallTimeout)
				}
				stallC = stall.C
			}
			select {
			case <-st.space:
				if stall != nil {
					stall.Reset(s.lim.StallTimeout)
				}
			case <-stallC:
				if s.othersOpen(st) {
					s.log.Warn("anytls: stream reset: its reader stalled with a full buffer", "stream", st.id, "buffer", s.lim.RecvBuffer)
					st.shutdown(shutdownStalled, ErrStalled)
				} else {
					stall.Reset(s.lim.StallTimeout) // alone: back-pressure only
				}
			case <-s.done:
				return s.closedErr()
			}
			continue
		}
		if len(st.chunks) == 1 && st.r == st.w {
			st.r, st.w = 0, 0 // drained while we were writing: start over
		}
		if len(st.chunks) == 0 || st.w == chunkSize {
			st.chunks = append(st.chunks, chunkPool.Get().(*chunk))
			st.w = 0
		}
		tail := st.chunks[len(st.chunks)-1]
		seg := tail[st.w : st.w+min(n, room, chunkSize-st.w)]
		st.writing = true
		st.mu.Unlock()

		k, err := s.in.readFull(seg)

		st.mu.Lock()
		st.writing = false
		if st.dropped {
			st.dropped = false
			st.freeLocked()
		} else {
			st.w += k
			st.buffered += k
		}
		st.mu.Unlock()
		notify(st.readable)
		if err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// Write sends p in cmdPSH frames of at most 65535 bytes, each in one write
// to the connection (one TLS record or more). A server stream whose dial
// was not reported reports success first. A write deadline bounds waiting
// for the connection, not a write already under way.
func (st *Stream) Write(p []byte) (int, error) {
	if !st.s.client && !st.reported.Load() {
		st.ReportDial(nil)
	}
	if err := st.writeErr(); err != nil {
		return 0, err
	}
	if isClosed(st.wdl.wait()) {
		return 0, os.ErrDeadlineExceeded
	}
	n := 0
	for len(p) > 0 {
		c := p[:min(len(p), anytls.MaxDataLen)]
		if err := st.s.writeData(st, c); err != nil {
			return n, err
		}
		n += len(c)
		p = p[len(c):]
	}
	return n, nil
}

func (st *Stream) writeErr() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.werr
}

// Close ends the stream both ways and sends cmdFIN. On a server stream
// whose dial is not yet reported, cmdFIN waits for Finish, so the client
// hears why first.
func (st *Stream) Close() error {
	st.shutdown(shutdownClose, errStreamClosed)
	return nil
}

// CloseWrite sends cmdFIN. AnyTLS has no half-close: the peer ends the
// stream both ways when it reads cmdFIN, so no more data is taken for it
// either; Read returns what has arrived, then io.EOF.
func (st *Stream) CloseWrite() error {
	if !st.s.client && !st.reported.Load() {
		st.ReportDial(nil)
	}
	st.shutdown(shutdownCloseWrite, nil)
	return nil
}

// ReportDial implements tunnel.DialReporter on server streams: a nil err
// sends an empty cmdSYNACK (success), another its text (cut to 1 KiB).
// Only the first report counts, and only v2 clients get one. On client
// streams it does nothing.
func (st *Stream) ReportDial(err error) {
	if st.s.client || !st.reported.CompareAndSwap(false, true) {
		return
	}
	if st.s.peerVersion.Load() < 2 {
		return
	}
	var text []byte
	if err != nil {
		text = []byte(err.Error())
		if len(text) == 0 {
			text = []byte("dial failed")
		}
		if len(text) > maxSynAckText {
			text = text[:maxSynAckText]
		}
	}
	st.s.queueFrame(anytls.CmdSYNACK, st.id, text)
}

// Finish ends a server stream once its handler has returned with err: it
// reports err as the dial's outcome if nothing was reported yet (nil:
// success), then closes the stream.
func (st *Stream) Finish(err error) {
	st.finishing.Store(true)
	st.ReportDial(err)
	st.mu.Lock()
	fin := st.finDeferred && !st.finSent && !st.peerFIN && !st.s.IsClosed()
	st.finDeferred = false
	if fin {
		st.finSent = true
	}
	st.mu.Unlock()
	if fin {
		st.s.queueFrame(anytls.CmdFIN, st.id, nil)
	}
	st.Close()
}

func (st *Stream) shutdown(kind shutdownKind, err error) {
	s := st.s
	st.mu.Lock()
	if kind == shutdownClose && st.userClosed {
		st.mu.Unlock()
		return
	}
	switch kind {
	case shutdownClose:
		st.userClosed = true
		st.rerr, st.werr = errStreamClosed, errStreamClosed
	case shutdownCloseWrite:
		st.rerr = orErr(st.rerr, io.EOF)
		st.werr = orErr(st.werr, ErrWriteClosed)
	case shutdownPeerFIN:
		st.peerFIN = true
		st.rerr = orErr(st.rerr, io.EOF)
		st.werr = orErr(st.werr, ErrPeerClosed)
	default:
		st.rerr = orErr(st.rerr, err)
		st.werr = orErr(st.werr, err)
	}
	st.inputDone = true
	switch kind {
	case shutdownClose, shutdownDialFailed, shutdownStalled:
		st.dropLocked()
	}
	fin := false
	switch kind {
	case shutdownClose, shutdownCloseWrite, shutdownDialFailed, shutdownStalled:
		if !st.finSent && !st.peerFIN && !s.IsClosed() {
			if !s.client && !st.reported.Load() && !st.finishing.Load() {
				st.finDeferred = true
			} else {
				st.finSent = true
				fin = true
			}
		}
	}
	st.mu.Unlock()

	st.goneOnce.Do(func() { close(st.gone) })
	notify(st.readable)
	notify(st.space)
	s.remove(st)
	st.mu.Lock()
	st.offWire = true
	release := st.userClosed && !st.released
	if release {
		st.released = true
	}
	st.mu.Unlock()
	idle := false
	if release {
		st.rdl.stop()
		st.wdl.stop()
		idle = s.release()
	}
	// The stream's slot is free before its cmdFIN leaves: a peer that
	// opens a stream as soon as it reads the cmdFIN finds room under
	// MaxStreams.
	if fin {
		s.queueFrame(anytls.CmdFIN, st.id, nil)
	}
	if idle && s.onIdle != nil {
		s.onIdle(s)
	}
}

func orErr(have, want error) error {
	if have != nil {
		return have
	}
	return want
}

// LocalAddr is the session connection's.
func (st *Stream) LocalAddr() net.Addr { return st.s.conn.LocalAddr() }

// RemoteAddr is the session connection's.
func (st *Stream) RemoteAddr() net.Addr { return st.s.conn.RemoteAddr() }

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.rdl.set(t)
	st.wdl.set(t)
	return nil
}

// SetReadDeadline bounds Read.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.rdl.set(t)
	return nil
}

// SetWriteDeadline bounds Write's wait for the connection.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.wdl.set(t)
	return nil
}

// held reports the bytes buffered and the memory the buffer holds.
func (st *Stream) held() (buffered, memory int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.buffered, len(st.chunks) * chunkSize
}
