// Package vlessserver is the net side of a VLESS server, version 0 and
// (with Options.V1) version 1: it reads and authenticates the request
// header on a carrier connection (raw TLS, a WebSocket, a gRPC stream…) and
// hands the tunnel to a [tunnel.Handler]; for a v1 keep-alive connection it
// goes on reading requests, one stream at a time (see v1.go).
//
// A connection that is not VLESS for one of this server's users, or is for
// a user Options.Admit refuses, is refused with an error wrapping
// [protocols.ErrNotProtocol] before a byte is written, and is left open, so
// that the gateway can replay it into its decoy. The codec is package
// vless; the client is package vlessclient.
//
// Supported: the TCP command, UDP (command 2; version 0 framing: one
// destination per tunnel, each datagram length-prefixed; version 1: the
// classic and udp_multi framings of docs/protocols/vless-v1.md section 9,
// udpv1.go), flow "". Refused
// with a clear error and a closed connection: Mux and any flow (XTLS Vision
// is refused when the users are configured).
package vlessserver

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

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/v1io"
)

// User is one account allowed on the server.
type User struct {
	ID    uuid.UUID // the VLESS id; never logged
	Email string    // the name used in logs and counters; optional
	Level int       // V2Ray's policy level, kept for the gateway; ≥ 0
	Flow  string    // must be "" for now
}

// Options configures a Server. The zero Options is a server with no users
// that logs nothing.
type Options struct {
	Users     []User
	Inbound   string       // copied into every Request.Inbound
	Transport string       // copied into every Request.Transport ("tls", "ws", …)
	Log       *slog.Logger // nil: discard

	// V1 accepts VLESS version 1 (docs/protocols/vless-v1.md) as well as
	// version 0; the first byte of each connection decides. It needs Secure.
	V1 bool
	// Secure says the carrier is TLS (raw TLS, or WebSocket/gRPC over TLS).
	// VLESS v1 is defined only under TLS.
	Secure bool
	// IdleTimeout bounds the wait for the next request on a kept-alive v1
	// connection. 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration

	// Admit, when set, is asked after a user is authenticated and before
	// anything is written or any tunnel starts: false refuses the user
	// exactly as an unknown key is refused (an error wrapping
	// protocols.ErrNotProtocol, nothing written, the connection left open for
	// the caller's fallback). It receives the user's label (its email, or
	// the label the server makes when there is none). It must be fast and
	// safe for concurrent use; the gateway counts refusals in it.
	//
	// Match asks it too (a refused user does not match, as an unknown id),
	// so one connection may be asked about more than once: by Match, again
	// if the classifier asks Match with a longer prefix, and by ServeConn.
	// On a kept-alive v1 connection it is asked again before each further
	// request; there a refusal closes the connection (ErrNotAdmitted).
	Admit func(user string) bool
}

// DefaultIdleTimeout is how long a kept-alive v1 connection may wait for
// its next request. It is longer than vlessclient's default pool idle
// timeout (60 s), so that a client does not pick a connection the server is
// about to close.
const DefaultIdleTimeout = 2 * time.Minute

// Errors returned by New, SetUsers and ServeConn; use errors.Is.
var (
	// ErrUnknownUser: the request's UUID is not one of the users'. It is
	// returned wrapped together with protocols.ErrNotProtocol.
	ErrUnknownUser = errors.New("vless: unknown user id")
	// ErrNotAdmitted: the UUID is a user's, but Options.Admit refused the
	// user (quota, expiry…). Before the first request it is returned
	// wrapped together with protocols.ErrNotProtocol, exactly as
	// ErrUnknownUser; before a further request on a kept-alive v1
	// connection it comes alone, with the connection closed.
	ErrNotAdmitted = errors.New("vless: user not admitted")
	// ErrMux: the client asked for Mux.Cool (command 3).
	ErrMux = errors.New("vless: mux not supported")
	// Deprecated: ServeConn no longer returns it: v1 carries UDP (udpv1.go),
	// and UDP on a reused v1 connection is refused by the codec with
	// vless.ErrBadAddons. Kept for callers of earlier releases.
	ErrUDP = errors.New("vless: UDP not supported here")
	// ErrFlow: a user is configured with, or a client asked for, a flow
	// other than "".
	ErrFlow = errors.New("vless: flow not supported")
	// ErrBadUser: a user entry is invalid (empty or duplicate id, duplicate
	// email, negative level).
	ErrBadUser = errors.New("vless: bad user")
	// ErrInsecureV1: V1 without Secure.
	ErrInsecureV1 = errors.New("vless: version 1 needs a TLS carrier")
	// ErrBadOptions: another invalid option.
	ErrBadOptions = errors.New("vless: bad server options")
)

