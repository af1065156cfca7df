// Package vmessserver is the net side of a VMess server: it authenticates
// the request header on a carrier connection (raw TLS, a WebSocket, a gRPC
// stream…), in its VMessAEAD form or, when allowed, its legacy MD5 form, and
// hands the tunnel to a [tunnel.Handler] as a net.Conn that decodes the
// request body and encodes the response.
//
// A connection that is not VMess for one of this server's users — unknown
// id, a user Options.Admit refuses, replayed AuthID, a clock outside the
// window, a refused legacy header, a header that fails its checksum or ends
// early — is refused with an error wrapping [protocols.ErrNotProtocol]
// before a byte is written, and is left open, so that the gateway can
// replay it into its decoy. The codec is package vmess; the client is
// package vmessclient.
//
// Supported: the TCP command, every security (aes-128-gcm,
// chacha20-poly1305, none, zero, and the legacy aes-128-cfb), chunk
// masking, global padding and authenticated length. Refused with a clear
// error and a closed connection: Mux, and UDP with security zero. UDP
// (command 2) carries one datagram per body chunk, to the request's target
// only.
package vmessserver

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
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vmess"
)

// User is one account allowed on the server.
type User struct {
	ID      uuid.UUID // the VMess id; never logged
	AlterID int       // 0..65535; > 0 lets legacy clients with an alterId up to this one in (when AllowLegacy)
	Email   string    // the name used in logs and counters; optional
	Level   int       // V2Ray's policy level, kept for the gateway; ≥ 0
}

// Options configures a Server. The zero Options is a server with no users
// that refuses legacy clients, logs nothing and reads the system clock.
type Options struct {
	Users []User
	// AllowLegacy lets legacy (MD5 header, alterId > 0) clients in. It is
	// V2Ray's v2ray.vmess.aead.forced=false; the gateway also sets it from
	// the environment variable V2RAY_VMESS_AEAD_FORCED=false. Off, a legacy
	// client of a known user is refused and the refusal logged at warn
	// level with how to fix it.
	AllowLegacy bool
	// DisableInsecureEncryption refuses clients whose security is none (or
	// zero) or aes-128-cfb, as V2Ray's inbound setting of the same name.
	DisableInsecureEncryption bool
	Inbound                   string           // copied into every Request.Inbound
	Transport                 string           // copied into every Request.Transport ("tls", "ws", …)
	Log                       *slog.Logger     // nil: discard
	Now                       func() time.Time // nil: time.Now

	// Admit, when set, is asked after a user is authenticated and before
	// anything is written or any tunnel starts: false refuses the user
	// exactly as an unknown key is refused (an error wrapping
	// protocols.ErrNotProtocol, nothing written, the connection left open for
	// the caller's fallback). It receives the user's label (its email, or
	// the label the server makes when there is none). It must be fast and
	// safe for concurrent use; the gateway counts refusals in it.
	//
	// It is asked once the first 16 bytes name a user and pass the other
	// checks (clock, replay, legacy rules), by Match as by ServeConn (a
	// refused user does not match, as an unknown id), so one connection may
	// be asked about more than once. A refused handshake is turned away at
	// byte 16, as an unknown id is: the rest of the header is not read and
	// its AuthID is not recorded in the replay filter.
	Admit func(user string) bool
}

