package socks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/portico-gw/portico/protocols"
)

// Dial runs the SOCKS5 client handshake for a CONNECT to dst on proxyConn,
// an established connection to a SOCKS5 proxy. With a non-empty user it
// offers both "no authentication" and username/password (RFC 1929, user and
// pass at most 255 bytes each); with an empty user only the former.
//
// On success proxyConn is a byte stream to dst. Dial reads exactly the
// proxy's messages, never payload. A refusal by the proxy is a
// [*ReplyError] carrying the reply code; [ErrNoAcceptableMethod] and
// [ErrAuthFailed] report a failed negotiation. When ctx ends first (deadline
// or cancellation) the error wraps its cause; Dial interrupts I/O by setting
// a past deadline on proxyConn and clears the deadline before returning.
// Dial never closes proxyConn: that stays with the caller.
func Dial(ctx context.Context, proxyConn net.Conn, dst protocols.Addr, user, pass string) error {
	_, err := clientHandshake(ctx, proxyConn, CmdConnect, dst, user, pass)
	return err
}

// clientHandshake runs the client handshake for cmd and returns the
// reply's BND address.
func clientHandshake(ctx context.Context, proxyConn net.Conn, cmd byte, dst protocols.Addr, user, pass string) (bind protocols.Addr, err error) {
	// ctx's deadline and cancellation both end up here, after ctx.Err is set.
	stop := context.AfterFunc(ctx, func() { _ = proxyConn.SetDeadline(aLongTimeAgo) })
	defer func() {
		stop()
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("socks: dial %v: %w", dst, context.Cause(ctx))
		}
		_ = proxyConn.SetDeadline(time.Time{})
	}()

	methods := []byte{MethodNoAuth}
	if user != "" {
		methods = append(methods, MethodUserPass)
	}
	b, err := AppendGreeting(make([]byte, 0, 512), methods...)
	if err != nil {
		return protocols.Addr{}, err
	}
	if _, err := proxyConn.Write(b); err != nil {
		return protocols.Addr{}, fmt.Errorf("socks: write greeting: %w", err)
	}
	var buf [4 + 1 + protocols.MaxDomainLen + 2]byte // the longest reply
	if _, err := io.ReadFull(proxyConn, buf[:2]); err != nil {
		return protocols.Addr{}, fmt.Errorf("socks: read method selection: %w", err)
	}
	method, _, err := ParseMethodSelection(buf[:2])
	if err != nil {
		return protocols.Addr{}, fmt.Errorf("socks: read method selection: %w", err)
	}
	switch {
	case method == MethodUserPass && user != "":
		b, err := AppendUserPass(b[:0], user, pass)
		if err != nil {
			return protocols.Addr{}, err
		}
		if _, err := proxyConn.Write(b); err != nil {
			return protocols.Addr{}, fmt.Errorf("socks: write username/password: %w", err)
		}
		if _, err := io.ReadFull(proxyConn, buf[:2]); err != nil {
			return protocols.Addr{}, fmt.Errorf("socks: read username/password status: %w", err)
		}
		status, _, err := ParseAuthStatus(buf[:2])
		if err != nil {
			return protocols.Addr{}, fmt.Errorf("socks: read username/password status: %w", err)
		}
		if status != AuthSuccess {
			return protocols.Addr{}, fmt.Errorf("%w for user %q", ErrAuthFailed, user)
		}
	case method == MethodNoAuth:
	case method == MethodNoAcceptable:
		return protocols.Addr{}, ErrNoAcceptableMethod
	default:
		return protocols.Addr{}, fmt.Errorf("%w: proxy chose method %#x, which was not offered", ErrMalformed, method)
	}

	b, err = AppendRequest(b[:0], cmd, dst)
	if err != nil {
		return protocols.Addr{}, fmt.Errorf("socks: dial %v: %w", dst, err)
	}
	if _, err := proxyConn.Write(b); err != nil {
		return protocols.Addr{}, fmt.Errorf("socks: write request: %w", err)
	}
	// VER REP RSV ATYP and the first address byte tell the reply's length.
	if _, err := io.ReadFull(proxyConn, buf[:5]); err != nil {
		return protocols.Addr{}, fmt.Errorf("socks: read reply: %w", err)
	}
	n := 0
	switch buf[3] {
	case protocols.SOCKSAddr.IPv4:
		n = 4 + 4 + 2
	case protocols.SOCKSAddr.IPv6:
		n = 4 + 16 + 2
	case protocols.SOCKSAddr.Domain:
		n = 4 + 1 + int(buf[4]) + 2
	}
	if n > 5 {
		if _, err := io.ReadFull(proxyConn, buf[5:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // mid-reply
			}
			return protocols.Addr{}, fmt.Errorf("socks: read reply: %w", err)
		}
	}
	rep, bind, _, err := ParseReply(buf[:max(n, 5)])
	if err != nil {
		if errors.Is(err, protocols.ErrNeedMore) { // an empty domain
			err = fmt.Errorf("%w: truncated reply", ErrMalformed)
		}
		return protocols.Addr{}, fmt.Errorf("socks: read reply: %w", err)
	}
	if rep != ReplySucceeded {
		return protocols.Addr{}, &ReplyError{Code: rep}
	}
	return bind, nil
}
