package socks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

var (
	v4     = protocols.Addr{IP: netip.MustParseAddr("192.0.2.7"), Port: 443}
	v6     = protocols.Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 8080}
	domain = protocols.Addr{Domain: "example.com", Port: 80}
)

func hexBytes(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case int:
			b = append(b, byte(p))
		case byte:
			b = append(b, p)
		case string:
			b = append(b, p...)
		case []byte:
			b = append(b, p...)
		default:
			panic(fmt.Sprintf("hexBytes: %T", p))
		}
	}
	return b
}

func TestParseGreeting(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		methods []byte
		n       int
		err     error
	}{
		{"no auth", hexBytes(5, 1, 0), []byte{0}, 3, nil},
		{"two methods", hexBytes(5, 2, 0, 2), []byte{0, 2}, 4, nil},
		{"trailing bytes kept", hexBytes(5, 1, 2, 5, 1), []byte{2}, 3, nil},
		{"zero methods", hexBytes(5, 0), []byte{}, 2, nil},
		{"empty", nil, nil, 0, protocols.ErrNeedMore},
		{"short methods", hexBytes(5, 3, 0, 1), nil, 0, protocols.ErrNeedMore},
		{"socks4", hexBytes(4, 1, 0, 80, 127, 0, 0, 1, 0), nil, 0, protocols.ErrNotProtocol},
		{"http", []byte("GET / HTTP/1.1\r\n"), nil, 0, protocols.ErrNotProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			methods, n, err := ParseGreeting(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if !bytes.Equal(methods, tt.methods) || n != tt.n {
				t.Errorf("got methods %v n %d, want %v %d", methods, n, tt.methods, tt.n)
			}
		})
	}
}

func TestVersionError(t *testing.T) {
	_, _, err := ParseGreeting([]byte{4, 1})
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Version != 4 {
		t.Fatalf("err = %#v, want *VersionError{4}", err)
	}
	if got := err.Error(); got != "socks: unsupported version 4" {
		t.Errorf("message %q", got)
	}
}

func TestAppendGreeting(t *testing.T) {
	b, err := AppendGreeting([]byte("x"), MethodNoAuth, MethodUserPass)
	if err != nil || !bytes.Equal(b, hexBytes("x", 5, 2, 0, 2)) {
		t.Fatalf("got %v, %v", b, err)
	}
	if _, err := AppendGreeting(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("no methods: err = %v", err)
	}
	if _, err := AppendGreeting(nil, make([]byte, 256)...); !errors.Is(err, ErrMalformed) {
		t.Errorf("256 methods: err = %v", err)
	}
}

func TestMethodSelection(t *testing.T) {
	for _, m := range []byte{MethodNoAuth, MethodUserPass, MethodNoAcceptable} {
		b := AppendMethodSelection(nil, m)
		got, n, err := ParseMethodSelection(b)
		if err != nil || got != m || n != 2 {
			t.Errorf("method %#x: got %#x %d %v", m, got, n, err)
		}
	}
	if _, _, err := ParseMethodSelection([]byte{4, 0}); !errors.Is(err, protocols.ErrNotProtocol) {
		t.Errorf("version 4: err = %v", err)
	}
}

func TestParseUserPass(t *testing.T) {
	long := strings.Repeat("u", 255)
	tests := []struct {
		name       string
		in         []byte
		user, pass string
		n          int
		err        error
	}{
		{"alice", hexBytes(1, 5, "alice", 6, "secret"), "alice", "secret", 14, nil},
		{"empty password", hexBytes(1, 3, "bob", 0), "bob", "", 6, nil},
		{"empty user", hexBytes(1, 0, 1, "p"), "", "p", 4, nil},
		{"longest", hexBytes(1, 255, long, 255, long), long, long, 513, nil},
		{"trailing", hexBytes(1, 1, "a", 1, "b", 5, 1, 0), "a", "b", 5, nil},
		{"bad version", hexBytes(5, 1, "a", 1, "b"), "", "", 0, ErrMalformed},
		{"empty", nil, "", "", 0, protocols.ErrNeedMore},
		{"short user", hexBytes(1, 5, "ali"), "", "", 0, protocols.ErrNeedMore},
		{"no plen", hexBytes(1, 5, "alice"), "", "", 0, protocols.ErrNeedMore},
		{"short pass", hexBytes(1, 1, "a", 4, "pa"), "", "", 0, protocols.ErrNeedMore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass, n, err := ParseUserPass(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if user != tt.user || pass != tt.pass || n != tt.n {
				t.Errorf("got %q %q %d, want %q %q %d", user, pass, n, tt.user, tt.pass, tt.n)
			}
		})
	}
}

