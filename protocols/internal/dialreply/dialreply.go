// Package dialreply is the stream a local proxy (SOCKS5, HTTP CONNECT)
// hands to the gateway: the client must hear whether the outbound dial
// worked before any payload, so the proxy's reply is written lazily, when
// the handler reports the dial or first touches the stream.
package dialreply

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/readwait"
)

// Stream states.
const (
	streamPending = iota // no reply written yet
	streamOpen           // success reply written; I/O passes through
	streamFailed         // failure reply written (or writing it failed); I/O refused
)

// failReplyTimeout bounds the write of a failure reply to a client that does
// not read.
const failReplyTimeout = 5 * time.Second

// errStreamAbandoned is returned by I/O on a stream the handler closed before
// the dial outcome was known.
var errStreamAbandoned = fmt.Errorf("stream abandoned before the dial was reported: %w", net.ErrClosed)

// stream is the conn a CONNECT hands to the [tunnel.Handler]. The client
// must hear the dial's outcome before any payload, so the reply is written
// lazily:
//
//   - ReportDial(nil) writes the success reply; ReportDial(err) writes the
//     failure reply the proxy chose for err and from then on Read and Write
//     fail. Only the first report counts.
//   - A handler that never reports but reads, writes or half-closes gets the
//     success reply written before that first operation.
//   - A handler that closes the stream, or returns, before either is
//     reported on by the proxy calling Finish: it writes the reply for the error
//     HandleStream returned (success for nil) and then closes the client
//     connection.
//
// Bytes the client sent after the request, already read during the
// handshake, are returned by Read before anything else.
//
// All methods are safe for concurrent use.
type Conn struct {
	net.Conn
	name  string                     // the proxy, for error messages: "socks", "httpproxy"
	reply func(dialErr error) []byte // the reply bytes for a dial outcome

	state atomic.Uint32 // streamPending, streamOpen, streamFailed

	mu        sync.Mutex // serialises replies and state changes
	abandoned bool       // Close called while pending; finish does the closing
	err       error      // why I/O is refused, once failed

	readMu sync.Mutex
	replay []byte // read past the request during the handshake

	closeOnce sync.Once
	closeErr  error
}

// New wraps c. replay holds bytes the client sent past its request, already
// read by the proxy; reply returns the bytes to send for a dial outcome (nil
// error: success).
func New(name string, c net.Conn, replay []byte, reply func(dialErr error) []byte) *Conn {
	return &Conn{name: name, Conn: c, replay: replay, reply: reply}
}

// ReportDial implements [tunnel.DialReporter].
func (s *Conn) ReportDial(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Load() == streamPending && !s.abandoned {
		s.sendLocked(err)
	}
}

// sendLocked writes the reply for dialErr. s.mu is held.
func (s *Conn) sendLocked(dialErr error) {
	if dialErr != nil {
		_ = s.Conn.SetWriteDeadline(time.Now().Add(failReplyTimeout))
	}
	_, werr := s.Conn.Write(s.reply(dialErr))
	switch {
	case werr != nil:
		s.err = fmt.Errorf("%s: write reply: %w", s.name, werr)
		s.state.Store(streamFailed)
	case dialErr != nil:
		s.err = fmt.Errorf("%s: stream refused after failed dial: %w", s.name, dialErr)
		s.state.Store(streamFailed)
	default:
		s.state.Store(streamOpen)
	}
}

// open makes sure the success reply went out before payload I/O.
func (s *Conn) open() error {
	if s.state.Load() == streamOpen {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.abandoned {
		return errStreamAbandoned
	}
	if s.state.Load() == streamPending {
		s.sendLocked(nil)
	}
	if s.state.Load() == streamFailed {
		return s.err
	}
	return nil
}

func (s *Conn) Read(p []byte) (int, error) {
	if err := s.open(); err != nil {
		return 0, err
	}
	s.readMu.Lock()
	if len(s.replay) > 0 {
		n := copy(p, s.replay)
		s.replay = s.replay[n:]
		s.readMu.Unlock()
		return n, nil
	}
	s.readMu.Unlock()
	return s.Conn.Read(p)
}

// ReadWaiter implements [readwait.Waiter]: bytes replayed from the
// handshake are ready at once; otherwise the client connection is waited on.
func (s *Conn) ReadWaiter() func() error {
	inner := readwait.For(s.Conn)
	if inner == nil {
		return nil
	}
	return func() error {
		if err := s.open(); err != nil {
			return err
		}
		s.readMu.Lock()
		pending := len(s.replay) > 0
		s.readMu.Unlock()
		if pending {
			return nil
		}
		return inner()
	}
}

func (s *Conn) Write(p []byte) (int, error) {
	if err := s.open(); err != nil {
		return 0, err
	}
	return s.Conn.Write(p)
}

// CloseWrite half-closes the client connection when it supports it (TCP,
// Unix); otherwise it returns an error wrapping [errors.ErrUnsupported].
func (s *Conn) CloseWrite() error {
	if err := s.open(); err != nil {
		return err
	}
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%s: close write on %T: %w", s.name, s.Conn, errors.ErrUnsupported)
}

// Close closes the client connection, or, while no reply has been written,
// leaves that to finish so the client hears why.
func (s *Conn) Close() error {
	s.mu.Lock()
	if s.state.Load() == streamPending {
		s.abandoned = true
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return s.closeConn()
}

func (s *Conn) closeConn() error {
	s.closeOnce.Do(func() { s.closeErr = s.Conn.Close() })
	return s.closeErr
}

// Finish is called once HandleStream has returned with handlerErr: it writes
// the reply if none was written yet, and closes the client connection.
func (s *Conn) Finish(handlerErr error) {
	s.mu.Lock()
	if s.state.Load() == streamPending {
		s.sendLocked(handlerErr)
	}
	s.mu.Unlock()
	_ = s.closeConn()
}