// Errors returned by New, SetUsers, Match and ServeConn; use errors.Is.
// ServeConn returns those of the handshake wrapped together with
// protocols.ErrNotProtocol.
var (
	// ErrUnknownUser: the first 16 bytes are neither an AuthID of a user
	// nor a legacy hash of one of their ids within the time window.
	ErrUnknownUser = errors.New("vmess: invalid user: no user matches the first 16 bytes")
	// ErrNotAdmitted: the first 16 bytes are a user's, but Options.Admit
	// refused the user (quota, expiry…). Like ErrUnknownUser, ServeConn
	// returns it wrapped together with protocols.ErrNotProtocol.
	ErrNotAdmitted = errors.New("vmess: user not admitted")
	// ErrReplay: an AuthID (or a legacy header's session) already seen
	// within its window.
	ErrReplay = errors.New("vmess: replayed auth id")
	// ErrReplayFilterFull: the replay filter holds its maximum of live
	// AuthIDs, so a new one cannot be checked; refused rather than risk a
	// replay.
	ErrReplayFilterFull = errors.New("vmess: replay filter full")
	// ErrLegacyRefused: a legacy client of a known user while AllowLegacy
	// is off. The message is V2Ray's.
	ErrLegacyRefused = errors.New("vmess: invalid user: VMessAEAD is enforced and a non VMessAEAD connection is received")
	// ErrTainted: a legacy auth datum that already saw a replay or a bad
	// request (V2Ray's taint fuse).
	ErrTainted = errors.New("vmess: invalid user: ErrTainted")
	// ErrAlterIDMismatch: a legacy client uses an alter id beyond its
	// user's alterId on this server.
	ErrAlterIDMismatch = errors.New("vmess: invalid user: alterId mismatch")
	// ErrInsecureEncryption: security none, zero or aes-128-cfb while
	// DisableInsecureEncryption is on.
	ErrInsecureEncryption = errors.New("vmess: client uses insecure encryption")
	// ErrUDP: the client asked for UDP (command 2) with security zero,
	// whose unchunked body cannot carry datagrams.
	ErrUDP = errors.New("vmess: UDP not supported with this security")
	// ErrMux: the client asked for Mux.Cool (command 3).
	ErrMux = errors.New("vmess: mux not supported")
	// ErrBadUser: a user entry is invalid.
	ErrBadUser = errors.New("vmess: bad user")
)

// Limits of the replay filters: enough for about 1,000 new AEAD
// connections a second sustained (an AuthID is remembered for at most
// 2 × 120 s), about 15 MB at worst. Only holders of a user's key can fill
// them.
const (
	maxAuthIDs        = 1 << 18
	maxLegacySessions = 1 << 16
)

// Server is a VMess server. It implements tunnel.Server; its Match method
// is a protocols.Matcher. Methods are safe for concurrent use.
type Server struct {
	users       atomic.Pointer[userTable]
	allowLegacy bool
	noInsecure  bool
	inbound     string
	transport   string
	log         *slog.Logger
	now         func() time.Time
	admit       func(user string) bool // nil: everyone

	authIDs  *expiringSet[[16]byte]   // AEAD AuthIDs seen
	sessions *expiringSet[sessionKey] // legacy (user, key, IV) seen
	taint    taintSet
	warns    warnLimiter
}

var _ tunnel.Server = (*Server)(nil)

// account is what the server keeps of a User.
type account struct {
	label   string // Email, or a short non-secret label derived from the id
	level   int
	alterID int
	key     *vmess.UserKey
	ids     [][16]byte // main id, alterID alter ids, diagAlterIDs more
}

type userTable struct {
	accounts []*account
	keys     []*vmess.UserKey // accounts[i].key
	legacy   *legacyTable
}

type sessionKey struct {
	user, key, iv [16]byte // the user's main id: stable across SetUsers
}

