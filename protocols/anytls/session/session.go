// Package session is the AnyTLS session layer that both sides run over one
// authenticated TLS connection: it multiplexes streams in cmdSYN / cmdPSH /
// cmdFIN frames, answers heartbeats, drops waste, and carries the
// negotiation (cmdSettings, cmdServerSettings, cmdUpdatePaddingScheme,
// cmdAlert, cmdSYNACK). The frames themselves are package anytls; the
// authentication before the session and the pool of sessions are the
// anytlsserver and anytlsclient packages.
//
// # Roles
//
// [NewServer] makes the server side: streams are opened by the client's
// cmdSYN and handed to [ServerConfig].Accept, one goroutine each. A
// cmdSYN before any cmdSettings gets a cmdAlert and ends the session. A
// client reporting v >= 2 gets cmdServerSettings, a client whose
// padding-md5 differs from the server's scheme gets
// cmdUpdatePaddingScheme, and each stream answers with cmdSYNACK when the
// handler reports its dial ([Stream.ReportDial]).
//
// [NewClient] makes the client side: [Session.OpenStream] sends cmdSYN and
// the target address; the client's cmdSettings is held back so that it
// leaves in the same write as the first stream's cmdSYN and cmdPSH
// (anytls-go's "buffering"), and the first Stop writes of the session are
// shaped by the padding scheme (see [anytls.Scheme.Plan]). The packet
// counter counts the session's writes to the connection from 1: write #0
// is the authentication, made before the session exists. The scheme is
// read at each shaped write, so one the server pushes (stored into
// [ClientConfig].Padding) shapes the rest of this session too, as in
// anytls-go, and every later session from its first write. A stream (id
// >= 2, on a v2 server) that gets no cmdSYNACK within 3 s ends the whole
// session: the connection is taken to be stuck.
//
// # Flow control
//
// AnyTLS has no window updates, so a receiver can only buffer, wait, or
// give up. Each stream buffers at most [Limits].RecvBuffer bytes (in 16 KiB
// chunks from a pool, freed as they are read: a stalled stream holds at
// most RecvBuffer plus two chunks). When a cmdPSH would overflow it, the
// session reader waits for the stream's reader to make room — back-pressure
// through TLS and TCP, as anytls-go's synchronous pipe does. Unlike
// anytls-go it does not wait forever: if the stream's reader takes nothing
// for [Limits].StallTimeout while other streams share the session, the
// stream is reset (its reads and writes fail with [ErrStalled], a cmdFIN
// tells the peer, its further data is dropped) and the others go on. A
// stream alone on its session is never reset for being slow. The reader
// never blocks on writing: control frames it sends (heartbeat answers,
// settings replies, cmdFIN) are queued and written by whichever goroutine
// holds the connection next.
//
// # cmdFIN
//
// In anytls-go a received cmdFIN closes the stream both ways
// (Stream.closeLocally): there is no half-close on the wire. This package
// does the same: after the peer's cmdFIN, Read returns what had arrived,
// then io.EOF, and Write fails. [Stream.CloseWrite] sends cmdFIN; since
// the peer then stops both ways, it also stops taking data for the stream:
// Read returns what had arrived, then io.EOF.
package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
)

// Defaults for the zero values of the configuration fields.
const (
	DefaultRecvBuffer    = 256 << 10       // per stream
	DefaultStallTimeout  = 5 * time.Second // see Limits.StallTimeout
	DefaultMaxStreams    = 128             // per server session
	DefaultSynAckTimeout = 3 * time.Second // anytls-go's client: a stream id >= 2 waits this long for cmdSYNACK
	DefaultClientName    = "portico/anytls"

	chunkSize       = 16 << 10  // receive buffers come in these
	maxControlQueue = 256 << 10 // control frames waiting for the connection; past it the peer is not reading
	maxSynAckText   = 1024      // an error sent in cmdSYNACK is cut to this
	alertWriteLimit = 5 * time.Second
)

