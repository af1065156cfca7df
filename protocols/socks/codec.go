package socks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"github.com/portico-gw/portico/protocols"
)

// Message layouts. Every multi-byte number is big-endian; addresses use the
// SOCKS layout of [protocols.SOCKSAddr] (ATYP ‖ ADDR ‖ PORT).
//
//	greeting            client  VER=5 | NMETHODS | METHODS[NMETHODS]          RFC 1928 §3
//	method selection    server  VER=5 | METHOD                                RFC 1928 §3
//	user/pass request   client  VER=1 | ULEN | UNAME[ULEN] | PLEN | PASSWD    RFC 1929 §2
//	user/pass status    server  VER=1 | STATUS (0x00 success)                 RFC 1929 §2
//	request             client  VER=5 | CMD | RSV=0 | ATYP | DST.ADDR | DST.PORT  RFC 1928 §4
//	reply               server  VER=5 | REP | RSV=0 | ATYP | BND.ADDR | BND.PORT  RFC 1928 §6
const (
	Version5        = 0x05 // VER of greeting, method selection, request, reply (RFC 1928 §3)
	VersionUserPass = 0x01 // VER of the username/password sub-negotiation (RFC 1929 §2)
)

// Authentication methods (RFC 1928 §3).
const (
	MethodNoAuth       = 0x00 // NO AUTHENTICATION REQUIRED
	MethodUserPass     = 0x02 // USERNAME/PASSWORD (RFC 1929)
	MethodNoAcceptable = 0xFF // NO ACCEPTABLE METHODS: the client must close
)

// Username/password status codes (RFC 1929 §2: 0x00 is success, anything
// else is failure).
const (
	AuthSuccess = 0x00
	AuthFailure = 0x01
)

// Commands (RFC 1928 §4).
const (
	CmdConnect      = 0x01
	CmdBind         = 0x02
	CmdUDPAssociate = 0x03
)

// Reply codes, the REP field (RFC 1928 §6).
const (
	ReplySucceeded               = 0x00
	ReplyGeneralFailure          = 0x01 // general SOCKS server failure
	ReplyNotAllowed              = 0x02 // connection not allowed by ruleset
	ReplyNetworkUnreachable      = 0x03
	ReplyHostUnreachable         = 0x04
	ReplyConnectionRefused       = 0x05
	ReplyTTLExpired              = 0x06
	ReplyCommandNotSupported     = 0x07
	ReplyAddressTypeNotSupported = 0x08
)

// maxUserPassLen is the longest UNAME or PASSWD: one length byte (RFC 1929).
const maxUserPassLen = 255

// Errors of the codec and the handshakes. Parse errors other than
// [protocols.ErrNeedMore] wrap one of these, [protocols.ErrBadAddr], or are a
// [*VersionError].
var (
	ErrMalformed          = errors.New("socks: malformed message")
	ErrNoAcceptableMethod = errors.New("socks: no acceptable authentication method")
	ErrAuthFailed         = errors.New("socks: username/password authentication failed")
)

// VersionError reports a first byte that is not SOCKS version 5, such as a
// SOCKS4 client (version 4) or another protocol. It unwraps to
// [protocols.ErrNotProtocol]: the server returns it before writing a byte.
type VersionError struct {
	Version byte // the VER byte received
}

func (e *VersionError) Error() string {
	return "socks: unsupported version " + strconv.Itoa(int(e.Version))
}

// Unwrap returns [protocols.ErrNotProtocol].
func (e *VersionError) Unwrap() error { return protocols.ErrNotProtocol }

// ReplyError is the error [Dial] returns when the proxy answers a request
// with a reply code other than [ReplySucceeded]. Code [ReplyNotAllowed]
// unwraps to [protocols.ErrBlocked].
type ReplyError struct {
	Code byte // the REP field
}

func (e *ReplyError) Error() string {
	return "socks: proxy replied " + strconv.Itoa(int(e.Code)) + " (" + ReplyText(e.Code) + ")"
}

// Unwrap returns [protocols.ErrBlocked] for [ReplyNotAllowed], nil otherwise.
func (e *ReplyError) Unwrap() error {
	if e.Code == ReplyNotAllowed {
		return protocols.ErrBlocked
	}
	return nil
}

// ReplyText is the RFC 1928 §6 meaning of a reply code.
func ReplyText(code byte) string {
	switch code {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetworkUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyConnectionRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCommandNotSupported:
		return "command not supported"
	case ReplyAddressTypeNotSupported:
		return "address type not supported"
	}
	return "unassigned"
}

