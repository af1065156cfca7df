// Package vlessserver is the net side of a VLESS v0 server: it reads and
// authenticates the request header on a carrier connection (raw TLS, a
// WebSocket, a gRPC stream…) and hands the tunnel to a [tunnel.Handler].
//
// A connection that is not VLESS for one of this server's users is refused
// with an error wrapping [protocols.ErrNotProtocol] before a byte is written,
// and is left open, so that the gateway can replay it into its decoy. The
// codec is package vless; the client is package vlessclient.
//
// Supported: the TCP command, flow "". Refused with a clear error and a
// closed connection: Mux, UDP (a later issue) and any flow (XTLS Vision is
// refused when the users are configured).
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

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
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
}

// Errors returned by New, SetUsers and ServeConn; use errors.Is.
var (
	// ErrUnknownUser: the request's UUID is not one of the users'. It is
	// returned wrapped together with protocols.ErrNotProtocol.
	ErrUnknownUser = errors.New("vless: unknown user id")
	// ErrMux: the client asked for Mux.Cool (command 3).
	ErrMux = errors.New("vless: mux not supported")
	// ErrUDP: the client asked for UDP (command 2).
	ErrUDP = errors.New("vless: UDP not supported yet")
	// ErrFlow: a user is configured with, or a client asked for, a flow
	// other than "".
	ErrFlow = errors.New("vless: flow not supported")
	// ErrBadUser: a user entry is invalid (empty or duplicate id, duplicate
	// email, negative level).
	ErrBadUser = errors.New("vless: bad user")
)

// Server is a VLESS v0 server. It implements tunnel.Server; its Match
// method is a protocols.Matcher. Methods are safe for concurrent use.
type Server struct {
	users     atomic.Pointer[userTable]
	inbound   string
	transport string
	log       *slog.Logger
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
// duplicate id, a duplicate email, a negative level or a flow other than "".
func New(opts Options) (*Server, error) {
	t, err := buildTable(opts.Users)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{inbound: opts.Inbound, transport: opts.Transport, log: log}
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
// users; it is a protocols.Matcher (see vless.Match).
func (s *Server) Match(prefix []byte) (bool, error) {
	t := *s.users.Load()
	return vless.Match(prefix, func(id [16]byte) bool { return t[id] != nil })
}

// headerBufSize bounds what ServeConn reads before the header is complete.
// It holds the longest header; payload bytes read with it are handed on.
const headerBufSize = 1024

// ServeConn serves one carrier connection, following tunnel.Server's
// contract:
//
//   - Until a whole header from a known user has been read — unknown UUID or
//     version, unsupported command, malformed addons or address, or the
//     connection failing or ending mid-header — it returns an error wrapping
//     protocols.ErrNotProtocol (and the cause), having written nothing and
//     without closing conn.
//   - Mux, UDP or a flow the user does not have: it closes conn and returns
//     an error wrapping ErrMux, ErrUDP or ErrFlow.
//   - ctx already done: it closes conn and returns ctx's error.
//   - Otherwise it calls h.HandleStream once, with a conn that first yields
//     the payload bytes that came with the header and sends the 2-byte
//     response header with the first Write (or alone on Close/CloseWrite),
//     makes sure conn is closed, and returns the handler's error.
//
// It sets no deadline: the caller's handshake deadline, if any, bounds the
// header read, and the caller clears it afterwards.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, h tunnel.Handler) error {
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("vless: %w", err)
	}
	buf := make([]byte, headerBufSize)
	hdr, acct, n, used, err := s.readHeader(conn, buf)
	if err != nil {
		s.log.Debug("vless: not a VLESS connection for this server", "inbound", s.inbound, "err", err)
		return err
	}
	log := s.log.With("inbound", s.inbound, "user", acct.label)
	switch {
	case hdr.Command == vless.CommandMux:
		log.Warn("vless: mux not supported", "remote", remoteString(conn))
		conn.Close()
		return fmt.Errorf("%w (user %s)", ErrMux, acct.label)
	case hdr.Command == vless.CommandUDP:
		log.Warn("vless: UDP not supported yet", "target", hdr.Target.String())
		conn.Close()
		return fmt.Errorf("%w (user %s, target %v)", ErrUDP, acct.label, hdr.Target)
	case hdr.Addons.Flow != acct.flow:
		log.Warn("vless: client asked for an unsupported flow; set its flow to \"\"", "flow", hdr.Addons.Flow)
		conn.Close()
		return fmt.Errorf("%w: user %s asked for flow %q; this server supports only flow \"\"", ErrFlow, acct.label, hdr.Addons.Flow)
	}
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("vless: %w", err)
	}
	req := tunnel.Request{
		User:      acct.label,
		Network:   protocols.NetworkTCP,
		Target:    hdr.Target,
		Source:    remoteAddrPort(conn),
		Inbound:   s.inbound,
		Transport: s.transport,
	}
	log.Debug("vless: tunnel", "target", hdr.Target.String())
	c := newConn(conn, buf[used:n])
	err = h.HandleStream(ctx, c, req)
	c.Close() // the handler must have closed it; make sure
	if err != nil {
		return fmt.Errorf("vless: tunnel to %v for %s: %w", hdr.Target, acct.label, err)
	}
	return nil
}

// readHeader reads into buf until it holds a whole request header from a
// known user. It returns the header, its account, the bytes read and the
// bytes the header used. Every error wraps protocols.ErrNotProtocol.
func (s *Server) readHeader(conn net.Conn, buf []byte) (vless.RequestHeader, *account, int, int, error) {
	var acct *account
	n := 0
	for {
		m, rerr := conn.Read(buf[n:])
		n += m
		if n > 0 && buf[0] != vless.Version {
			return fail(fmt.Errorf("%w %d", vless.ErrUnknownVersion, buf[0]))
		}
		if acct == nil && n >= 17 {
			// Refuse an unknown user before waiting for the rest.
			if acct = (*s.users.Load())[[16]byte(buf[1:17])]; acct == nil {
				return fail(ErrUnknownUser)
			}
		}
		if acct != nil {
			hdr, used, err := vless.ParseRequest(buf[:n])
			if err == nil {
				return hdr, acct, n, used, nil
			}
			if err != protocols.ErrNeedMore {
				return fail(err)
			}
		}
		if rerr != nil {
			return fail(fmt.Errorf("vless: connection ended %d bytes into the header: %w", n, rerr))
		}
		if n == len(buf) { // cannot happen: buf holds the longest header
			return fail(fmt.Errorf("vless: header longer than %d bytes", len(buf)))
		}
	}
}

func fail(cause error) (vless.RequestHeader, *account, int, int, error) {
	return vless.RequestHeader{}, nil, 0, 0, fmt.Errorf("%w: %w", protocols.ErrNotProtocol, cause)
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
