// Package anytlsserver is the net side of an AnyTLS (protocol version 2)
// server: it authenticates a carrier connection (raw TLS, a WebSocket…),
// runs the session layer on it (package session), and hands each stream to
// a [tunnel.Handler].
//
// A connection whose first 32 bytes are not the SHA-256 of a user's
// password (or are, of a user Options.Admit refuses), or whose
// authentication is cut short, is refused with an error
// wrapping [protocols.ErrNotProtocol] before a byte is written, and is left
// open, so that the gateway can replay it into its decoy. The codec is
// package anytls; the client is package anytlsclient.
//
// Supported: TCP streams, with cmdSYNACK reporting the handler's dial
// (the stream implements [tunnel.DialReporter]). Refused per stream with a
// cmdSYNACK error: UDP (udp-over-tcp; a later issue).
package anytlsserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/anytls/internal/uotconn"
	"github.com/portico-gw/portico/protocols/anytls/session"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// User is one account allowed on the server.
type User struct {
	Password string // the AnyTLS password; never logged
	Email    string // the name used in logs and counters; optional
	Level    int    // V2Ray's policy level, kept for the gateway; ≥ 0
}

// Options configures a Server. The zero Options is a server with no users,
// the default padding scheme, and no logging.
type Options struct {
	Users []User
	// PaddingScheme is the scheme clients are told to use (see
	// anytls.ParseScheme); "" means anytls.DefaultSchemeText.
	PaddingScheme string
	// MaxStreams bounds the streams one session has open at once; 0 means
	// session.DefaultMaxStreams (128). A stream past it gets the cmdSYNACK
	// error "anytls: too many streams on this session" (to v2 clients) and
	// cmdFIN; the session goes on. Refusals are counted (RefusedStreams)
	// and warned about at most once per 10 s.
	MaxStreams int
	Inbound    string       // copied into every Request.Inbound
	Transport  string       // copied into every Request.Transport ("tls", "ws", …)
	Log        *slog.Logger // nil: discard

	// Admit, when set, is asked after a user is authenticated and before
	// anything is written or any tunnel starts: false refuses the user
	// exactly as an unknown key is refused (an error wrapping
	// protocols.ErrNotProtocol, nothing written, the connection left open for
	// the caller's fallback). It receives the user's label (its email, or
	// the label the server makes when there is none). It must be fast and
	// safe for concurrent use; the gateway counts refusals in it.
	//
	// It is asked at byte 32, when the hash names a user, by Match as by
	// ServeConn (a refused user does not match, as a wrong password), so one
	// connection may be asked about more than once. A running session is
	// not asked again: AnyTLS has no per-stream authentication.
	Admit func(user string) bool
}

// Errors returned by New, SetUsers and ServeConn; use errors.Is.
var (
	// ErrUnknownUser: the authentication's hash is no user's. It is
	// returned wrapped together with protocols.ErrNotProtocol.
	ErrUnknownUser = anytls.ErrUnknownPassword
	// ErrNotAdmitted: the hash is a user's, but Options.Admit refused the
	// user (quota, expiry…). Like ErrUnknownUser, it is returned wrapped
	// together with protocols.ErrNotProtocol.
	ErrNotAdmitted = errors.New("anytls: user not admitted")
	// ErrUDP: a stream asked for udp-over-tcp version 1. The stream gets this text
	// in its cmdSYNACK.
	ErrUDP = errors.New("anytls: udp-over-tcp version 1 is not supported (use version 2, sp.v2.udp-over-tcp.arpa)")
	// ErrBadUser: a user entry is invalid (empty or duplicate password,
	// duplicate email, negative level).
	ErrBadUser = errors.New("anytls: bad user")
)

// targetTimeout bounds reading a new stream's target address.
const targetTimeout = 30 * time.Second

// Server is an AnyTLS server. It implements tunnel.Server; its Match
// method is a protocols.Matcher. Methods are safe for concurrent use.
type Server struct {
	users      atomic.Pointer[userTable]
	scheme     *anytls.Scheme
	maxStreams int
	inbound    string
	transport  string
	log        *slog.Logger
	admit      func(user string) bool // nil: everyone

	refused      atomic.Int64 // streams refused past maxStreams
	refusedShown atomic.Int64 // refused as of the last warning
	lastWarn     atomic.Int64 // unix nanos of the last warning
}

