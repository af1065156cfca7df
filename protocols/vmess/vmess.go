// Package vmess is the pure codec of VMess, V2Ray's encrypted tunnel
// protocol: the request header in both its forms (VMessAEAD, and the legacy
// MD5 header of clients with alterId > 0), the response header, the body
// chunk codecs of every security (aes-128-gcm, chacha20-poly1305, none,
// zero, and the legacy aes-128-cfb), and the key derivations behind them.
//
// It reads no sockets, starts no goroutines, reads no clock and draws no
// randomness of its own: the time and every random value are parameters, so
// it builds for js/wasm and wasip1/wasm and its output is reproducible in
// tests. The net side lives in the vmessserver and vmessclient packages
// below it.
//
// Codecs follow the project's habit: Append* appends to a caller-owned
// slice, Parse* and Open* return (value, bytes consumed, error) and
// [protocols.ErrNeedMore] for a valid but truncated prefix. Other failures
// wrap one of the sentinels below (or [protocols.ErrBadAddr]).
//
// Every layout is written beside its code and in docs/protocols/vmess.md.
// The wire facts come from V2Ray v4 (proxy/vmess/encoding, proxy/vmess/aead,
// common/crypto, common/protocol) and were checked against Debian's V2Ray
// 4.34 (see testdata/README.md).
package vmess

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
)

// Version is the request header's version byte; V2Ray and every client
// derived from it send 1.
const Version = 1

// MaxTimeSkew is how far, in seconds, a request's timestamp may be from the
// server's clock (V2Ray's 120 s, both for AuthIDs and for the legacy
// time-hash table).
const MaxTimeSkew = 120

// Security is the body cipher, the low nibble of the request header's
// security byte.
type Security byte

// The securities. Only 1, 3, 4 and 5 travel on the wire; Auto and Zero are
// configuration names that a client turns into one of them (see
// [ClientOptions]). A received 0 means Legacy (V2Ray's backward
// compatibility).
const (
	SecurityLegacy           Security = 1 // "aes-128-cfb": AES-128-CFB body, FNV-1a chunks
	SecurityAuto             Security = 2 // "auto": aes-128-gcm on amd64/arm64/s390x, else chacha20-poly1305
	SecurityAES128GCM        Security = 3 // "aes-128-gcm"
	SecurityChaCha20Poly1305 Security = 4 // "chacha20-poly1305": key from MD5, as V2Ray does
	SecurityNone             Security = 5 // "none": cleartext chunks
	SecurityZero             Security = 6 // "zero": sent as None with no chunk framing at all
)

func (s Security) String() string {
	switch s {
	case SecurityLegacy:
		return "aes-128-cfb"
	case SecurityAuto:
		return "auto"
	case SecurityAES128GCM:
		return "aes-128-gcm"
	case SecurityChaCha20Poly1305:
		return "chacha20-poly1305"
	case SecurityNone:
		return "none"
	case SecurityZero:
		return "zero"
	}
	return fmt.Sprintf("security(%d)", byte(s))
}

// ParseSecurity maps a configuration name to a Security. "" means "auto"
// (V2Ray's default); names are case-insensitive. "legacy" is accepted as a
// synonym of "aes-128-cfb".
func ParseSecurity(name string) (Security, error) {
	switch strings.ToLower(name) {
	case "", "auto":
		return SecurityAuto, nil
	case "aes-128-gcm":
		return SecurityAES128GCM, nil
	case "chacha20-poly1305":
		return SecurityChaCha20Poly1305, nil
	case "none":
		return SecurityNone, nil
	case "zero":
		return SecurityZero, nil
	case "aes-128-cfb", "legacy":
		return SecurityLegacy, nil
	}
	return 0, fmt.Errorf(`%w %q: use "aes-128-gcm", "chacha20-poly1305", "auto", "none" or "zero"`, ErrBadSecurity, name)
}

// Resolve turns Auto into the cipher V2Ray picks for this machine
// (runtime.GOARCH); other values are returned as they are.
func (s Security) Resolve() Security { return s.ResolveFor(runtime.GOARCH) }

// ResolveFor is Resolve for a given GOARCH: aes-128-gcm where V2Ray expects
// AES hardware (amd64, arm64, s390x), chacha20-poly1305 elsewhere.
func (s Security) ResolveFor(goarch string) Security {
	if s != SecurityAuto {
		return s
	}
	switch goarch {
	case "amd64", "arm64", "s390x":
		return SecurityAES128GCM
	}
	return SecurityChaCha20Poly1305
}

