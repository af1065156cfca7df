package vmess

import (
	"encoding/binary"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// The request's command section: the plaintext that both header forms
// carry, sealed by AEAD (VMessAEAD) or encrypted with AES-CFB (legacy).
// V2Ray proxy/vmess/encoding/client.go EncodeRequestHeader, server.go
// DecodeRequestHeader:
//
//	+-----+------+------+---+-----+--------+------+-----+------+------+---------+---------+-------+
//	| ver | IV   | key  | V | opt | P<<4|S | rsv  | cmd | port | atyp | address | padding | FNV1a |
//	|  1  | 16   | 16   | 1 |  1  |   1    |  1   |  1  |  2   |  1   | 4|16|1+n|   P     |   4   |
//	+-----+------+------+---+-----+--------+------+-----+------+------+---------+---------+-------+
//	                                                      \______ absent for Mux _______/
//
//	ver      1.
//	IV, key  the request body IV and key, random per connection. The
//	         response body key and IV derive from them (see Session).
//	V        a random byte the server echoes in its response header.
//	opt      Option bits.
//	P<<4|S   high nibble: padding length P (0..15); low nibble: Security.
//	rsv      0; ignored.
//	cmd      Command: 1 TCP, 2 UDP, 3 Mux.
//	port…    protocols.VAddr: port (BE) ‖ atyp (1 IPv4, 2 domain, 3 IPv6) ‖ address.
//	padding  P random bytes.
//	FNV1a    FNV-1a 32 (big-endian) of every byte before it.
const (
	requestFixedLen = 1 + 16 + 16 + 1 + 1 + 1 + 1 + 1 // up to and including cmd: 38
	// MaxRequestLen is the longest command section: 38 fixed bytes, a
	// domain target (2+1+1+255), 15 padding bytes and the checksum.
	MaxRequestLen = requestFixedLen + 2 + 1 + 1 + 255 + 15 + 4
	// MinRequestLen is the shortest: a Mux request without padding.
	MinRequestLen = requestFixedLen + 4
	maxPadding    = 15
)

// Request is a decoded command section.
type Request struct {
	IV, Key      [16]byte       // the request body IV and key
	ResponseAuth byte           // V, echoed by the server
	Options      Option         // option bits
	Security     Security       // as on the wire: 1, 3, 4 or 5 (a received 0 reads as 1)
	Command      Command        // TCP, UDP or Mux
	Target       protocols.Addr // zero for Mux
	Padding      []byte         // 0..15 bytes; their content is not checked
}

// AppendRequest appends the command section of r to b. It fails, returning
// b unchanged, on a security other than 1, 3, 4 or 5, an unknown command,
// more than 15 padding bytes, global padding without chunk masking, or a
// TCP/UDP Target that cannot be encoded.
func AppendRequest(b []byte, r *Request) ([]byte, error) {
	if err := checkRequest(r.Security, r.Options, r.Command); err != nil {
		return b, err
	}
	if len(r.Padding) > maxPadding {
		return b, fmt.Errorf("%w: %d padding bytes, at most %d", ErrBadHeader, len(r.Padding), maxPadding)
	}
	if r.Command != CommandMux && protocols.VAddr.Len(r.Target) < 0 {
		return b, fmt.Errorf("vmess: target: %w: cannot encode %v", protocols.ErrBadAddr, r.Target)
	}
	start := len(b)
	b = append(b, Version)
	b = append(b, r.IV[:]...)
	b = append(b, r.Key[:]...)
	b = append(b, r.ResponseAuth, byte(r.Options), byte(len(r.Padding))<<4|byte(r.Security), 0, byte(r.Command))
	if r.Command != CommandMux {
		b, _ = protocols.VAddr.Append(b, r.Target) // checked above
	}
	b = append(b, r.Padding...)
	return binary.BigEndian.AppendUint32(b, fnv1a(b[start:])), nil
}

// ParseRequest decodes a command section from the start of b and returns it
// with the number of bytes it used. A valid but incomplete prefix gives
// [protocols.ErrNeedMore]. The result does not alias b.
//
// Errors: ErrBadVersion, ErrBadCommand, protocols.ErrBadAddr (decided as
// soon as the bytes are there), then, once the section is whole,
// ErrChecksum, ErrBadSecurity (2 auto, 6 zero, 7..15 are never sent) and
// ErrBadOptions (global padding without masking, which V2Ray cannot read).
func ParseRequest(b []byte) (Request, int, error) {
	var r Request
	if len(b) < 1 {
		return r, 0, protocols.ErrNeedMore
	}
	if b[0] != Version {
		return r, 0, fmt.Errorf("%w %d", ErrBadVersion, b[0])
	}
	if len(b) < requestFixedLen {
		return r, 0, protocols.ErrNeedMore
	}
	copy(r.IV[:], b[1:17])
	copy(r.Key[:], b[17:33])
	r.ResponseAuth = b[33]
	r.Options = Option(b[34])
	padLen := int(b[35] >> 4)
	r.Security = Security(b[35] & 0x0f)
	r.Command = Command(b[37])
	i := requestFixedLen
	switch r.Command {
	case CommandMux:
	case CommandTCP, CommandUDP:
		a, m, err := protocols.VAddr.Parse(b[i:])
		if err != nil {
			if err == protocols.ErrNeedMore {
				return Request{}, 0, err
			}
			return Request{}, 0, fmt.Errorf("vmess: target: %w", err)
		}
		r.Target = a
		i += m
	default:
		return Request{}, 0, fmt.Errorf("%w %d", ErrBadCommand, byte(r.Command))
	}
	if len(b) < i+padLen+4 {
		return Request{}, 0, protocols.ErrNeedMore
	}
	if padLen > 0 {
		r.Padding = append([]byte(nil), b[i:i+padLen]...)
	}
	i += padLen
	if got, want := binary.BigEndian.Uint32(b[i:]), fnv1a(b[:i]); got != want {
		return Request{}, 0, ErrChecksum
	}
	i += 4
	if r.Security == 0 {
		r.Security = SecurityLegacy
	}
	if err := checkRequest(r.Security, r.Options, r.Command); err != nil {
		return Request{}, 0, err
	}
	return r, i, nil
}

func checkRequest(s Security, o Option, c Command) error {
	switch s {
	case SecurityLegacy, SecurityAES128GCM, SecurityChaCha20Poly1305, SecurityNone:
	default:
		return fmt.Errorf("%w %d (%v) on the wire", ErrBadSecurity, byte(s), s)
	}
	switch c {
	case CommandTCP, CommandUDP, CommandMux:
	default:
		return fmt.Errorf("%w %d", ErrBadCommand, byte(c))
	}
	if o.Has(OptionGlobalPadding) && !o.Has(OptionChunkMasking) {
		return fmt.Errorf("%w: global padding (0x08) without chunk masking (0x04)", ErrBadOptions)
	}
	return nil
}