// refusedWarnInterval is how often refused streams are warned about.
const refusedWarnInterval = 10 * time.Second

// RefusedStreams is how many streams were refused past MaxStreams, over
// every session.
func (s *Server) RefusedStreams() int64 { return s.refused.Load() }

// streamRefused counts a stream refused past maxStreams and warns at most
// once per refusedWarnInterval, with the count since the last warning.
func (s *Server) streamRefused(log *slog.Logger) {
	n := s.refused.Add(1)
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if last != 0 && now-last < int64(refusedWarnInterval) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	since := n - s.refusedShown.Swap(n)
	log.Warn("anytls: streams refused: too many on one session", "max", s.maxStreamsOrDefault(), "refused_since_last_warning", since, "refused_total", n)
}

func (s *Server) maxStreamsOrDefault() int {
	if s.maxStreams > 0 {
		return s.maxStreams
	}
	return session.DefaultMaxStreams
}

var _ tunnel.Server = (*Server)(nil)

// The stream a handler gets: a net.Conn that reports its dial (cmdSYNACK)
// and half-closes (cmdFIN).
var _ interface {
	net.Conn
	tunnel.DialReporter
	CloseWrite() error
} = (*session.Stream)(nil)

// account is what the server keeps of a User.
type account struct {
	label string // Email, or Label(password)
	level int
}

// userTable is immutable once published; keyed by sha256(password).
type userTable map[[anytls.AuthHashLen]byte]*account