// Server is a VLESS server: version 0, and version 1 with Options.V1. It
// implements tunnel.Server; its Match method is a protocols.Matcher.
// Methods are safe for concurrent use.
type Server struct {
	users     atomic.Pointer[userTable]
	inbound   string
	transport string
	log       *slog.Logger
	v1        bool
	idle      time.Duration
	admit     func(user string) bool // nil: everyone
}

var _ tunnel.Server = (*Server)(nil)

// account is what the server keeps of a User.
type account struct {
	label string // Email, or a short non-secret label derived from the id
	level int
	flow  string
}

// userTable is immutable once published.
type userTable map[[16]byte]*account

// New returns a server for opts. It fails on a user with an empty or
// duplicate id, a duplicate email, a negative level or a flow other than "",
// on V1 without Secure, and on a negative IdleTimeout.
func New(opts Options) (*Server, error) {
	if opts.V1 && !opts.Secure {
		return nil, fmt.Errorf("%w: set Secure when the carrier is TLS, or leave V1 off", ErrInsecureV1)
	}
	if opts.IdleTimeout < 0 {
		return nil, fmt.Errorf("%w: IdleTimeout %v is negative", ErrBadOptions, opts.IdleTimeout)
	}
	t, err := buildTable(opts.Users)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	idle := opts.IdleTimeout
	if idle == 0 {
		idle = DefaultIdleTimeout
	}
	s := &Server{inbound: opts.Inbound, transport: opts.Transport, log: log, v1: opts.V1, idle: idle, admit: opts.Admit}
	s.users.Store(&t)
	return s, nil
}

// SetUsers replaces the user set atomically. Connections already past
// their handshake are not affected; a connection whose header is still being
// read may be checked against either set. On error the old set stays.
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
	index := make(map[[16]byte]int, len(users))
	emails := make(map[string]int, len(users))
	for i, u := range users {
		a := &account{label: u.Email, level: u.Level, flow: u.Flow}
		if a.label == "" {
			a.label = Label(u.ID)
		}
		name := fmt.Sprintf("user %d (%s)", i, a.label)
		if u.ID == (uuid.UUID{}) {
			return nil, fmt.Errorf("%w: %s: empty id", ErrBadUser, name)
		}
		if j, dup := index[u.ID]; dup {
			return nil, fmt.Errorf("%w: %s has the same id as user %d (%s)", ErrBadUser, name, j, t[u.ID].label)
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
		if err := checkFlow(u.Flow); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		t[u.ID] = a
		index[u.ID] = i
	}
	return t, nil
}

func checkFlow(flow string) error {
	switch flow {
	case "":
		return nil
	case vless.FlowVision, vless.FlowVision + "-udp443":
		return fmt.Errorf(`%w: flow %q (XTLS Vision) is not supported by Portico yet; remove "flow" or set it to "" on the server and its clients`, ErrFlow, flow)
	case "xtls-rprx-origin", "xtls-rprx-direct", "xtls-rprx-splice",
		"xtls-rprx-origin-udp443", "xtls-rprx-direct-udp443", "xtls-rprx-splice-udp443":
		return fmt.Errorf(`%w: flow %q belongs to the old XTLS, which Xray removed; use plain TLS with flow ""`, ErrFlow, flow)
	}
	return fmt.Errorf(`%w: unknown flow %q; the only supported flow is ""`, ErrFlow, flow)
}

// Label is the short, non-secret name a user without an email gets in logs
// and in Request.User: "user-" and the first 8 hex digits of SHA-256(id).
func Label(id uuid.UUID) string {
	sum := sha256.Sum256(id[:])
	return "user-" + hex.EncodeToString(sum[:4])
}