func TestAppendUserPass(t *testing.T) {
	b, err := AppendUserPass(nil, "alice", "secret")
	if err != nil || !bytes.Equal(b, hexBytes(1, 5, "alice", 6, "secret")) {
		t.Fatalf("got %q, %v", b, err)
	}
	if _, err := AppendUserPass(nil, strings.Repeat("u", 256), "p"); !errors.Is(err, ErrMalformed) {
		t.Errorf("long user: err = %v", err)
	}
	if _, err := AppendUserPass(nil, "u", strings.Repeat("p", 256)); !errors.Is(err, ErrMalformed) {
		t.Errorf("long pass: err = %v", err)
	}
}

func TestAuthStatus(t *testing.T) {
	for _, s := range []byte{AuthSuccess, AuthFailure} {
		got, n, err := ParseAuthStatus(AppendAuthStatus(nil, s))
		if err != nil || got != s || n != 2 {
			t.Errorf("status %d: got %d %d %v", s, got, n, err)
		}
	}
	if _, _, err := ParseAuthStatus([]byte{5, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad version: err = %v", err)
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		cmd  byte
		dst  protocols.Addr
		n    int
		err  error
	}{
		{"connect ipv4", hexBytes(5, 1, 0, 1, 192, 0, 2, 7, 1, 187), CmdConnect, v4, 10, nil},
		{"connect ipv6", hexBytes(5, 1, 0, 4, v6.IP.AsSlice(), 0x1f, 0x90), CmdConnect, v6, 22, nil},
		{"connect domain", hexBytes(5, 1, 0, 3, 11, "example.com", 0, 80), CmdConnect, domain, 18, nil},
		{"udp associate", hexBytes(5, 3, 0, 1, 0, 0, 0, 0, 0, 0), CmdUDPAssociate,
			protocols.Addr{IP: netip.IPv4Unspecified()}, 10, nil},
		{"bind", hexBytes(5, 2, 0, 1, 192, 0, 2, 7, 1, 187), CmdBind, v4, 10, nil},
		{"reserved byte ignored", hexBytes(5, 1, 9, 1, 192, 0, 2, 7, 1, 187), CmdConnect, v4, 10, nil},
		{"ip literal domain kept", hexBytes(5, 1, 0, 3, 9, "127.0.0.1", 0, 80), CmdConnect,
			protocols.Addr{Domain: "127.0.0.1", Port: 80}, 16, nil},
		{"trailing payload", hexBytes(5, 1, 0, 1, 192, 0, 2, 7, 1, 187, "GET /"), CmdConnect, v4, 10, nil},
		{"unknown address type", hexBytes(5, 1, 0, 2, 1, 2, 3, 4, 0, 80), 0, protocols.Addr{}, 0, protocols.ErrBadAddr},
		{"empty domain", hexBytes(5, 1, 0, 3, 0, 0, 80), 0, protocols.Addr{}, 0, protocols.ErrBadAddr},
		{"version 4", hexBytes(4, 1, 0, 80, 127, 0, 0, 1, 0), 0, protocols.Addr{}, 0, protocols.ErrNotProtocol},
		{"short", hexBytes(5, 1), 0, protocols.Addr{}, 0, protocols.ErrNeedMore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, dst, n, err := ParseRequest(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if cmd != tt.cmd || dst != tt.dst || n != tt.n {
				t.Errorf("got %d %v %d, want %d %v %d", cmd, dst, n, tt.cmd, tt.dst, tt.n)
			}
		})
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, dst := range []protocols.Addr{v4, v6, domain, {Domain: strings.Repeat("a", 255), Port: 65535}} {
		for _, cmd := range []byte{CmdConnect, CmdBind, CmdUDPAssociate} {
			b, err := AppendRequest([]byte("prefix"), cmd, dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("prefix lost: %q", b)
			}
			gotCmd, gotDst, n, err := ParseRequest(b[6:])
			if err != nil || gotCmd != cmd || gotDst != dst || n != len(b)-6 {
				t.Errorf("%d %v: got %d %v %d %v", cmd, dst, gotCmd, gotDst, n, err)
			}
		}
	}
	for _, bad := range []protocols.Addr{{}, {Domain: strings.Repeat("a", 256)}} {
		b, err := AppendRequest([]byte("x"), CmdConnect, bad)
		if !errors.Is(err, protocols.ErrBadAddr) || string(b) != "x" {
			t.Errorf("%v: got %q, %v", bad, b, err)
		}
	}
}

func TestAppendReply(t *testing.T) {
	tests := []struct {
		name string
		rep  byte
		bind protocols.Addr
		want []byte
	}{
		{"success zero bind", ReplySucceeded, protocols.Addr{}, hexBytes(5, 0, 0, 1, 0, 0, 0, 0, 0, 0)},
		{"success ipv4", ReplySucceeded, v4, hexBytes(5, 0, 0, 1, 192, 0, 2, 7, 1, 187)},
		{"refused ipv6", ReplyConnectionRefused, v6, hexBytes(5, 5, 0, 4, v6.IP.AsSlice(), 0x1f, 0x90)},
		{"domain", ReplySucceeded, domain, hexBytes(5, 0, 0, 3, 11, "example.com", 0, 80)},
		{"blocked", ReplyNotAllowed, protocols.Addr{}, hexBytes(5, 2, 0, 1, 0, 0, 0, 0, 0, 0)},
		{"unencodable domain", ReplyGeneralFailure, protocols.Addr{Domain: strings.Repeat("a", 256), Port: 1},
			hexBytes(5, 1, 0, 1, 0, 0, 0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendReply([]byte{0xAA}, tt.rep, tt.bind)
			if !bytes.Equal(got, append([]byte{0xAA}, tt.want...)) {
				t.Fatalf("got % x, want AA % x", got, tt.want)
			}
			rep, bind, n, err := ParseReply(got[1:])
			if err != nil || rep != tt.rep || n != len(tt.want) {
				t.Fatalf("ParseReply: %d %v %d %v", rep, bind, n, err)
			}
			if tt.bind.IsValid() && len(tt.bind.Domain) <= 255 && bind != tt.bind {
				t.Errorf("bind = %v, want %v", bind, tt.bind)
			}
		})
	}
}

// TestTruncated checks that every proper prefix of every valid message is
// refused with ErrNeedMore, and nothing else.
func TestTruncated(t *testing.T) {
	parsers := map[string]func([]byte) error{
		"greeting": func(b []byte) error { _, _, err := ParseGreeting(b); return err },
		"method":   func(b []byte) error { _, _, err := ParseMethodSelection(b); return err },
		"userpass": func(b []byte) error { _, _, _, err := ParseUserPass(b); return err },
		"status":   func(b []byte) error { _, _, err := ParseAuthStatus(b); return err },
		"request":  func(b []byte) error { _, _, _, err := ParseRequest(b); return err },
		"reply":    func(b []byte) error { _, _, _, err := ParseReply(b); return err },
	}
	must := func(b []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	messages := map[string][][]byte{
		"greeting": {must(AppendGreeting(nil, 0)), must(AppendGreeting(nil, make([]byte, 255)...))},
		"method":   {AppendMethodSelection(nil, MethodUserPass)},
		"userpass": {must(AppendUserPass(nil, "alice", "secret")), must(AppendUserPass(nil, "", "")),
			must(AppendUserPass(nil, strings.Repeat("u", 255), strings.Repeat("p", 255)))},
		"status": {AppendAuthStatus(nil, AuthFailure)},
		"request": {must(AppendRequest(nil, CmdConnect, v4)), must(AppendRequest(nil, CmdConnect, v6)),
			must(AppendRequest(nil, CmdConnect, domain)),
			must(AppendRequest(nil, CmdConnect, protocols.Addr{Domain: strings.Repeat("d", 255), Port: 1}))},
		"reply": {AppendReply(nil, 0, v4), AppendReply(nil, 0, v6), AppendReply(nil, 0, domain)},
	}
	for name, msgs := range messages {
		parse := parsers[name]
		for _, msg := range msgs {
			if err := parse(msg); err != nil {
				t.Fatalf("%s % x: full message refused: %v", name, msg, err)
			}
			for i := range len(msg) {
				if err := parse(msg[:i]); err != protocols.ErrNeedMore {
					t.Errorf("%s % x: prefix of %d bytes: err = %v, want ErrNeedMore", name, msg, i, err)
				}
			}
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "timed out" }
func (timeoutErr) Timeout() bool { return true }

func TestReplyCode(t *testing.T) {
	tests := []struct {
		err  error
		want byte
	}{
		{nil, ReplySucceeded},
		{fmt.Errorf("route: %w", protocols.ErrBlocked), ReplyNotAllowed},
		{context.DeadlineExceeded, ReplyTTLExpired},
		{fmt.Errorf("dial: %w", os.ErrDeadlineExceeded), ReplyTTLExpired},
		{&net.OpError{Op: "dial", Err: timeoutErr{}}, ReplyTTLExpired},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ETIMEDOUT)}, ReplyTTLExpired},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ReplyConnectionRefused},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, ReplyHostUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, ReplyNetworkUnreachable},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}, ReplyHostUnreachable},
		{errors.New("something else"), ReplyGeneralFailure},
		{context.Canceled, ReplyGeneralFailure},
	}
	for _, tt := range tests {
		if got := ReplyCode(tt.err); got != tt.want {
			t.Errorf("ReplyCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestReplyError(t *testing.T) {
	err := error(&ReplyError{Code: ReplyNotAllowed})
	if !errors.Is(err, protocols.ErrBlocked) {
		t.Error("ReplyNotAllowed does not unwrap to ErrBlocked")
	}
	if want := "socks: proxy replied 2 (connection not allowed by ruleset)"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if errors.Is(&ReplyError{Code: ReplyConnectionRefused}, protocols.ErrBlocked) {
		t.Error("ReplyConnectionRefused unwraps to ErrBlocked")
	}
	for code := range 256 {
		if ReplyText(byte(code)) == "" {
			t.Errorf("no text for %d", code)
		}
	}
}