// New returns a server for opts. It fails on a bad user (see SetUsers) or
// a padding scheme anytls.ParseScheme refuses.
func New(opts Options) (*Server, error) {
	t, err := buildTable(opts.Users)
	if err != nil {
		return nil, err
	}
	scheme := anytls.DefaultScheme()
	if opts.PaddingScheme != "" {
		if scheme, err = anytls.ParseScheme([]byte(opts.PaddingScheme)); err != nil {
			return nil, fmt.Errorf("anytls: paddingScheme: %w", err)
		}
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{scheme: scheme, maxStreams: opts.MaxStreams, inbound: opts.Inbound, transport: opts.Transport, log: log, admit: opts.Admit}
	s.users.Store(&t)
	return s, nil
}

// SetUsers replaces the user set atomically. Sessions already running are
// not affected; a connection whose authentication is being read may be
// checked against either set. It fails, keeping the old set, on an empty
// or duplicate password, a duplicate email (case-insensitive) or a
// negative level.
func (s *Server) SetUsers(users []User) error {
	t, err := buildTable(users)
	if err != nil {
		return err
	}
	s.users.Store(&t)
	return nil
}

func buildTable(users []User) (userTable, error) {
	t := make(userTable, len(users))
	index := make(map[[anytls.AuthHashLen]byte]int, len(users))
	emails := make(map[string]int, len(users))
	for i, u := range users {
		a := &account{label: u.Email, level: u.Level}
		if a.label == "" {
			a.label = Label(u.Password)
		}
		name := fmt.Sprintf("user %d (%s)", i, a.label)
		if u.Password == "" {
			return nil, fmt.Errorf("%w: %s: empty password", ErrBadUser, name)
		}
		h := anytls.PasswordHash(u.Password)
		if j, dup := index[h]; dup {
			return nil, fmt.Errorf("%w: %s has the same password as user %d (%s); AnyTLS tells users apart by password alone", ErrBadUser, name, j, t[h].label)
		}
		if u.Email != "" {
			key := strings.ToLower(u.Email)
			if j, dup := emails[key]; dup {
				return nil, fmt.Errorf("%w: %s has the same email as user %d", ErrBadUser, name, j)
			}
			emails[key] = i
		}
		if u.Level < 0 {
			return nil, fmt.Errorf("%w: %s: level %d is negative", ErrBadUser, name, u.Level)
		}
		t[h] = a
		index[h] = i
	}
	return t, nil
}

// Label is the short, non-secret name a user without an email gets in logs
// and in Request.User: "user-" and the first 8 hex digits of
// SHA-256(SHA-256(password)) (hashed twice: once is the credential).
func Label(password string) string {
	h := anytls.PasswordHash(password)
	sum := sha256.Sum256(h[:])
	return "user-" + hex.EncodeToString(sum[:4])
}

// PaddingScheme is the scheme the server pushes to clients.
func (s *Server) PaddingScheme() *anytls.Scheme { return s.scheme }

// Match reports whether prefix opens an AnyTLS connection for one of the
// current users that Options.Admit admits; it is a protocols.Matcher (see
// anytls.Match). Below 32 bytes it asks for more; a no comes with
// ErrUnknownUser, which never holds the hash, or ErrNotAdmitted.
//
// A user Admit refuses must look like a wrong password from outside, and a
// wrong password is a no here, so Match asks Admit too, through the same
// lookup as ServeConn (Server.lookup).
func (s *Server) Match(prefix []byte) (bool, error) {
	t := *s.users.Load()
	var why error
	ok, err := anytls.Match(prefix, func(h [anytls.AuthHashLen]byte) bool {
		_, why = s.lookup(t, h)
		return why == nil
	})
	if !ok && errors.Is(why, ErrNotAdmitted) {
		return false, ErrNotAdmitted
	}
	return ok, err
}

// lookup finds the account of hash h in t and asks Admit about it. The
// error is ErrUnknownUser, or ErrNotAdmitted with the user's label.
func (s *Server) lookup(t userTable, h [anytls.AuthHashLen]byte) (*account, error) {
	a := t[h]
	if a == nil {
		return nil, ErrUnknownUser
	}
	if s.admit != nil && !s.admit(a.label) {
		return nil, fmt.Errorf("%w: user %s", ErrNotAdmitted, a.label)
	}
	return a, nil
}

// ServeConn serves one carrier connection, following tunnel.Server's
// contract:
//
//   - Until a whole authentication from a known user has been read — an
//     unknown hash or the hash of a user whom Options.Admit refuses
//     (ErrNotAdmitted; both decided at byte 32, without waiting for more),
//     or the connection failing or ending before padding0 is whole — it returns
//     an error wrapping protocols.ErrNotProtocol (and the cause), having
//     written nothing and without closing conn.
//   - ctx already done: it closes conn and returns ctx's error.
//   - Otherwise it runs the session: for each stream it reads the target
//     and calls h.HandleStream concurrently, with a stream that implements
//     tunnel.DialReporter (cmdSYNACK) and CloseWrite (cmdFIN). A stream to
//     udp-over-tcp's magic address gets the cmdSYNACK error ErrUDP
//     instead. A cmdSYN before cmdSettings gets a cmdAlert and ends the
//     session. ServeConn returns when the session is over and every
//     handler has returned, with conn closed: nil when the client closed
//     it, else why it ended. Cancelling ctx ends the session.
//
// The caller's handshake deadline, if any, bounds the authentication;
// ServeConn then clears conn's deadlines itself, because a session is
// long-lived and may idle in the client's pool between streams (a stream
// to udp-over-tcp, or a session with no stream yet, never reaches the
// handler, where the gateway clears them).
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, h tunnel.Handler) error {
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("anytls: %w", err)
	}
	acct, rest, err := s.readAuth(conn)
	if err != nil {
		s.log.Debug("anytls: not an AnyTLS connection for this server", "inbound", s.inbound, "err", err)
		return err
	}
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("anytls: %w", err)
	}
	// The handshake is over; a session may now sit idle in the client's
	// pool for as long as the client likes.
	conn.SetDeadline(time.Time{})
	log := s.log.With("inbound", s.inbound, "user", acct.label)
	log.Debug("anytls: session", "remote", remoteString(conn))
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	source := remoteAddrPort(conn)
	sess := session.NewServer(conn, rest, session.ServerConfig{
		Scheme:     s.scheme,
		MaxStreams: s.maxStreams,
		OnRefused:  func(uint32) { s.streamRefused(log) },
		Log:        log,
		// The handlers' context ends with the session (no goroutine per
		// session waits for that).
		OnClose: func(*session.Session) { cancel() },
		Accept: func(st *session.Stream) {
			s.serveStream(sctx, st, tunnel.Request{
				Protocol:  "anytls",
				User:      acct.label,
				Network:   protocols.NetworkTCP,
				Source:    source,
				Inbound:   s.inbound,
				Transport: s.transport,
			}, h, log)
		},
	})
	// Handlers see sctx end with the session (Run waits for them), and the
	// session ends with ctx.
	stopSess := context.AfterFunc(ctx, func() { sess.Close() })
	defer stopSess()
	err = sess.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("anytls: session of %s: %w", acct.label, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("anytls: session of %s: %w", acct.label, err)
	}
	return nil
}