// ReplyCode maps the outcome of an outbound dial to the reply code the
// server sends: nil is [ReplySucceeded]; [protocols.ErrBlocked] is
// [ReplyNotAllowed]; a timeout (context deadline, I/O deadline, ETIMEDOUT)
// is [ReplyTTLExpired]; ECONNREFUSED is [ReplyConnectionRefused];
// ENETUNREACH is [ReplyNetworkUnreachable]; EHOSTUNREACH or a DNS failure is
// [ReplyHostUnreachable]; anything else is [ReplyGeneralFailure].
func ReplyCode(err error) byte {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return ReplySucceeded
	case errors.Is(err, protocols.ErrBlocked):
		return ReplyNotAllowed
	case isTimeout(err):
		return ReplyTTLExpired
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.As(err, &dnsErr):
		return ReplyHostUnreachable
	}
	return ReplyGeneralFailure
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// ParseGreeting decodes a client greeting. methods aliases b.
func ParseGreeting(b []byte) (methods []byte, n int, err error) {
	if len(b) < 1 {
		return nil, 0, protocols.ErrNeedMore
	}
	if b[0] != Version5 {
		return nil, 0, &VersionError{Version: b[0]}
	}
	if len(b) < 2 {
		return nil, 0, protocols.ErrNeedMore
	}
	n = 2 + int(b[1])
	if len(b) < n {
		return nil, 0, protocols.ErrNeedMore
	}
	return b[2:n:n], n, nil
}

// AppendGreeting appends a greeting offering methods (1 to 255 of them).
func AppendGreeting(b []byte, methods ...byte) ([]byte, error) {
	if len(methods) == 0 || len(methods) > 255 {
		return b, fmt.Errorf("%w: greeting with %d methods", ErrMalformed, len(methods))
	}
	b = append(b, Version5, byte(len(methods)))
	return append(b, methods...), nil
}

// ParseMethodSelection decodes the server's choice of method.
func ParseMethodSelection(b []byte) (method byte, n int, err error) {
	if len(b) < 1 {
		return 0, 0, protocols.ErrNeedMore
	}
	if b[0] != Version5 {
		return 0, 0, &VersionError{Version: b[0]}
	}
	if len(b) < 2 {
		return 0, 0, protocols.ErrNeedMore
	}
	return b[1], 2, nil
}

// AppendMethodSelection appends the server's choice of method.
func AppendMethodSelection(b []byte, method byte) []byte {
	return append(b, Version5, method)
}

// ParseUserPass decodes an RFC 1929 username/password request. Empty names
// and passwords are decoded as sent; the server decides whether they match.
func ParseUserPass(b []byte) (user, pass string, n int, err error) {
	if len(b) < 1 {
		return "", "", 0, protocols.ErrNeedMore
	}
	if b[0] != VersionUserPass {
		return "", "", 0, fmt.Errorf("%w: username/password version %d", ErrMalformed, b[0])
	}
	if len(b) < 2 {
		return "", "", 0, protocols.ErrNeedMore
	}
	ulen := int(b[1])
	if len(b) < 2+ulen+1 {
		return "", "", 0, protocols.ErrNeedMore
	}
	plen := int(b[2+ulen])
	n = 2 + ulen + 1 + plen
	if len(b) < n {
		return "", "", 0, protocols.ErrNeedMore
	}
	return string(b[2 : 2+ulen]), string(b[3+ulen : n]), n, nil
}

// AppendUserPass appends an RFC 1929 username/password request. Each of user
// and pass is at most 255 bytes.
func AppendUserPass(b []byte, user, pass string) ([]byte, error) {
	if len(user) > maxUserPassLen || len(pass) > maxUserPassLen {
		return b, fmt.Errorf("%w: username or password longer than %d bytes", ErrMalformed, maxUserPassLen)
	}
	b = append(b, VersionUserPass, byte(len(user)))
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...), nil
}

// ParseAuthStatus decodes the server's RFC 1929 status.
func ParseAuthStatus(b []byte) (status byte, n int, err error) {
	if len(b) < 1 {
		return 0, 0, protocols.ErrNeedMore
	}
	if b[0] != VersionUserPass {
		return 0, 0, fmt.Errorf("%w: username/password status version %d", ErrMalformed, b[0])
	}
	if len(b) < 2 {
		return 0, 0, protocols.ErrNeedMore
	}
	return b[1], 2, nil
}

// AppendAuthStatus appends the server's RFC 1929 status.
func AppendAuthStatus(b []byte, status byte) []byte {
	return append(b, VersionUserPass, status)
}

// ParseRequest decodes a client request. The reserved byte is not checked.
// dst is decoded faithfully: a domain that spells an IP stays a domain (see
// [protocols.DomainAddr] to normalise it). An unknown address type gives an
// error wrapping [protocols.ErrBadAddr].
func ParseRequest(b []byte) (cmd byte, dst protocols.Addr, n int, err error) {
	if len(b) < 1 {
		return 0, protocols.Addr{}, 0, protocols.ErrNeedMore
	}
	if b[0] != Version5 {
		return 0, protocols.Addr{}, 0, &VersionError{Version: b[0]}
	}
	if len(b) < 3 {
		return 0, protocols.Addr{}, 0, protocols.ErrNeedMore
	}
	dst, an, err := protocols.SOCKSAddr.Parse(b[3:])
	if err != nil {
		return 0, protocols.Addr{}, 0, err
	}
	return b[1], dst, 3 + an, nil
}

