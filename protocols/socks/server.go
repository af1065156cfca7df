package socks

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/internal/dialreply"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// handshakeTimeout bounds the whole server handshake, greeting to request,
// unless Server.HandshakeTimeout says.
const handshakeTimeout = 30 * time.Second

// aLongTimeAgo is a deadline in the past, to unblock I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// Server is a SOCKS5 server (RFC 1928) for the CONNECT and UDP ASSOCIATE
// commands. The zero
// Server accepts clients without authentication.
//
// A Server is a plain value and is safe for concurrent use as long as its
// fields are not modified.
type Server struct {
	// Users maps usernames to passwords. When it is not empty, clients must
	// authenticate with username/password (RFC 1929); when it is empty, only
	// "no authentication" is accepted.
	Users map[string]string
	// Inbound is the tag put in every Request, for routing and counters.
	Inbound string
	// Log receives a debug record per request, a warning per failed
	// authentication and one per UDP association that sent fragments; nil
	// means no logging.
	Log *slog.Logger
	// HandshakeTimeout bounds the handshake, greeting to request; zero
	// means 30 seconds.
	HandshakeTimeout time.Duration
}

var _ tunnel.Server = (*Server)(nil)

// ServeConn runs the SOCKS5 server handshake on conn and, for a CONNECT,
// calls h.HandleStream once with a Request{User, Network: TCP, Target,
// Source, Inbound, Transport: "socks"}. User is the authenticated username,
// or "" without authentication.
//
// The conn given to the handler implements [tunnel.DialReporter] and
// writes the SOCKS reply lazily, so that the client only hears "succeeded"
// once the outbound dial worked:
//
//   - ReportDial(nil) writes the success reply (BND.ADDR 0.0.0.0:0).
//   - ReportDial(err) writes the failure reply chosen by [ReplyCode]
//     (0x02 for [protocols.ErrBlocked], 0x06 for timeouts, 0x05 for
//     connection refused, 0x04 host unreachable, 0x01 otherwise); Read and
//     Write then fail.
//   - A handler that never calls ReportDial gets the success reply written
//     before its first Read, Write or CloseWrite; if it returns without any
//     of these, ServeConn replies according to the returned error.
//
// Bytes the client pipelined after the request are not lost: the handler
// reads them first.
//
// A UDP ASSOCIATE is answered with the address of a UDP relay socket
// opened on conn's local IP; the first datagram from the client's IP (FRAG
// 0; fragments are dropped) sets Request.Target and h.HandlePacket is
// called with Network UDP and a [tunnel.PacketConn] whose ReadPacket yields
// (payload, destination) and whose WritePacket(payload, from) answers the
// client. The association ends when conn closes, the handler returns, or
// no datagram came within [UDPFirstPacketTimeout].
//
// BIND and unknown commands are answered with reply 0x07
// (command not supported), an unknown address type with 0x08. A first byte
// other than 5 (SOCKS4, or another protocol) gives a [*VersionError], which
// wraps [protocols.ErrNotProtocol]: in that case, as the [tunnel.Server]
// contract asks, nothing was written and conn is left open for the caller.
// In every other case conn is closed when ServeConn returns. The handshake
// must complete within HandshakeTimeout (30 seconds by default);
// cancelling ctx aborts it.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, h tunnel.Handler) error {
	wait := s.HandshakeTimeout
	if wait <= 0 {
		wait = handshakeTimeout
	}
	_ = conn.SetDeadline(time.Now().Add(wait))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	req, cmd, replay, err := s.handshake(conn)
	if stopped := stop(); ctx.Err() != nil && (err != nil || !stopped) && !errors.Is(err, protocols.ErrNotProtocol) {
		err = fmt.Errorf("socks: handshake: %w", context.Cause(ctx))
	}
	if err != nil {
		if errors.Is(err, protocols.ErrNotProtocol) {
			_ = conn.SetDeadline(time.Time{}) // handed back untouched
		} else {
			_ = conn.Close()
		}
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	if cmd == CmdUDPAssociate {
		return s.serveUDP(ctx, conn, req, h)
	}

	s.logger().Debug("socks request", "user", req.User, "target", req.Target.String(), "source", req.Source.String())
	st := dialreply.New("socks", conn, replay, func(err error) []byte {
		return AppendReply(nil, ReplyCode(err), zeroBind)
	})
	err = h.HandleStream(ctx, st, req)
	st.Finish(err)
	if err != nil {
		return fmt.Errorf("socks: stream to %v: %w", req.Target, err)
	}
	return nil
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// handshake reads the greeting, authenticates, and reads a CONNECT or UDP
// ASSOCIATE request. It returns the request, the command and the bytes read
// past it. For UDP ASSOCIATE, Target is the address the client said it
// will send from (often 0.0.0.0:0).
func (s *Server) handshake(conn net.Conn) (tunnel.Request, byte, []byte, error) {
	hr := handshakeReader{conn: conn}

	var methods []byte
	err := hr.next(func(b []byte) (n int, err error) {
		methods, n, err = ParseGreeting(b)
		return n, err
	})
	if err != nil {
		var ve *VersionError
		if errors.As(err, &ve) {
			return tunnel.Request{}, 0, nil, err // nothing written; conn stays open
		}
		return tunnel.Request{}, 0, nil, fmt.Errorf("socks: read greeting: %w", err)
	}

	method := byte(MethodNoAuth)
	if len(s.Users) > 0 {
		method = MethodUserPass
	}
	if !slices.Contains(methods, method) {
		_, _ = conn.Write(AppendMethodSelection(nil, MethodNoAcceptable))
		return tunnel.Request{}, 0, nil, fmt.Errorf("%w: client offered %v", ErrNoAcceptableMethod, methods)
	}
	if _, err := conn.Write(AppendMethodSelection(nil, method)); err != nil {
		return tunnel.Request{}, 0, nil, fmt.Errorf("socks: write method selection: %w", err)
	}

	var user string
	if method == MethodUserPass {
		var pass string
		err := hr.next(func(b []byte) (n int, err error) {
			user, pass, n, err = ParseUserPass(b)
			return n, err
		})
		if err != nil {
			return tunnel.Request{}, 0, nil, fmt.Errorf("socks: read username/password: %w", err)
		}
		if !s.checkUser(user, pass) {
			_, _ = conn.Write(AppendAuthStatus(nil, AuthFailure))
			s.logger().Warn("socks authentication failed", "user", user, "source", conn.RemoteAddr().String())
			return tunnel.Request{}, 0, nil, fmt.Errorf("%w for user %q", ErrAuthFailed, user)
		}
		if _, err := conn.Write(AppendAuthStatus(nil, AuthSuccess)); err != nil {
			return tunnel.Request{}, 0, nil, fmt.Errorf("socks: write username/password status: %w", err)
		}
	}

	var (
		cmd byte
		dst protocols.Addr
	)
	err = hr.next(func(b []byte) (n int, err error) {
		cmd, dst, n, err = ParseRequest(b)
		return n, err
	})
	if err != nil {
		var ve *VersionError
		switch {
		case errors.As(err, &ve):
			// Not ErrNotProtocol any more: bytes were written.
			err = fmt.Errorf("%w: request version %d", ErrMalformed, ve.Version)
			_, _ = conn.Write(AppendReply(nil, ReplyGeneralFailure, zeroBind))
		case errors.Is(err, protocols.ErrBadAddr):
			rep := byte(ReplyGeneralFailure)
			if p := hr.unread(); len(p) > 3 && !isAddrType(p[3]) {
				rep = ReplyAddressTypeNotSupported
			}
			_, _ = conn.Write(AppendReply(nil, rep, zeroBind))
		}
		return tunnel.Request{}, 0, nil, fmt.Errorf("socks: read request: %w", err)
	}
	if cmd != CmdConnect && cmd != CmdUDPAssociate {
		_, _ = conn.Write(AppendReply(nil, ReplyCommandNotSupported, zeroBind))
		return tunnel.Request{}, 0, nil, fmt.Errorf("socks: command %d not supported", cmd)
	}
	target, err := normalizeTarget(dst)
	if err != nil {
		_, _ = conn.Write(AppendReply(nil, ReplyHostUnreachable, zeroBind))
		return tunnel.Request{}, 0, nil, fmt.Errorf("socks: read request: %w", err)
	}

	network := protocols.NetworkTCP
	if cmd == CmdUDPAssociate {
		network = protocols.NetworkUDP
	}
	return tunnel.Request{
		Protocol:  "socks",
		User:      user,
		Network:   network,
		Target:    target,
		Source:    sourceOf(conn),
		Inbound:   s.Inbound,
		Transport: "socks",
	}, cmd, hr.rest(), nil
}

func isAddrType(atyp byte) bool {
	c := protocols.SOCKSAddr
	return atyp == c.IPv4 || atyp == c.Domain || atyp == c.IPv6
}

func (s *Server) checkUser(user, pass string) bool {
	want, ok := s.Users[user]
	// Compare even for an unknown user, so timing says little about names.
	eq := subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
	return ok && eq
}

// normalizeTarget gives dst the form [protocols.Addr] promises: an IP
// literal sent as a domain becomes an IP, an IPv4-mapped IPv6 address is
// unmapped, and names no resolver would accept (control bytes, slashes,
// colons) are refused.
func normalizeTarget(dst protocols.Addr) (protocols.Addr, error) {
	if dst.Domain == "" {
		dst.IP = dst.IP.Unmap()
		return dst, nil
	}
	a := protocols.DomainAddr(dst.Domain, dst.Port)
	if a.Domain == "" {
		return a, nil
	}
	return protocols.ParseAddr(a.String())
}

// sourceOf is the client's address, or the zero AddrPort when conn's remote
// address is not an IP (a pipe, a Unix socket).
func sourceOf(conn net.Conn) netip.AddrPort {
	switch ra := conn.RemoteAddr().(type) {
	case nil:
		return netip.AddrPort{}
	case *net.TCPAddr:
		ap := ra.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	default:
		ap, err := netip.ParseAddrPort(ra.String())
		if err != nil {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
}

// handshakeReader reads handshake messages into a fixed buffer and parses
// them with the codec. The buffer holds the largest message (an RFC 1929
// request, 513 bytes) with room to spare, so a handshake never allocates
// more than this however the client misbehaves. Bytes read past the last
// message are handed on by rest.
type handshakeReader struct {
	conn net.Conn
	buf  [1024]byte
	r, w int   // unparsed bytes are buf[r:w]
	err  error // sticky read error
}

// next parses one message with parse, reading until it has enough bytes.
func (hr *handshakeReader) next(parse func([]byte) (int, error)) error {
	for {
		n, err := parse(hr.buf[hr.r:hr.w])
		if err == nil {
			hr.r += n
			return nil
		}
		if !errors.Is(err, protocols.ErrNeedMore) {
			return err
		}
		if hr.err != nil {
			if errors.Is(hr.err, io.EOF) && hr.w > hr.r {
				return io.ErrUnexpectedEOF
			}
			return hr.err
		}
		if hr.r > 0 {
			hr.w = copy(hr.buf[:], hr.buf[hr.r:hr.w])
			hr.r = 0
		}
		if hr.w == len(hr.buf) { // cannot happen: every message fits
			return fmt.Errorf("%w: message longer than %d bytes", ErrMalformed, len(hr.buf))
		}
		m, err := hr.conn.Read(hr.buf[hr.w:])
		hr.w += m
		hr.err = err
	}
}

// unread is what the last failed next left unparsed.
func (hr *handshakeReader) unread() []byte { return hr.buf[hr.r:hr.w] }

// rest returns a copy of the bytes read past the last message.
func (hr *handshakeReader) rest() []byte {
	if hr.r == hr.w {
		return nil
	}
	return slices.Clone(hr.buf[hr.r:hr.w])
}