func (s *Server) serveStream(ctx context.Context, st *session.Stream, req tunnel.Request, h tunnel.Handler, log *slog.Logger) {
	st.SetReadDeadline(time.Now().Add(targetTimeout))
	target, err := st.ReadTarget()
	st.SetReadDeadline(time.Time{})
	if err != nil {
		log.Debug("anytls: stream without a target", "stream", st.ID(), "err", err)
		st.Finish(err)
		return
	}
	if anytls.IsUoT(target) {
		s.serveUoT(ctx, st, target, req, h, log)
		return
	}
	req.Target = target
	log.Debug("anytls: stream", "stream", st.ID(), "target", target.String())
	err = h.HandleStream(ctx, st, req)
	st.Finish(err)
	if err != nil {
		log.Debug("anytls: stream ended", "stream", st.ID(), "target", target.String(), "err", err)
	}
}

// serveUoT serves a sing-box udp-over-tcp v2 stream: its request names the
// destination (connect mode) or each packet does, and the datagrams go to
// h.HandlePacket. There is no outbound dial to wait for, so the stream is
// acknowledged at once.
func (s *Server) serveUoT(ctx context.Context, st *session.Stream, target protocols.Addr, req tunnel.Request, h tunnel.Handler, log *slog.Logger) {
	if target.Domain != anytls.UoTMagicAddress {
		log.Info("anytls: udp-over-tcp version 1 is not supported", "stream", st.ID())
		st.Finish(ErrUDP)
		return
	}
	st.ReportDial(nil)
	st.SetReadDeadline(time.Now().Add(targetTimeout))
	uot, pending, err := uotconn.ReadRequest(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		log.Debug("anytls: udp-over-tcp stream without a request", "stream", st.ID(), "err", err)
		st.Finish(err)
		return
	}
	req.Network, req.Target = protocols.NetworkUDP, uot.Target
	err = h.HandlePacket(ctx, uotconn.Server(st, uot, pending), req)
	st.Finish(err)
	if err != nil {
		log.Debug("anytls: udp-over-tcp ended", "stream", st.ID(), "target", uot.Target.String(), "err", err)
	}
}

// authBufSize is the first read buffer; a longer padding0 grows it.
const authBufSize = 2048

// readAuth reads until buf holds a whole authentication from a known user
// and returns the account and the bytes read past it. Every error wraps
// protocols.ErrNotProtocol. anytls-go's server takes the authentication
// from one TLS read; this one reads on until padding0 is whole, since the
// gateway may hand over its peeked bytes and the rest in separate reads.
func (s *Server) readAuth(conn net.Conn) (*account, []byte, error) {
	buf := make([]byte, authBufSize)
	var acct *account
	n := 0
	for {
		if n == len(buf) {
			// Only a padding0 too long for buf gets here: make room for it.
			grown := make([]byte, anytls.AuthHeaderLen+paddingLen(buf)+authBufSize)
			copy(grown, buf[:n])
			buf = grown
		}
		m, rerr := conn.Read(buf[n:])
		n += m
		if acct == nil && n >= anytls.AuthHashLen {
			// Refuse an unknown or not admitted user before waiting for
			// the rest: both at byte 32, the same way.
			a, err := s.lookup(*s.users.Load(), [anytls.AuthHashLen]byte(buf[:anytls.AuthHashLen]))
			if err != nil {
				return nil, nil, notProtocol(err)
			}
			acct = a
		}
		if acct != nil {
			if _, used, err := anytls.ParseAuth(buf[:n]); err == nil {
				return acct, buf[used:n:n], nil
			}
		}
		if rerr != nil {
			what := "authentication"
			if n >= anytls.AuthHeaderLen {
				what = fmt.Sprintf("authentication, short of its %d-byte padding0", paddingLen(buf))
			}
			return nil, nil, notProtocol(fmt.Errorf("%w: connection ended %d bytes into the %s: %w", anytls.ErrBadPadding, n, what, rerr))
		}
	}
}

func paddingLen(b []byte) int {
	return int(b[anytls.AuthHashLen])<<8 | int(b[anytls.AuthHashLen+1])
}

func notProtocol(cause error) error {
	return fmt.Errorf("%w: %w", protocols.ErrNotProtocol, cause)
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	switch a := c.RemoteAddr().(type) {
	case nil:
		return netip.AddrPort{}
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
}

func remoteString(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