// Errors; use errors.Is.
var (
	// ErrNoSettings: the client sent cmdSYN before cmdSettings (server).
	ErrNoSettings = errors.New("anytls: client opened a stream before sending its settings")
	// ErrStalled: a stream's reader took nothing for StallTimeout while its
	// buffer was full and other streams shared the session.
	ErrStalled = errors.New("anytls: stream reset: its reader stalled with a full buffer")
	// ErrSynAckTimeout: a v2 server did not answer cmdSYN with cmdSYNACK in
	// time; the client closes the session as stuck.
	ErrSynAckTimeout = errors.New("anytls: no cmdSYNACK from the server in time; session closed as stuck")
	// ErrPeerClosed: the peer sent cmdFIN; the stream is over both ways.
	ErrPeerClosed = fmt.Errorf("anytls: stream closed by the peer: %w", net.ErrClosed)
	// ErrWriteClosed: Write after CloseWrite.
	ErrWriteClosed = fmt.Errorf("anytls: write after CloseWrite: %w", net.ErrClosed)
	// ErrTooManyStreams: the server refused a stream past MaxStreams.
	ErrTooManyStreams = errors.New("anytls: too many streams on this session")
	// ErrControlBacklog: the peer does not read, and control frames piled up.
	ErrControlBacklog = errors.New("anytls: peer is not reading; control frames piled up")

	errStreamClosed = fmt.Errorf("anytls: use of closed stream: %w", net.ErrClosed)
	errLocalClose   = errors.New("anytls: session closed locally")
)

// AlertError is the text of a cmdAlert; the session that received or sent
// it is over.
type AlertError struct {
	Text string
	Sent bool // we sent it (server) rather than received it (client)
}

func (e *AlertError) Error() string {
	if e.Sent {
		return "anytls: sent alert to client: " + e.Text
	}
	return "anytls: alert from server: " + e.Text
}

// DialError is the error text of a cmdSYNACK: the server could not reach
// the stream's target. Stream I/O returns it after it arrives.
type DialError struct{ Text string }

func (e *DialError) Error() string { return "anytls: server could not open the stream: " + e.Text }

// ClosedError is what stream I/O returns once the session is gone. It
// wraps net.ErrClosed and, when there is one, the cause.
type ClosedError struct{ Cause error }

func (e *ClosedError) Error() string {
	if e.Cause == nil {
		return "anytls: session closed"
	}
	return "anytls: session closed: " + e.Cause.Error()
}

func (e *ClosedError) Unwrap() []error {
	if e.Cause == nil {
		return []error{net.ErrClosed}
	}
	return []error{net.ErrClosed, e.Cause}
}

// Limits bound what one session may hold. The zero value is the defaults.
type Limits struct {
	// RecvBuffer is how many received bytes a stream holds before the
	// session reader waits for its reader. 0 means DefaultRecvBuffer.
	RecvBuffer int
	// StallTimeout is how long the session reader waits on a full stream
	// whose reader takes nothing, while other streams share the session,
	// before resetting it. 0 means DefaultStallTimeout; negative, never.
	StallTimeout time.Duration
}

func (l Limits) resolve() Limits {
	if l.RecvBuffer <= 0 {
		l.RecvBuffer = DefaultRecvBuffer
	}
	if l.StallTimeout == 0 {
		l.StallTimeout = DefaultStallTimeout
	}
	return l
}

// ServerConfig configures a server session.
type ServerConfig struct {
	Limits
	// Scheme is the padding scheme clients must use; nil means the default.
	Scheme *anytls.Scheme
	// MaxStreams bounds the streams open at once; a cmdSYN past it is
	// answered with cmdSYNACK (v2) and cmdFIN, and the session goes on.
	// 0 means DefaultMaxStreams.
	MaxStreams int
	// OnRefused, when set, is called (on the session's reader goroutine;
	// it must not block) for each stream refused past MaxStreams, and the
	// session itself logs the refusal at debug level only: the caller
	// counts and rate-limits the warning. Nil: the session warns each time.
	OnRefused func(id uint32)
	// Accept is called, in a goroutine of its own, for each stream the
	// client opens. It owns the stream and must end with Finish (or Close).
	Accept func(*Stream)
	// OnClose is called once, when the session ends (before Run returns).
	OnClose func(*Session)
	Log     *slog.Logger // nil: discard
}