// AppendRequest appends a client request for cmd to dst.
func AppendRequest(b []byte, cmd byte, dst protocols.Addr) ([]byte, error) {
	out, err := protocols.SOCKSAddr.Append(append(b, Version5, cmd, 0), dst)
	if err != nil {
		return b, err
	}
	return out, nil
}

// ParseReply decodes a server reply.
func ParseReply(b []byte) (rep byte, bind protocols.Addr, n int, err error) {
	if len(b) < 1 {
		return 0, protocols.Addr{}, 0, protocols.ErrNeedMore
	}
	if b[0] != Version5 {
		return 0, protocols.Addr{}, 0, &VersionError{Version: b[0]}
	}
	if len(b) < 3 {
		return 0, protocols.Addr{}, 0, protocols.ErrNeedMore
	}
	bind, an, err := protocols.SOCKSAddr.Parse(b[3:])
	if err != nil {
		return 0, protocols.Addr{}, 0, err
	}
	return b[1], bind, 3 + an, nil
}

// zeroBind is BND.ADDR 0.0.0.0, BND.PORT 0: "no address to report".
var zeroBind = protocols.Addr{IP: netip.IPv4Unspecified()}

// AppendReply appends a server reply with code rep. A bind address that
// cannot be encoded (the zero Addr, a domain over 255 bytes) is sent as
// 0.0.0.0:0, which clients read as "no address to report".
func AppendReply(b []byte, rep byte, bind protocols.Addr) []byte {
	if protocols.SOCKSAddr.Len(bind) < 0 {
		bind = zeroBind
	}
	out, err := protocols.SOCKSAddr.Append(append(b, Version5, rep, 0), bind)
	if err != nil { // unreachable: Len accepted bind
		out, _ = protocols.SOCKSAddr.Append(append(b, Version5, rep, 0), zeroBind)
	}
	return out
}

// UDP request header (RFC 1928 §7), in front of every datagram between a
// client and the server's UDP relay, both ways:
//
//	+-----+------+------+----------+----------+----------+
//	| RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//	+-----+------+------+----------+----------+----------+
//	|  2  |  1   |  1   | Variable |    2     | Variable |
//	+-----+------+------+----------+----------+----------+
//
//	RSV   reserved, X'0000'
//	FRAG  fragment number; X'00' is a standalone datagram. Portico does not
//	      reassemble (RFC 1928 §7 makes it optional) and drops the others.
//	ATYP, DST.ADDR, DST.PORT   as in a request ([protocols.SOCKSAddr]): the
//	      destination from the client, the source in a reply.

// MaxUDPHeaderLen is the longest UDP request header (a 255-byte domain).
const MaxUDPHeaderLen = 2 + 1 + 1 + 1 + protocols.MaxDomainLen + 2

// ParseUDPHeader decodes the UDP request header at the start of a datagram;
// the data is b[n:]. dst is decoded faithfully (see [ParseRequest]). A
// datagram too short for its header gives [protocols.ErrNeedMore] (for a
// datagram, that means truncated); a non-zero RSV gives an error wrapping
// [ErrMalformed]; an unknown address type one wrapping
// [protocols.ErrBadAddr]. frag is returned as sent: the caller drops
// fragments.
func ParseUDPHeader(b []byte) (frag byte, dst protocols.Addr, n int, err error) {
	if len(b) < 3 {
		return 0, protocols.Addr{}, 0, protocols.ErrNeedMore
	}
	if b[0] != 0 || b[1] != 0 {
		return 0, protocols.Addr{}, 0, fmt.Errorf("%w: UDP header RSV %#02x%02x, want 0", ErrMalformed, b[0], b[1])
	}
	dst, an, err := protocols.SOCKSAddr.Parse(b[3:])
	if err != nil {
		if err == protocols.ErrNeedMore {
			return 0, protocols.Addr{}, 0, err
		}
		return 0, protocols.Addr{}, 0, fmt.Errorf("socks: UDP header: %w", err)
	}
	return b[2], dst, 3 + an, nil
}

// AppendUDPHeader appends a UDP request header for addr (the destination
// from a client, the source in a server's reply) with fragment number frag
// (0 for a whole datagram); the caller appends the data. It fails, leaving b
// unchanged, when addr cannot be encoded.
func AppendUDPHeader(b []byte, frag byte, addr protocols.Addr) ([]byte, error) {
	out, err := protocols.SOCKSAddr.Append(append(b, 0, 0, frag), addr)
	if err != nil {
		return b, fmt.Errorf("socks: UDP header: %w", err)
	}
	return out, nil
}