// New returns a server for opts. It fails on a user with an empty or
// duplicate id, a duplicate email, a negative level or an alterId outside
// 0..65535.
func New(opts Options) (*Server, error) {
	s := &Server{
		allowLegacy: opts.AllowLegacy,
		noInsecure:  opts.DisableInsecureEncryption,
		inbound:     opts.Inbound,
		transport:   opts.Transport,
		log:         opts.Log,
		now:         opts.Now,
		admit:       opts.Admit,
		authIDs:     newExpiringSet[[16]byte](maxAuthIDs),
		sessions:    newExpiringSet[sessionKey](maxLegacySessions),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.SetUsers(opts.Users); err != nil {
		return nil, err
	}
	return s, nil
}

// SetUsers replaces the user set atomically. Connections already past
// their handshake are not affected; a connection whose header is still being
// read may be checked against either set. The replay filters and burned
// legacy hashes are kept. On error the old set stays. It costs 251 HMAC-MD5
// per id (main, alter and 4 diagnostic ids) for the legacy table.
func (s *Server) SetUsers(users []User) error {
	accounts := make([]*account, 0, len(users))
	index := make(map[uuid.UUID]int, len(users))
	emails := make(map[string]int, len(users))
	for i, u := range users {
		a := &account{label: u.Email, level: u.Level, alterID: u.AlterID}
		if a.label == "" {
			a.label = Label(u.ID)
		}
		name := fmt.Sprintf("user %d (%s)", i, a.label)
		if u.ID == (uuid.UUID{}) {
			return fmt.Errorf("%w: %s: empty id", ErrBadUser, name)
		}
		if j, dup := index[u.ID]; dup {
			return fmt.Errorf("%w: %s has the same id as user %d (%s)", ErrBadUser, name, j, accounts[j].label)
		}
		if u.Email != "" {
			key := strings.ToLower(u.Email)
			if j, dup := emails[key]; dup {
				return fmt.Errorf("%w: %s has the same email as user %d", ErrBadUser, name, j)
			}
			emails[key] = i
		}
		if u.Level < 0 {
			return fmt.Errorf("%w: %s: level %d is negative", ErrBadUser, name, u.Level)
		}
		if u.AlterID < 0 || u.AlterID > 65535 {
			return fmt.Errorf(`%w: %s: alterId %d is outside 0..65535 (0, VMessAEAD, is recommended)`, ErrBadUser, name, u.AlterID)
		}
		a.key = vmess.NewUserKey(u.ID)
		a.ids = append([][16]byte{u.ID}, vmess.AlterIDs(u.ID, min(u.AlterID+diagAlterIDs, 65535))...)
		accounts = append(accounts, a)
		index[u.ID] = i
	}
	keys := make([]*vmess.UserKey, len(accounts))
	for i, a := range accounts {
		keys[i] = a.key
	}
	s.users.Store(&userTable{accounts: accounts, keys: keys, legacy: newLegacyTable(accounts, s.now().Unix())})
	return nil
}

// Label is the short, non-secret name a user without an email gets in logs
// and in Request.User: "user-" and the first 8 hex digits of SHA-256(id).
func Label(id uuid.UUID) string {
	sum := sha256.Sum256(id[:])
	return "user-" + hex.EncodeToString(sum[:4])
}

// ident is who sent the first 16 bytes of a connection.
type ident struct {
	acct   *account
	legacy bool
	ts     int64 // the AuthID's or the legacy hash's time
	authID [16]byte
}

// identify looks the first 16 bytes up: an AuthID of a user (one AES block
// per user), else a legacy hash (one map look-up), and, when every other
// check passed, asks Options.Admit. The errors say why not; they name users
// by label and never carry a key.
func (s *Server) identify(prefix []byte, now int64) (ident, error) {
	id, err := s.authenticate(prefix, now)
	if err == nil && s.admit != nil && !s.admit(id.acct.label) {
		return id, fmt.Errorf("%w: user %s", ErrNotAdmitted, id.acct.label)
	}
	return id, err
}

// authenticate is identify without Admit.
func (s *Server) authenticate(prefix []byte, now int64) (ident, error) {
	t := s.users.Load()
	id := ident{authID: [16]byte(prefix[:16])}
	if i, ts, ok := vmess.FindAuthID(t.keys, prefix); ok {
		a := t.accounts[i]
		id.acct, id.ts = a, ts
		if err := vmess.CheckTime(ts, now); err != nil {
			return id, fmt.Errorf("user %s: %w", a.label, err)
		}
		if s.authIDs.contains(id.authID, now) {
			return id, fmt.Errorf("%w (user %s): the first 16 bytes repeat a handshake seen in the last %d s; a replay, or a probe that captured one", ErrReplay, a.label, 2*vmess.MaxTimeSkew)
		}
		return id, nil
	}
	e, ok := t.legacy.lookup(prefix, now)
	if !ok {
		return id, ErrUnknownUser
	}
	a := t.accounts[e.acct]
	id.acct, id.legacy, id.ts = a, true, e.ts
	switch {
	case s.taint.has(id.authID):
		return id, fmt.Errorf(`%w: user %s: this legacy auth (one id, one second) already saw a replay or a bad request and is burned; legacy clients should move to VMessAEAD ("alterId": 0)`, ErrTainted, a.label)
	case int(e.id) > a.alterID:
		return id, fmt.Errorf(`%w: user %s: a legacy client signed with alter id #%d but the server's user has "alterId": %d; set the client's "alterId" to 0 to use VMessAEAD (recommended), or to at most %d`,
			ErrAlterIDMismatch, a.label, e.id, a.alterID, a.alterID)
	case !s.allowLegacy:
		return id, fmt.Errorf(`%w: user %s connected with the legacy MD5 header (client alterId > 0, or V2RAY_VMESS_AEAD_DISABLED=true); set the client's "alterId" to 0 (recommended), or allow legacy clients with "allowLegacy": true on the inbound or the environment variable V2RAY_VMESS_AEAD_FORCED=false`,
			ErrLegacyRefused, a.label)
	}
	return id, nil
}

// Match reports whether prefix opens a VMess request for one of the
// current users; it is a protocols.Matcher. It needs 16 bytes. A VMessAEAD
// AuthID matches when it opens under a user's key with a good checksum, a
// time within 120 s and has not been seen (it is not recorded: ServeConn
// does that); a legacy hash matches only when AllowLegacy is on; and
// either only when Options.Admit admits the user. A no carries the reason
// (unknown user, replay, clock skew, legacy refused, alterId mismatch,
// burned legacy auth, not admitted); the ones a real user can fix are
// also logged at warn level, at most once per user and reason every 10 s.
//
// A user Admit refuses must look like an unknown id from outside, and an
// unknown id is a no here, so Match asks Admit too (in identify, the one
// place ServeConn also goes through).
func (s *Server) Match(prefix []byte) (bool, error) {
	if len(prefix) < 16 {
		return false, protocols.ErrNeedMore
	}
	now := s.now().Unix()
	id, err := s.identify(prefix, now)
	if err != nil {
		s.warnFixable(id, err, now, "")
		return false, err
	}
	return true, nil
}

// warnFixable logs, at warn level and rate-limited, the refusals a user
// can fix: the others (unknown ids) are noise from scanners.
func (s *Server) warnFixable(id ident, err error, now int64, remote string) {
	var reason, msg string
	switch {
	case errors.Is(err, ErrLegacyRefused):
		reason, msg = "legacy", "vmess: refused a legacy (MD5 header) client: VMessAEAD is enforced"
	case errors.Is(err, ErrAlterIDMismatch):
		reason, msg = "alterId", "vmess: refused a legacy client: alterId mismatch"
	case errors.Is(err, vmess.ErrClockSkew):
		reason, msg = "clock", "vmess: refused a client whose clock is more than 120 s off"
	case errors.Is(err, ErrTainted):
		reason, msg = "tainted", "vmess: refused a burned legacy auth (taint fuse)"
	case errors.Is(err, ErrReplay):
		reason, msg = "replay", "vmess: refused a replayed handshake"
	default:
		return
	}
	label := ""
	if id.acct != nil {
		label = id.acct.label
	}
	if s.warns.allow(reason+"\x00"+label, now) {
		s.log.Warn(msg, "inbound", s.inbound, "user", label, "remote", remote, "err", err)
	}
}

// headerBufSize bounds the first read: a whole header (at most 374 bytes)
// and the first body chunks that come with it; the buffer it is read into
// becomes the tunnel's reader's until those chunks are used.
const headerBufSize = 16 << 10

// Every header fits the buffer: these fail to compile otherwise.
var (
	_ [headerBufSize - vmess.MaxAEADHeaderLen]byte
	_ [headerBufSize - vmess.MaxLegacyHeaderLen]byte
)

// errHeaderTooLong: the buffer is full and the codec still wants more. The
// codec bounds every header below headerBufSize, so this is a codec bug;
// reading on would spin (a read into no room returns nothing) until the
// deadline.
var errHeaderTooLong = fmt.Errorf("%w: no whole header within the read buffer", vmess.ErrBadHeader)

// ServeConn serves one carrier connection, following tunnel.Server's
// contract:
//
//   - Until a whole header from a known user has been read and checked —
//     unknown user, replayed AuthID, clock more than 120 s off, legacy
//     client refused, alterId mismatch, burned legacy auth, a user whom
//     Options.Admit refuses (ErrNotAdmitted, decided at byte 16 as an
//     unknown user is, without recording the AuthID), a header that
//     fails authentication or its checksum or does not parse, the
//     connection failing or ending mid-header — it returns an error
//     wrapping protocols.ErrNotProtocol (and the cause), having written
//     nothing and without closing conn. A legacy header that fails after
//     its auth matched burns that auth (V2Ray's taint fuse).
//   - Insecure security with DisableInsecureEncryption, UDP with security
//     zero (no chunks), or Mux: it closes conn and returns
//     ErrInsecureEncryption, ErrUDP or ErrMux.
//   - UDP (command 2): it calls h.HandlePacket with a tunnel.PacketConn
//     whose ReadPacket yields one request-body chunk per datagram (as
//     V2Ray's packet body) with the request's target, and whose WritePacket
//     seals one response chunk per reply; it closes conn and returns the
//     handler's error.
//   - ctx already done: it closes conn and returns ctx's error.
//   - Otherwise it calls h.HandleStream once, with a conn whose Read
//     decodes the request body and whose Write encodes the response (the
//     response header goes out with the first Write, in the same carrier
//     write; CloseWrite sends the end-of-stream chunk), makes sure conn
//     is closed, and returns the handler's error.
//
// It sets no deadline: the caller's handshake deadline, if any, bounds the
// header read, and the caller clears it afterwards.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, h tunnel.Handler) error {
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("vmess: %w", err)
	}
	// The header is read into a pooled buffer, which then holds the body
	// bytes that came with it until the tunnel's reader has used them.
	bp := bufpool.Large()
	hs, err := s.readHeader(conn, (*bp)[:headerBufSize])
	if err != nil {
		bufpool.Put(bp)
		s.log.Debug("vmess: not a VMess connection for this server", "inbound", s.inbound, "remote", remoteString(conn), "err", err)
		return err
	}
	acct, req := hs.id.acct, &hs.req
	log := s.log.With("inbound", s.inbound, "user", acct.label)
	switch {
	case s.noInsecure && req.Security.Insecure():
		log.Warn("vmess: refused a client with insecure encryption", "security", req.Security.String(), "options", byte(req.Options))
		conn.Close()
		return fmt.Errorf(`%w %q (user %s): this inbound has disableInsecureEncryption; set the client's "security" to "aes-128-gcm", "chacha20-poly1305" or "auto"`,
			ErrInsecureEncryption, req.Security, acct.label)
	case req.Command == vmess.CommandUDP && !req.Options.Has(vmess.OptionChunkStream):
		log.Warn("vmess: UDP without chunk framing (security zero) cannot carry datagrams", "target", req.Target.String())
		conn.Close()
		return fmt.Errorf("%w (user %s, target %v): the client's security is \"zero\", which has no chunks; use another", ErrUDP, acct.label, req.Target)
	case req.Command == vmess.CommandMux:
		log.Warn("vmess: mux not supported; turn the client's mux off", "remote", remoteString(conn))
		conn.Close()
		return fmt.Errorf("%w (user %s); turn mux off on the client", ErrMux, acct.label)
	}
	if err := ctx.Err(); err != nil {
		conn.Close()
		return fmt.Errorf("vmess: %w", err)
	}
	sess := req.Session(hs.id.legacy)
	c, err := newConn(conn, &sess, bp, hs.used, hs.n)
	if err != nil { // cannot happen: the header was checked
		conn.Close()
		return err
	}
	treq := tunnel.Request{
		Protocol:  "vmess",
		User:      acct.label,
		Network:   protocols.NetworkTCP,
		Target:    req.Target,
		Source:    remoteAddrPort(conn),
		Inbound:   s.inbound,
		Transport: s.transport,
	}
	if req.Command == vmess.CommandUDP {
		treq.Network = protocols.NetworkUDP
		log.Debug("vmess: UDP tunnel", "target", req.Target.String(), "security", req.Security.String(), "legacy", hs.id.legacy)
		pc := &packetConn{c: c, target: req.Target, max: c.maxPayload}
		err = h.HandlePacket(ctx, pc, treq)
		c.Close()
		if err != nil {
			return fmt.Errorf("vmess: UDP tunnel to %v for %s: %w", req.Target, acct.label, err)
		}
		return nil
	}
	log.Debug("vmess: tunnel", "target", req.Target.String(), "security", req.Security.String(), "legacy", hs.id.legacy)
	err = h.HandleStream(ctx, c, treq)
	c.Close() // the handler must have closed it; make sure
	if err != nil {
		return fmt.Errorf("vmess: tunnel to %v for %s: %w", req.Target, acct.label, err)
	}
	return nil
}