// Match reports whether prefix opens a VLESS request for one of the current
// users that Options.Admit admits; it is a protocols.Matcher (see
// vless.Match, and vless.MatchV1 when V1 is on).
//
// When the version byte is right but the UUID is not a user's, the no comes
// with ErrUnknownUser, so that the gateway's debug log can say why a
// connection went to the decoy (the error never names the UUID); when it
// is a user's whom Admit refuses, with ErrNotAdmitted.
//
// A refused user must look like an unknown id from outside, and an unknown
// id is a no here (the classifier sends it to the decoy). So Match asks
// Admit as well, through the same lookup as ServeConn (Server.lookup), so
// the two cannot disagree on who is refused. Answering yes and letting
// ServeConn refuse would also end at the decoy through the gateway's
// rewind, but through another path than an unknown id takes.
func (s *Server) Match(prefix []byte) (bool, error) {
	t := *s.users.Load()
	versionOK := false
	var why error
	known := func(id [16]byte) bool {
		versionOK = true
		_, why = s.lookup(t, id)
		return why == nil
	}
	match := vless.Match
	if s.v1 {
		match = vless.MatchV1
	}
	ok, err := match(prefix, known)
	if !ok && err == nil && versionOK {
		if errors.Is(why, ErrNotAdmitted) {
			return false, ErrNotAdmitted
		}
		return false, ErrUnknownUser
	}
	return ok, err
}

// lookup finds the account of id in t and asks Admit about it. The error
// is ErrUnknownUser, or ErrNotAdmitted with the user's label; it never
// names the id.
func (s *Server) lookup(t userTable, id [16]byte) (*account, error) {
	a := t[id]
	if a == nil {
		return nil, ErrUnknownUser
	}
	if !s.admitted(a) {
		return nil, fmt.Errorf("%w: user %s", ErrNotAdmitted, a.label)
	}
	return a, nil
}

// admitted asks Options.Admit about a; without one, everyone is.
func (s *Server) admitted(a *account) bool {
	return s.admit == nil || s.admit(a.label)
}

// headerBufSize bounds what ServeConn reads before the header is complete.
// It holds the longest header; payload bytes read with it are handed on.
// A v1 connection keeps this buffer for its life (v1io.Reader).
const headerBufSize = 1024

// ServeConn serves one carrier connection, following tunnel.Server's
// contract:
//
//   - Until the UUID of a known user has been read — a first byte other
//     than 0 (or 1 with V1), an unknown UUID, the UUID of a user whom
//     Options.Admit refuses (ErrNotAdmitted), the connection failing or
//     ending before byte 17 — it returns an error wrapping
//     protocols.ErrNotProtocol (and the cause), having written nothing and
//     without closing conn. For version 0 the same holds for the rest of the
//     header (unsupported command, malformed addons or address, EOF).
//   - Version 1 after a known UUID: a malformed or cut header closes conn
//     and returns the error, without ErrNotProtocol (the client held a key;
//     there is nothing to hide behind the decoy).
//   - Mux or a flow the user does not have: it closes conn and returns
//     an error wrapping ErrMux or ErrFlow.
//   - Version 0 UDP (command 2): it calls h.HandlePacket with a
//     tunnel.PacketConn whose ReadPacket yields each length-framed datagram
//     (vless.AppendPacket) with the request's target, and whose
//     WritePacket frames a reply (the response header goes out with the
//     first); from is not carried, as in V2Ray. It closes conn and returns
//     the handler's error.
//   - Version 1 UDP: it calls h.HandlePacket with a tunnel.PacketConn (a
//     tunnel.MultiSource) speaking the classic or udp_multi framing, and
//     with Request.Association set for udp_multi (udpv1.go). It closes conn
//     (never reused after UDP) and returns the handler's error.
//   - ctx already done: it closes conn and returns ctx's error.
//   - Otherwise it calls h.HandleStream with a conn that first yields the
//     payload bytes that came with the header. Version 0: the 2-byte
//     response header goes out with the first Write (or alone on
//     Close/CloseWrite); ServeConn makes sure conn is closed and returns
//     the handler's error. Version 1: no response header; with keep-alive
//     the stream is framed (docs/protocols/vless-v1.md) and, when it ended
//     cleanly both ways, ServeConn keeps conn and waits (up to IdleTimeout)
//     for the next request, calling h once per request, one at a time. It
//     returns nil when the client closes or the wait times out between
//     requests, and the last handler's error when a stream ends uncleanly.
//     Before each further request it asks Options.Admit again; a refusal
//     closes conn and returns ErrNotAdmitted (no fallback: the client
//     already proved its key on this connection).
//
// It sets no deadline for the first header: the caller's handshake
// deadline, if any, bounds it, and the caller clears it afterwards (at the
// latest in the handler). Between v1 requests it sets and clears its own
// read deadline.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, h tunnel.Handler) error {
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("vless: %w", err)
	}
	br := v1io.NewReader(conn, headerBufSize)
	first, err := s.readFirst(br)
	if err != nil {
		if errors.Is(err, protocols.ErrNotProtocol) {
			s.log.Debug("vless: not a VLESS connection for this server", "inbound", s.inbound, "err", err)
		} else {
			s.log.Debug("vless: bad v1 header from a known user", "inbound", s.inbound, "user", first.acct.label, "err", err)
			conn.Close()
		}
		return err
	}
	if first.version == vless.Version1 {
		return s.serveV1(ctx, conn, br, first.v1, first.acct, h)
	}
	hdr, acct := first.v0, first.acct
	log := s.log.With("inbound", s.inbound, "user", acct.label)
	switch {
	case hdr.Command == vless.CommandMux:
		log.Warn("vless: mux not supported", "remote", remoteString(conn))
		conn.Close()
		return fmt.Errorf("%w (user %s)", ErrMux, acct.label)
	case hdr.Addons.Flow != acct.flow:
		log.Warn("vless: client asked for an unsupported flow; set its flow to \"\"", "flow", hdr.Addons.Flow)
		conn.Close()
		return fmt.Errorf("%w: user %s asked for flow %q; this server supports only flow \"\"", ErrFlow, acct.label, hdr.Addons.Flow)
	}
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("vless: %w", err)
	}
	req := s.request(conn, acct, hdr.Target)
	if hdr.Command == vless.CommandUDP {
		req.Network = protocols.NetworkUDP
		log.Debug("vless: UDP tunnel", "target", hdr.Target.String())
		pc := newPacketConn(conn, br.Buffered(), hdr.Target)
		err = h.HandlePacket(ctx, pc, req)
		pc.Close()
		if err != nil {
			return fmt.Errorf("vless: UDP tunnel to %v for %s: %w", hdr.Target, acct.label, err)
		}
		return nil
	}
	log.Debug("vless: tunnel", "target", hdr.Target.String())
	c := newConn(conn, br.Buffered())
	err = h.HandleStream(ctx, c, req)
	c.Close() // the handler must have closed it; make sure
	if err != nil {
		return fmt.Errorf("vless: tunnel to %v for %s: %w", hdr.Target, acct.label, err)
	}
	return nil
}