// ClientConfig configures a client session.
type ClientConfig struct {
	Limits
	// Padding holds the scheme to shape writes with. It is read on every
	// shaped write, and a scheme the server pushes is stored into it, so
	// that a Client's sessions share it. Nil means the default scheme,
	// unshared.
	Padding *atomic.Pointer[anytls.Scheme]
	// Rand draws record sizes. It must be safe for concurrent use when
	// shared between sessions. Nil means crypto/rand.
	Rand anytls.Rand
	// ClientName is the settings' client=; "" means DefaultClientName.
	ClientName string
	// SynAckTimeout is how long a stream id >= 2 waits for cmdSYNACK
	// before the session is closed as stuck (v2 servers only). 0 means
	// DefaultSynAckTimeout; negative disables it.
	SynAckTimeout time.Duration
	// OnIdle is called, without locks held, each time the session's last
	// open stream is done (released by Close and gone from the wire).
	OnIdle func(*Session)
	// OnClose is called once, when the session ends.
	OnClose func(*Session)
	Log     *slog.Logger
}

// Session is one AnyTLS session. Its methods are safe for concurrent use.
type Session struct {
	conn   net.Conn
	in     wireReader
	client bool
	lim    Limits
	log    *slog.Logger

	// server
	scheme       *anytls.Scheme
	maxStreams   int
	onRefused    func(id uint32)
	accept       func(*Stream)
	settingsSeen bool // reader goroutine only
	handlers     sync.WaitGroup

	// client
	padding       *atomic.Pointer[anytls.Scheme]
	rand          anytls.Rand
	synAckTimeout time.Duration
	onIdle        func(*Session)
	onClose       func(*Session)

	peerVersion atomic.Int32

	mu        sync.Mutex
	streams   map[uint32]*Stream // streams still on the wire
	live      int                // streams not yet released (on the wire, or not yet closed by their user)
	nextID    uint32             // client: the last stream id used
	synTimers map[uint32]*time.Timer
	pings     []chan struct{}

	// writer: wsem is the connection's write lock; wbuf, rec, plan, pkt
	// and shaping belong to its holder.
	wsem    chan struct{}
	wbuf    []byte
	rec     []byte
	plan    []anytls.Record
	pkt     uint32
	shaping bool

	ctlMu      sync.Mutex
	ctl        []byte // control frames waiting for the connection
	ctlPending atomic.Bool

	done      chan struct{}
	closeOnce sync.Once
	errMu     sync.Mutex
	err       error
}

// NewServer returns the server side of a session on conn, whose
// authentication has been read; prefix holds bytes read past it, which
// are the session's first. Call Run.
func NewServer(conn net.Conn, prefix []byte, cfg ServerConfig) *Session {
	s := newSession(conn, prefix, cfg.Limits, cfg.Log)
	s.scheme = cfg.Scheme
	if s.scheme == nil {
		s.scheme = anytls.DefaultScheme()
	}
	s.maxStreams = cfg.MaxStreams
	if s.maxStreams <= 0 {
		s.maxStreams = DefaultMaxStreams
	}
	s.accept = cfg.Accept
	s.onRefused = cfg.OnRefused
	s.onClose = cfg.OnClose
	return s
}

// NewClient returns the client side of a session on conn, after the
// client has written the authentication (write #0). Its cmdSettings waits
// for the first OpenStream. Call Run, typically in a goroutine.
func NewClient(conn net.Conn, cfg ClientConfig) *Session {
	s := newSession(conn, nil, cfg.Limits, cfg.Log)
	s.client = true
	s.padding = cfg.Padding
	if s.padding == nil {
		s.padding = new(atomic.Pointer[anytls.Scheme])
		s.padding.Store(anytls.DefaultScheme())
	}
	s.rand = cfg.Rand
	if s.rand == nil {
		s.rand = ReaderRand(rand.Reader)
	}
	s.synAckTimeout = cfg.SynAckTimeout
	if s.synAckTimeout == 0 {
		s.synAckTimeout = DefaultSynAckTimeout
	}
	s.onIdle, s.onClose = cfg.OnIdle, cfg.OnClose
	s.shaping = true
	name := cfg.ClientName
	if name == "" {
		name = DefaultClientName
	}
	// Held back: it leaves with the first stream's SYN and PSH, in one
	// write (packet 1).
	settings, err := anytls.AppendSettings(nil, anytls.ClientSettings(name, s.padding.Load().MD5()))
	if err != nil {
		settings, _ = anytls.AppendSettings(nil, anytls.ClientSettings(DefaultClientName, s.padding.Load().MD5()))
	}
	s.ctl, _ = anytls.AppendFrame(nil, anytls.Frame{Cmd: anytls.CmdSettings, Data: settings})
	s.ctlPending.Store(true)
	return s
}