type handshake struct {
	id      ident
	req     vmess.Request
	used, n int // header bytes, bytes read into the buffer
}

// readHeader reads into buf until it holds a whole, checked request
// header. Every error wraps protocols.ErrNotProtocol.
func (s *Server) readHeader(conn net.Conn, buf []byte) (hs handshake, err error) {
	n := 0
	defer func() {
		if err != nil {
			// A read fills what buf has room for, so it may have taken
			// far more than the header: a drain counts it.
			err = &protocols.ReadBeforeRefusal{Err: err, N: n}
		}
	}()
	read := func() error {
		if n == len(buf) {
			return fmt.Errorf("%w (%d bytes)", errHeaderTooLong, n)
		}
		m, err := conn.Read(buf[n:])
		n += m
		if err != nil && m > 0 {
			err = nil // use the bytes; the error comes back on the next read
		}
		if err != nil {
			return fmt.Errorf("vmess: connection ended %d bytes into the header: %w", n, err)
		}
		return nil
	}
	for n < 16 {
		if err := read(); err != nil {
			return hs, notProtocol(err)
		}
	}
	now := s.now().Unix()
	hs.id, err = s.identify(buf[:16], now)
	if err != nil {
		s.warnFixable(hs.id, err, now, remoteString(conn))
		return hs, notProtocol(err)
	}
	a := hs.id.acct
	for {
		var used int
		if hs.id.legacy {
			hs.req, used, err = vmess.OpenLegacyRequest(a.key.CmdKey, hs.id.ts, buf[16:n])
			used += 16
		} else {
			hs.req, used, err = vmess.OpenAEADRequest(a.key, buf[:n])
		}
		if err == nil {
			hs.used, hs.n = used, n
			break
		}
		if err == protocols.ErrNeedMore {
			if err = read(); err == nil {
				continue
			}
		}
		err = fmt.Errorf("user %s: %w", a.label, err)
		if hs.id.legacy {
			s.taint.burn(hs.id.authID, hs.id.ts)
			err = fmt.Errorf("%w; legacy auth burned (taint fuse)", err)
		}
		return hs, notProtocol(err)
	}
	expire := hs.id.ts + vmess.MaxTimeSkew + 1 // after this the auth is out of the window anyway
	if hs.id.legacy {
		added, full := s.sessions.add(sessionKey{a.ids[0], hs.req.Key, hs.req.IV}, expire, now)
		if !added {
			s.taint.burn(hs.id.authID, hs.id.ts)
			if full {
				err = fmt.Errorf("%w (legacy sessions, user %s)", ErrReplayFilterFull, a.label)
			} else {
				err = fmt.Errorf("%w (user %s): a legacy header with a session key seen before; legacy auth burned (taint fuse)", ErrReplay, a.label)
			}
			s.warnFixable(hs.id, err, now, remoteString(conn))
			return hs, notProtocol(err)
		}
		return hs, nil
	}
	added, full := s.authIDs.add(hs.id.authID, expire, now)
	switch {
	case full:
		err = fmt.Errorf("%w (user %s)", ErrReplayFilterFull, a.label)
		if s.warns.allow("replay filter full", now) { // at most once per 10 s: a full filter means a flood
			s.log.Warn("vmess: replay filter full; refusing new connections until AuthIDs expire", "inbound", s.inbound, "user", a.label, "max", maxAuthIDs)
		}
		return hs, notProtocol(err)
	case !added:
		err = fmt.Errorf("%w (user %s): two connections raced with one AuthID", ErrReplay, a.label)
		s.warnFixable(hs.id, err, now, remoteString(conn))
		return hs, notProtocol(err)
	}
	return hs, nil
}

func notProtocol(cause error) error {
	return fmt.Errorf("%w: %w", protocols.ErrNotProtocol, cause)
}

// taintSet holds the burned legacy auths until they leave the window.
type taintSet struct {
	mu sync.Mutex
	m  map[[16]byte]int64 // auth -> its time
}

func (t *taintSet) burn(auth [16]byte, ts int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[[16]byte]int64)
	}
	if len(t.m) > 4096 { // forget the ones out of the window
		for k, v := range t.m {
			if v < ts-2*vmess.MaxTimeSkew {
				delete(t.m, k)
			}
		}
	}
	if len(t.m) < 1<<16 {
		t.m[auth] = ts
	}
}

func (t *taintSet) has(auth [16]byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.m[auth]
	return ok
}

// warnLimiter lets one warning per key through every 10 s.
type warnLimiter struct {
	mu   sync.Mutex
	last map[string]int64
}

func (w *warnLimiter) allow(key string, now int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = make(map[string]int64)
	}
	if t, ok := w.last[key]; ok && now-t < 10 && now >= t {
		return false
	}
	if len(w.last) > 1024 {
		clear(w.last)
	}
	w.last[key] = now
	return true
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