func (s *Server) request(conn net.Conn, acct *account, target protocols.Addr) tunnel.Request {
	return tunnel.Request{
		Protocol:  "vless",
		User:      acct.label,
		Network:   protocols.NetworkTCP,
		Target:    target,
		Source:    remoteAddrPort(conn),
		Inbound:   s.inbound,
		Transport: s.transport,
	}
}

// firstHeader is the first request of a connection, of either version.
type firstHeader struct {
	version byte
	v0      vless.RequestHeader
	v1      vless.RequestV1
	acct    *account
}

// readFirst reads until br holds a whole first header from a known user
// and consumes it. Errors before the UUID is known (and every v0 error)
// wrap protocols.ErrNotProtocol; v1 errors after it do not, and then the
// returned header's acct is set.
func (s *Server) readFirst(br *v1io.Reader) (firstHeader, error) {
	var f firstHeader
	for {
		buf := br.Buffered()
		if len(buf) > 0 {
			switch f.version = buf[0]; {
			case f.version == vless.Version:
			case f.version == vless.Version1 && s.v1:
			default:
				return firstHeader{}, notProtocol(fmt.Errorf("%w %d", vless.ErrUnknownVersion, buf[0]))
			}
		}
		if f.acct == nil && len(buf) >= 17 {
			// Refuse an unknown or not admitted user before waiting for
			// the rest: both at byte 17, the same way.
			acct, err := s.lookup(*s.users.Load(), [16]byte(buf[1:17]))
			if err != nil {
				return firstHeader{}, notProtocol(err)
			}
			f.acct = acct
		}
		if f.acct != nil {
			var used int
			var err error
			if f.version == vless.Version {
				f.v0, used, err = vless.ParseRequest(buf)
			} else {
				f.v1, used, err = vless.ParseRequestV1(buf)
			}
			if err == nil {
				br.Discard(used)
				return f, nil
			}
			if err != protocols.ErrNeedMore {
				if f.version == vless.Version1 {
					return firstHeader{acct: f.acct}, err
				}
				return firstHeader{}, notProtocol(err)
			}
		}
		if _, rerr := br.Fill(); rerr != nil {
			err := fmt.Errorf("vless: connection ended %d bytes into the header: %w", len(br.Buffered()), rerr)
			if f.acct != nil && f.version == vless.Version1 {
				return firstHeader{acct: f.acct}, err
			}
			return firstHeader{}, notProtocol(err)
		}
	}
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
