package anytls

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// Authentication, client to server, the first bytes after the TLS handshake
// (spec: "认证请求"):
//
//	+------------------+---------------------+-----------+
//	| sha256(password) | padding0 length     | padding0  |
//	| 32               | 2, BE               | 0..65535  |
//	+------------------+---------------------+-----------+
//
//	sha256(password)  the SHA-256 of the password's UTF-8 bytes; no salt.
//	padding0 length   the padding scheme's packet 0 size (30 bytes in the
//	                  default scheme).
//	padding0          that many bytes; anytls-go sends zeros, a server
//	                  ignores their value.
//
// The client writes it as one write ("write #0"); anytls-go's server reads
// it from one TLS read and falls back when that read does not hold it all.
// The session's packet counter for the padding scheme therefore starts at 1.
const (
	AuthHashLen   = sha256.Size     // 32
	AuthHeaderLen = AuthHashLen + 2 // the fixed part: 34 bytes, the least an authentication takes
)

// Auth is a decoded authentication.
type Auth struct {
	Hash       [AuthHashLen]byte // sha256(password)
	PaddingLen int               // length of padding0
}

// PasswordHash is what a client sends for password, and what a server keys
// its users by. It is as secret as the password: never log it.
func PasswordHash(password string) [AuthHashLen]byte {
	return sha256.Sum256([]byte(password))
}

// AppendAuth appends an authentication with paddingLen zero bytes of
// padding0 to b. paddingLen must be 0..65535.
func AppendAuth(b []byte, hash [AuthHashLen]byte, paddingLen int) ([]byte, error) {
	if paddingLen < 0 || paddingLen > MaxDataLen {
		return b, fmt.Errorf("%w: padding0 of %d bytes", ErrBadPadding, paddingLen)
	}
	b = append(b, hash[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(paddingLen))
	return append(b, make([]byte, paddingLen)...), nil
}

// ParseAuth decodes an authentication from the start of b and returns it
// with the bytes it used (34 plus the padding); session frames start at
// b[n:]. Until the padding is whole it returns [protocols.ErrNeedMore]. It
// does not look the hash up: that is the server's job (see [Match]).
func ParseAuth(b []byte) (Auth, int, error) {
	if len(b) < AuthHeaderLen {
		return Auth{}, 0, protocols.ErrNeedMore
	}
	a := Auth{Hash: [AuthHashLen]byte(b[:AuthHashLen]), PaddingLen: int(binary.BigEndian.Uint16(b[AuthHashLen:]))}
	n := AuthHeaderLen + a.PaddingLen
	if len(b) < n {
		return Auth{}, 0, protocols.ErrNeedMore
	}
	return a, n, nil
}

// Match reports whether prefix opens an AnyTLS connection for a password
// known recognises: its first 32 bytes are that password's SHA-256. It
// returns [protocols.ErrNeedMore] below 32 bytes, and false with
// [ErrUnknownPassword] for any other hash (the error never holds the hash).
// AnyTLS has no magic bytes, so it is the hash alone that decides; known
// is typically a map look-up. Match is meant to be wrapped into a
// [protocols.Matcher].
func Match(prefix []byte, known func(hash [AuthHashLen]byte) bool) (bool, error) {
	if len(prefix) < AuthHashLen {
		return false, protocols.ErrNeedMore
	}
	if !known([AuthHashLen]byte(prefix[:AuthHashLen])) {
		return false, ErrUnknownPassword
	}
	return true, nil
}