func newSession(conn net.Conn, prefix []byte, lim Limits, log *slog.Logger) *Session {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var r io.Reader = conn
	if len(prefix) > 0 {
		r = io.MultiReader(bytes.NewReader(prefix), conn)
	}
	return &Session{
		conn:      conn,
		in:        wireReader{src: r},
		lim:       lim.resolve(),
		log:       log,
		streams:   map[uint32]*Stream{},
		synTimers: map[uint32]*time.Timer{},
		wsem:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// Run reads and dispatches frames until the session ends, then closes it
// (and the connection). On a server session it then waits for every
// Accept call to return. It returns nil when the peer closed the
// connection or Close was called, and otherwise why the session ended.
func (s *Session) Run() error {
	err := s.readLoop()
	s.closeWith(err)
	s.handlers.Wait()
	return s.Err()
}

// Close ends the session: the connection is closed and every stream's I/O
// fails with a [ClosedError].
func (s *Session) Close() error {
	s.closeWith(errLocalClose)
	return nil
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended: nil while it runs, after Close, or after
// the peer closed the connection cleanly.
func (s *Session) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == errLocalClose || errors.Is(s.err, io.EOF) {
		return nil
	}
	return s.err
}

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return isClosed(s.done) }

// PeerVersion is the peer's protocol version: from the client's
// cmdSettings (server side) or the server's cmdServerSettings (client
// side); 0 until known, and 0 or 1 means version 1 behaviour.
func (s *Session) PeerVersion() int { return int(s.peerVersion.Load()) }

// NumStreams is the number of streams not yet released.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

func (s *Session) closeWith(cause error) {
	s.closeOnce.Do(func() {
		s.errMu.Lock()
		s.err = cause
		s.errMu.Unlock()
		close(s.done)
		s.conn.Close()
		s.mu.Lock()
		streams := make([]*Stream, 0, len(s.streams))
		for _, st := range s.streams {
			streams = append(streams, st)
		}
		clear(s.streams)
		for id, t := range s.synTimers {
			t.Stop()
			delete(s.synTimers, id)
		}
		s.pings = nil
		s.mu.Unlock()
		var err error = &ClosedError{}
		if cause != errLocalClose && !errors.Is(cause, io.EOF) && !errors.Is(cause, net.ErrClosed) {
			err = &ClosedError{Cause: cause}
		}
		for _, st := range streams {
			st.shutdown(shutdownSession, err)
		}
		if s.onClose != nil {
			s.onClose(s)
		}
	})
}

// OpenStream opens a stream to target (client side): cmdSYN and a cmdPSH
// with the target in SOCKS address layout, in one write, preceded on the
// session's first stream by the held-back cmdSettings. ctx bounds waiting
// for the connection. OpenStream does not wait for cmdSYNACK: a dial
// failure the server reports makes the stream's I/O fail with a
// [DialError].
func (s *Session) OpenStream(ctx context.Context, target protocols.Addr) (*Stream, error) {
	if !s.client {
		return nil, errors.New("anytls: OpenStream on a server session")
	}
	if protocols.SOCKSAddr.Len(target) < 0 {
		return nil, fmt.Errorf("anytls: open stream: %w: cannot encode %v", protocols.ErrBadAddr, target)
	}
	if err := s.lockWrite(ctx.Done(), nil, nil); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	s.mu.Lock()
	if s.IsClosed() {
		s.mu.Unlock()
		s.unlockWrite()
		return nil, s.closedErr()
	}
	s.nextID++
	st := newStream(s, s.nextID)
	s.streams[st.id] = st
	s.live++
	// The watchdog is armed before cmdSYN goes out: armed after, a server
	// quick enough answers before it exists, and handleSYNACK, finding no
	// timer to stop, leaves it to close a healthy session 3 s later.
	if st.id >= 2 && s.peerVersion.Load() >= 2 && s.synAckTimeout > 0 {
		s.synTimers[st.id] = time.AfterFunc(s.synAckTimeout, func() { s.closeWith(ErrSynAckTimeout) })
	}
	s.mu.Unlock()

	b := s.takeControl(s.wbuf[:0])
	b = anytls.AppendHeader(b, anytls.Header{Cmd: anytls.CmdSYN, Stream: st.id})
	b = anytls.AppendHeader(b, anytls.Header{Cmd: anytls.CmdPSH, Stream: st.id, Length: uint16(protocols.SOCKSAddr.Len(target))})
	b, _ = protocols.SOCKSAddr.Append(b, target)
	s.wbuf = b
	err := s.sendLocked(b)
	s.unlockWrite()
	if err != nil {
		s.mu.Lock()
		if t := s.synTimers[st.id]; t != nil {
			t.Stop()
			delete(s.synTimers, st.id)
		}
		s.mu.Unlock()
		st.Close()
		return nil, err
	}
	return st, nil
}

// Ping sends cmdHeartRequest and waits for a cmdHeartResponse.
func (s *Session) Ping(ctx context.Context) error {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.IsClosed() {
		s.mu.Unlock()
		return s.closedErr()
	}
	s.pings = append(s.pings, ch)
	s.mu.Unlock()
	s.queueControl(anytls.AppendHeader(nil, anytls.Header{Cmd: anytls.CmdHeartRequest}))
	select {
	case <-ch:
		return nil
	case <-s.done:
		return s.closedErr()
	case <-ctx.Done():
		s.mu.Lock()
		for i, c := range s.pings {
			if c == ch {
				s.pings = append(s.pings[:i], s.pings[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Session) closedErr() error {
	s.errMu.Lock()
	cause := s.err
	s.errMu.Unlock()
	if cause == nil || cause == errLocalClose || errors.Is(cause, io.EOF) || errors.Is(cause, net.ErrClosed) {
		return &ClosedError{}
	}
	return &ClosedError{Cause: cause}
}

// ReaderRand adapts a source of random bytes (crypto/rand.Reader, or a
// seeded stream in tests) to anytls.Rand, without modulo bias. It is safe
// for concurrent use. Should r fail, IntN returns 0 (the range's minimum).
func ReaderRand(r io.Reader) anytls.Rand { return &readerRand{r: r} }

type readerRand struct {
	mu  sync.Mutex
	r   io.Reader
	buf [8]byte
}

func (x *readerRand) IntN(n int) int {
	if n <= 1 {
		return 0
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	limit := math.MaxUint64 - math.MaxUint64%uint64(n)
	for {
		if _, err := io.ReadFull(x.r, x.buf[:]); err != nil {
			return 0
		}
		if v := binary.LittleEndian.Uint64(x.buf[:]); v < limit {
			return int(v % uint64(n))
		}
	}
}

// ReadTarget reads the stream's target, the SOCKS address a client sends
// first on every stream (server side). It reads exactly the address's
// bytes; what follows is the stream's payload.
func (st *Stream) ReadTarget() (protocols.Addr, error) {
	var buf [1 + 1 + 255 + 2]byte
	// atyp and the byte after it tell the length: 4 or 16 address bytes,
	// or a length byte and the name; then the port.
	if _, err := io.ReadFull(st, buf[:2]); err != nil {
		return protocols.Addr{}, fmt.Errorf("anytls: reading the stream's target: %w", err)
	}
	n := 0
	switch buf[0] {
	case protocols.SOCKSAddr.IPv4:
		n = 1 + 4 + 2
	case protocols.SOCKSAddr.IPv6:
		n = 1 + 16 + 2
	case protocols.SOCKSAddr.Domain:
		n = 1 + 1 + int(buf[1]) + 2
	default:
		return protocols.Addr{}, fmt.Errorf("anytls: stream's target: %w: unknown address type %d", protocols.ErrBadAddr, buf[0])
	}
	if _, err := io.ReadFull(st, buf[2:n]); err != nil {
		return protocols.Addr{}, fmt.Errorf("anytls: reading the stream's target: %w", err)
	}
	a, _, err := protocols.SOCKSAddr.Parse(buf[:n])
	if err != nil {
		return protocols.Addr{}, fmt.Errorf("anytls: stream's target: %w", err)
	}
	return a, nil
}

// --- reading ---

func (s *Session) readLoop() error {
	var hdr [anytls.HeaderLen]byte
	for {
		if _, err := s.in.readFull(hdr[:]); err != nil {
			return err
		}
		h, _, _ := anytls.ParseHeader(hdr[:])
		n := int(h.Length)
		var err error
		switch h.Cmd {
		case anytls.CmdPSH:
			err = s.handlePSH(h.Stream, n)
		case anytls.CmdSYN:
			err = s.handleSYN(h.Stream, n)
		case anytls.CmdFIN:
			err = s.handleFIN(h.Stream, n)
		case anytls.CmdSettings:
			err = s.handleSettings(n)
		case anytls.CmdAlert:
			err = s.handleAlert(n)
		case anytls.CmdUpdatePaddingScheme:
			err = s.handleUpdatePaddingScheme(n)
		case anytls.CmdSYNACK:
			err = s.handleSYNACK(h.Stream, n)
		case anytls.CmdHeartRequest:
			if err = s.discard(n); err == nil {
				s.queueControl(anytls.AppendHeader(nil, anytls.Header{Cmd: anytls.CmdHeartResponse, Stream: h.Stream}))
			}
		case anytls.CmdHeartResponse:
			if err = s.discard(n); err == nil {
				s.mu.Lock()
				if len(s.pings) > 0 {
					close(s.pings[0])
					s.pings = s.pings[1:]
				}
				s.mu.Unlock()
			}
		case anytls.CmdServerSettings:
			err = s.handleServerSettings(n)
		default: // cmdWaste, and commands of later versions: read and dropped
			err = s.discard(n)
		}
		if err != nil {
			return err
		}
	}
}

func (s *Session) discard(n int) error {
	return s.in.discard(n)
}

func (s *Session) readData(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := s.in.readFull(b)
	return b, err
}

func (s *Session) stream(id uint32) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

func (s *Session) handlePSH(id uint32, n int) error {
	if n == 0 {
		return nil
	}
	st := s.stream(id)
	if st == nil {
		return s.discard(n)
	}
	return st.fill(n)
}

func (s *Session) handleSYN(id uint32, n int) error {
	if err := s.discard(n); err != nil {
		return err
	}
	if s.client {
		return nil
	}
	if !s.settingsSeen {
		s.alert("client did not send its settings")
		return ErrNoSettings
	}
	s.mu.Lock()
	if s.streams[id] != nil || s.IsClosed() {
		s.mu.Unlock()
		return nil
	}
	if s.live >= s.maxStreams {
		s.mu.Unlock()
		if s.onRefused != nil {
			s.log.Debug("anytls: stream refused: too many streams", "stream", id, "max", s.maxStreams)
			s.onRefused(id)
		} else {
			s.log.Warn("anytls: stream refused: too many streams", "stream", id, "max", s.maxStreams)
		}
		if s.peerVersion.Load() >= 2 {
			s.queueFrame(anytls.CmdSYNACK, id, []byte(ErrTooManyStreams.Error()))
		}
		s.queueFrame(anytls.CmdFIN, id, nil)
		return nil
	}
	st := newStream(s, id)
	s.streams[id] = st
	s.live++
	s.mu.Unlock()
	if s.accept == nil {
		st.Finish(errors.New("anytls: no handler"))
		return nil
	}
	s.handlers.Add(1)
	go func() {
		defer s.handlers.Done()
		s.accept(st)
	}()
	return nil
}

func (s *Session) handleFIN(id uint32, n int) error {
	if err := s.discard(n); err != nil {
		return err
	}
	if st := s.stream(id); st != nil {
		st.shutdown(shutdownPeerFIN, ErrPeerClosed)
	}
	return nil
}

func (s *Session) handleSettings(n int) error {
	if s.client {
		return s.discard(n)
	}
	data, err := s.readData(n)
	if err != nil {
		return err
	}
	set, _, _ := anytls.ParseSettings(data)
	s.settingsSeen = true
	md5, _ := set.Get(anytls.SettingPaddingMD5)
	name, _ := set.Get(anytls.SettingClient)
	v := set.Version()
	s.log.Debug("anytls: client settings", "client", name, "v", v, "padding-md5", md5)
	if md5 != s.scheme.MD5() {
		s.queueFrame(anytls.CmdUpdatePaddingScheme, 0, []byte(s.scheme.Raw()))
	}
	if v >= 2 {
		s.peerVersion.Store(int32(min(v, 127)))
		settings, _ := anytls.AppendSettings(nil, anytls.ServerSettings())
		s.queueFrame(anytls.CmdServerSettings, 0, settings)
	} else {
		s.peerVersion.Store(int32(max(v, 1)))
	}
	return nil
}

func (s *Session) handleServerSettings(n int) error {
	if !s.client {
		return s.discard(n)
	}
	data, err := s.readData(n)
	if err != nil {
		return err
	}
	set, _, _ := anytls.ParseSettings(data)
	if v := set.Version(); v > 0 {
		s.peerVersion.Store(int32(min(v, 127)))
	}
	return nil
}

func (s *Session) handleUpdatePaddingScheme(n int) error {
	if !s.client {
		return s.discard(n)
	}
	data, err := s.readData(n)
	if err != nil {
		return err
	}
	sch, err := anytls.ParseScheme(data)
	if err != nil {
		s.log.Warn("anytls: server pushed a padding scheme we cannot use; keeping ours", "err", err)
		return nil
	}
	s.padding.Store(sch)
	s.log.Debug("anytls: padding scheme updated by the server", "md5", sch.MD5())
	return nil
}

func (s *Session) handleAlert(n int) error {
	data, err := s.readData(n)
	if err != nil {
		return err
	}
	a := &AlertError{Text: strings.ToValidUTF8(string(data), "?")}
	if s.client {
		s.log.Error(a.Error())
	}
	return a
}

func (s *Session) handleSYNACK(id uint32, n int) error {
	if !s.client {
		return s.discard(n)
	}
	data, err := s.readData(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if t := s.synTimers[id]; t != nil {
		t.Stop()
		delete(s.synTimers, id)
	}
	st := s.streams[id]
	s.mu.Unlock()
	if st != nil && len(data) > 0 {
		st.shutdown(shutdownDialFailed, &DialError{Text: strings.ToValidUTF8(string(data), "?")})
	}
	return nil
}

// alert sends cmdAlert and closes the session (server).
func (s *Session) alert(text string) {
	t := time.AfterFunc(alertWriteLimit, func() { s.closeWith(&AlertError{Text: text, Sent: true}) })
	defer t.Stop()
	if s.lockWrite(nil, nil, nil) == nil {
		b := s.takeControl(s.wbuf[:0])
		b, _ = anytls.AppendFrame(b, anytls.Frame{Cmd: anytls.CmdAlert, Data: []byte(text)})
		s.wbuf = b
		s.sendLocked(b)
		s.unlockWrite()
	}
	s.log.Warn("anytls: session refused", "alert", text)
}

// --- writing ---

// lockWrite takes the connection's write lock, giving up when the session
// ends or one of cancel, dl or gone is closed.
func (s *Session) lockWrite(cancel, dl, gone <-chan struct{}) error {
	select {
	case s.wsem <- struct{}{}:
		if s.IsClosed() {
			<-s.wsem
			return s.closedErr()
		}
		return nil
	case <-s.done:
		return s.closedErr()
	case <-cancel:
		return context.Canceled
	case <-dl:
		return os.ErrDeadlineExceeded
	case <-gone:
		return errStreamClosed
	}
}

// unlockWrite releases the write lock, first writing queued control
// frames; if more were queued as it let go and no one else took the lock,
// it takes it again to write them.
func (s *Session) unlockWrite() {
	for {
		if s.ctlPending.Load() {
			s.wbuf = s.takeControl(s.wbuf[:0])
			s.sendLocked(s.wbuf)
		}
		<-s.wsem
		if !s.ctlPending.Load() {
			return
		}
		select {
		case s.wsem <- struct{}{}:
		default:
			return // the holder writes them
		}
	}
}

// takeControl appends the queued control frames to b.
func (s *Session) takeControl(b []byte) []byte {
	if !s.ctlPending.Load() {
		return b
	}
	s.ctlMu.Lock()
	b = append(b, s.ctl...)
	s.ctl = s.ctl[:0]
	s.ctlPending.Store(false)
	s.ctlMu.Unlock()
	return b
}

// queueControl queues frames and writes them now if the connection is
// free; it never waits for the connection.
func (s *Session) queueControl(frames []byte) {
	s.ctlMu.Lock()
	if len(s.ctl)+len(frames) > maxControlQueue {
		s.ctlMu.Unlock()
		go s.closeWith(ErrControlBacklog)
		return
	}
	s.ctl = append(s.ctl, frames...)
	s.ctlPending.Store(true)
	s.ctlMu.Unlock()
	select {
	case s.wsem <- struct{}{}:
		s.unlockWrite()
	default:
	}
}

func (s *Session) queueFrame(cmd anytls.Command, id uint32, data []byte) {
	if len(data) > anytls.MaxDataLen {
		data = data[:anytls.MaxDataLen]
	}
	f, _ := anytls.AppendFrame(make([]byte, 0, anytls.HeaderLen+len(data)), anytls.Frame{Cmd: cmd, Stream: id, Data: data})
	s.queueControl(f)
}

// sendLocked writes one packet: b as it is, or, while a client session is
// still shaping, as the padding scheme's plan for it. The caller holds the
// write lock. A failed write ends the session.
func (s *Session) sendLocked(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if s.IsClosed() {
		return s.closedErr()
	}
	var err error
	if s.shaping {
		s.pkt++
		sch := s.padding.Load()
		if s.pkt < sch.Stop() {
			s.plan = sch.Plan(s.plan[:0], s.pkt, len(b), s.rand)
			for _, r := range s.plan {
				rec := b[:r.Payload]
				b = b[r.Payload:]
				if r.Waste != anytls.NoWaste {
					s.rec = append(s.rec[:0], rec...)
					s.rec, _ = anytls.AppendWaste(s.rec, r.Waste)
					rec = s.rec
				}
				if _, err = s.conn.Write(rec); err != nil {
					break
				}
			}
		} else {
			s.shaping = false
			_, err = s.conn.Write(b)
		}
	} else {
		_, err = s.conn.Write(b)
	}
	if err != nil {
		s.closeWith(fmt.Errorf("anytls: write: %w", err))
		return s.closedErr()
	}
	return nil
}

// writeData sends p (at most MaxDataLen bytes) as one cmdPSH of st.
func (s *Session) writeData(st *Stream, p []byte) error {
	if err := s.lockWrite(nil, st.wdl.wait(), st.gone); err != nil {
		if err == errStreamClosed {
			return st.writeErr()
		}
		return err
	}
	if err := st.writeErr(); err != nil {
		s.unlockWrite()
		return err
	}
	b := s.takeControl(s.wbuf[:0])
	b = anytls.AppendHeader(b, anytls.Header{Cmd: anytls.CmdPSH, Stream: st.id, Length: uint16(len(p))})
	b = append(b, p...)
	s.wbuf = b
	err := s.sendLocked(b)
	if cap(s.wbuf) > 2*(anytls.HeaderLen+anytls.MaxDataLen) {
		s.wbuf = nil // a control backlog grew it; do not keep it
	}
	s.unlockWrite()
	return err
}

// release frees a stream's slot under MaxStreams, once per stream, when it
// is off the wire and closed by its user. It reports whether the session
// has no stream left; the caller then calls onIdle, without locks held.
func (s *Session) release() (idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live--
	return s.live == 0 && !s.IsClosed()
}

// remove takes st off the wire; it reports whether st was on it.
func (s *Session) remove(st *Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[st.id] != st {
		return false
	}
	delete(s.streams, st.id)
	return true
}

// othersOpen reports whether streams other than st are on the wire.
func (s *Session) othersOpen(st *Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.streams)
	if s.streams[st.id] == st {
		n--
	}
	return n > 0
}