// Insecure reports whether s is one of the securities an inbound with
// V2Ray's disableInsecureEncryption refuses: none (and zero, which is sent
// as none) and the legacy aes-128-cfb.
func (s Security) Insecure() bool {
	return s == SecurityNone || s == SecurityZero || s == SecurityLegacy || s == 0
}

// Option is the request header's option bit set.
type Option byte

// The request options (V2Ray common/protocol/headers.go).
const (
	OptionChunkStream         Option = 0x01 // the body is framed in chunks
	OptionConnectionReuse     Option = 0x02 // obsolete; ignored
	OptionChunkMasking        Option = 0x04 // chunk lengths are XORed with a SHAKE128 stream
	OptionGlobalPadding       Option = 0x08 // each AEAD chunk carries 0..63 padding bytes; needs masking
	OptionAuthenticatedLength Option = 0x10 // chunk lengths are sealed with their own AEAD
)

// Has reports whether all bits of x are set in o.
func (o Option) Has(x Option) bool { return o&x == x }

// ClientOptions is what a V2Ray v4 client puts on the wire for a configured
// security (proxy/vmess/outbound): the security byte and the option bits.
// Auto must be resolved first (it is resolved here with Resolve if not).
//
//	aes-128-gcm, chacha20-poly1305: chunk stream | masking | global padding (0x0d)
//	none:                           chunk stream | masking (0x05)
//	zero:                           security none, no option at all (0x00)
//	aes-128-cfb:                    chunk stream (0x01)
//
// authLen adds OptionAuthenticatedLength for the AEAD securities (V2Ray's
// "AuthenticatedLength" experiment; V2Ray 4.34 does not know it).
func ClientOptions(s Security, authLen bool) (Security, Option) {
	s = s.Resolve()
	switch s {
	case SecurityAES128GCM, SecurityChaCha20Poly1305:
		o := OptionChunkStream | OptionChunkMasking | OptionGlobalPadding
		if authLen {
			o |= OptionAuthenticatedLength
		}
		return s, o
	case SecurityNone:
		return s, OptionChunkStream | OptionChunkMasking
	case SecurityZero:
		return SecurityNone, 0
	}
	return SecurityLegacy, OptionChunkStream
}

// Command is the request's command byte.
type Command byte

// The commands of V2Ray's common/protocol.
const (
	CommandTCP Command = 1 // a TCP stream to Target
	CommandUDP Command = 2 // UDP packets to Target
	CommandMux Command = 3 // Mux.Cool; no Target on the wire
)

func (c Command) String() string {
	switch c {
	case CommandTCP:
		return "tcp"
	case CommandUDP:
		return "udp"
	case CommandMux:
		return "mux"
	}
	return fmt.Sprintf("command(%d)", byte(c))
}

// Sentinel errors. Parse and open failures wrap one of them; use errors.Is.
var (
	ErrBadVersion  = errors.New("vmess: unknown version")
	ErrBadCommand  = errors.New("vmess: unsupported command")
	ErrBadSecurity = errors.New("vmess: unknown security")
	ErrBadOptions  = errors.New("vmess: invalid option bits")
	ErrBadHeader   = errors.New("vmess: malformed header")
	ErrChecksum    = errors.New("vmess: header checksum mismatch")
	ErrAuth        = errors.New("vmess: header authentication failed")
	ErrBadResponse = errors.New("vmess: response header does not match the request")
	ErrChunk       = errors.New("vmess: chunk authentication failed")
	ErrChunkSize   = errors.New("vmess: invalid chunk length")
	// ErrClockSkew: an AuthID opened under a user's key, so the client is
	// that user, but its timestamp is more than MaxTimeSkew from the
	// server's clock.
	ErrClockSkew = errors.New("vmess: client clock differs from server by more than 120 s")
)

// ClockSkewError is returned (wrapping ErrClockSkew) when a valid AuthID
// carries a timestamp outside the window; it says by how much.
type ClockSkewError struct {
	Client, Server int64 // Unix seconds
}

func (e *ClockSkewError) Error() string {
	d := e.Client - e.Server
	dir := "ahead of"
	if d < 0 {
		d, dir = -d, "behind"
	}
	return fmt.Sprintf("%v: the client's clock is %d s %s the server's; sync both clocks (NTP): VMess allows %d s", ErrClockSkew, d, dir, MaxTimeSkew)
}

func (e *ClockSkewError) Unwrap() error { return ErrClockSkew }

// CheckTime returns nil when ts is within MaxTimeSkew of now, else a
// *ClockSkewError.
func CheckTime(ts, now int64) error {
	if ts < now-MaxTimeSkew || ts > now+MaxTimeSkew {
		return &ClockSkewError{Client: ts, Server: now}
	}
	return nil
}
