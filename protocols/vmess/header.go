package vmess

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// The VMessAEAD request header (V2Ray proxy/vmess/aead/encrypt.go):
//
//	+---------+-------------------+-------+-----------------------------+
//	| AuthID  | sealed length     | nonce | sealed command section      |
//	|   16    | 2 + 16 (GCM tag)  |   8   | len + 16 (GCM tag)          |
//	+---------+-------------------+-------+-----------------------------+
//
//	AuthID  UserKey.AuthID(ts, rand): who, and when.
//	length  the command section's length, big-endian uint16, sealed with
//	        AES-128-GCM key KDF16(cmdKey, "VMess Header AEAD Key_Length", AuthID, nonce),
//	        nonce KDF(cmdKey, "VMess Header AEAD Nonce_Length", AuthID, nonce)[:12],
//	        additional data the AuthID.
//	nonce   8 random bytes ("connection nonce").
//	command the command section (see Request), sealed with
//	        key KDF16(cmdKey, "VMess Header AEAD Key", AuthID, nonce),
//	        nonce KDF(cmdKey, "VMess Header AEAD Nonce", AuthID, nonce)[:12],
//	        additional data the AuthID.
//
// The legacy (MD5) request header, used by clients with alterId > 0:
//
//	+------------------+--------------------------------------------------+
//	| auth             | command section                                  |
//	| 16               | AES-128-CFB[cmdKey, IV = MD5(ts ‖ ts ‖ ts ‖ ts)] |
//	+------------------+--------------------------------------------------+
//
//	auth    LegacyAuth(one of the user's ids, ts): HMAC-MD5 of the time.
//	        The server finds it in a table of every id's hash for every
//	        second within MaxTimeSkew. The CFB key is the MAIN id's CmdKey
//	        even when an alter id signed the auth.
const (
	authIDLen = 16
	aeadTag   = 16
	nonceLen  = 8
	// AEADHeaderOverhead is what the AEAD form adds around the command
	// section: AuthID, sealed length, nonce and the command's tag.
	AEADHeaderOverhead = authIDLen + 2 + aeadTag + nonceLen + aeadTag
	// MaxAEADHeaderLen is the longest AEAD request header.
	MaxAEADHeaderLen = AEADHeaderOverhead + MaxRequestLen
	// MaxLegacyHeaderLen is the longest legacy request header.
	MaxLegacyHeaderLen = legacyAuthSize + MaxRequestLen
)

// AEADSeed is the time and the random values of one AEAD request header.
type AEADSeed struct {
	Time     int64   // Unix seconds: the client's clock, exactly (no jitter)
	AuthRand [4]byte // the AuthID's random bytes
	Nonce    [8]byte // the connection nonce
}

// AppendAEADRequest appends the VMessAEAD request header for r to dst.
func AppendAEADRequest(dst []byte, k *UserKey, seed AEADSeed, r *Request) ([]byte, error) {
	var cmd [MaxRequestLen]byte
	section, err := AppendRequest(cmd[:0], r)
	if err != nil {
		return dst, err
	}
	authID := k.AuthID(seed.Time, seed.AuthRand)
	lenAEAD, lenNonce := headerAEAD(k, authID[:], seed.Nonce[:], LabelHeaderLenKey, LabelHeaderLenNonce)
	cmdAEAD, cmdNonce := headerAEAD(k, authID[:], seed.Nonce[:], LabelHeaderKey, LabelHeaderNonce)
	dst = append(dst, authID[:]...)
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(section)))
	dst = lenAEAD.Seal(dst, lenNonce[:12], l[:], authID[:])
	dst = append(dst, seed.Nonce[:]...)
	return cmdAEAD.Seal(dst, cmdNonce[:12], section, authID[:]), nil
}

// OpenAEADRequest opens a VMessAEAD request header at the start of b,
// whose AuthID the caller has already matched to k (see UserKey.OpenAuthID),
// and returns the command section with the bytes used. It does not modify
// b. A valid but incomplete prefix gives protocols.ErrNeedMore; a length or
// command that fails authentication gives ErrAuth; a length that no command
// section can have gives ErrBadHeader; the command section itself must parse
// exactly (see ParseRequest).
func OpenAEADRequest(k *UserKey, b []byte) (Request, int, error) {
	const lenEnd = authIDLen + 2 + aeadTag
	if len(b) < lenEnd+nonceLen {
		return Request{}, 0, protocols.ErrNeedMore
	}
	authID, nonce := b[:authIDLen], b[lenEnd:lenEnd+nonceLen]
	lenAEAD, lenNonce := headerAEAD(k, authID, nonce, LabelHeaderLenKey, LabelHeaderLenNonce)
	var l [2]byte
	if _, err := lenAEAD.Open(l[:0], lenNonce[:12], b[authIDLen:lenEnd], authID); err != nil {
		return Request{}, 0, fmt.Errorf("%w (length)", ErrAuth)
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n < MinRequestLen || n > MaxRequestLen {
		return Request{}, 0, fmt.Errorf("%w: command section of %d bytes", ErrBadHeader, n)
	}
	start := lenEnd + nonceLen
	end := start + n + aeadTag
	if len(b) < end {
		return Request{}, 0, protocols.ErrNeedMore
	}
	cmdAEAD, cmdNonce := headerAEAD(k, authID, nonce, LabelHeaderKey, LabelHeaderNonce)
	var buf [MaxRequestLen]byte
	section, err := cmdAEAD.Open(buf[:0], cmdNonce[:12], b[start:end], authID)
	if err != nil {
		return Request{}, 0, fmt.Errorf("%w (command)", ErrAuth)
	}
	r, m, err := ParseRequest(section)
	if err == protocols.ErrNeedMore || err == nil && m != len(section) {
		return Request{}, 0, fmt.Errorf("%w: %d sealed bytes hold a command section of %d", ErrBadHeader, len(section), m)
	}
	if err != nil {
		return Request{}, 0, err
	}
	return r, end, nil
}

func headerAEAD(k *UserKey, authID, nonce []byte, keyLabel, nonceLabel string) (cipher.AEAD, [32]byte) {
	key := kdfHeader(k.CmdKey[:], keyLabel, authID, nonce)
	return newGCM(key[:16]), kdfHeader(k.CmdKey[:], nonceLabel, authID, nonce)
}

func newGCM(key []byte) cipher.AEAD {
	block, _ := aes.NewCipher(key) // 16-byte keys only
	aead, _ := cipher.NewGCM(block)
	return aead
}

// AppendLegacyRequest appends a legacy request header to dst: auth is
// LegacyAuth of the id the client chose (for alterId n > 0, one of
// AlterIDs at random; else the main id) at time ts, cmdKey is the MAIN id's
// CmdKey.
func AppendLegacyRequest(dst []byte, auth [16]byte, cmdKey [16]byte, ts int64, r *Request) ([]byte, error) {
	start := len(dst)
	dst = append(dst, auth[:]...)
	dst, err := AppendRequest(dst, r)
	if err != nil {
		return dst[:start], err
	}
	iv := legacyHeaderIV(ts)
	section := dst[start+legacyAuthSize:]
	newCFBEncrypter(cmdKey[:], iv[:]).XORKeyStream(section, section)
	return dst, nil
}

// OpenLegacyRequest decrypts and parses the command section of a legacy
// request header; b starts after the 16-byte auth, which the caller has
// matched to a user and a time ts. It does not modify b. The result wraps
// the sentinels of ParseRequest; any error but protocols.ErrNeedMore is what
// V2Ray calls a bad request (and burns the auth's taint fuse for).
func OpenLegacyRequest(cmdKey [16]byte, ts int64, b []byte) (Request, int, error) {
	var buf [MaxRequestLen]byte
	m := copy(buf[:], b)
	iv := legacyHeaderIV(ts)
	newCFBDecrypter(cmdKey[:], iv[:]).XORKeyStream(buf[:m], buf[:m])
	return ParseRequest(buf[:m])
}

func newCFBEncrypter(key, iv []byte) cipher.Stream {
	block, _ := aes.NewCipher(key)
	//lint:ignore SA1019 the legacy (alterId) VMess header is AES-CFB on the wire
	return cipher.NewCFBEncrypter(block, iv)
}

func newCFBDecrypter(key, iv []byte) cipher.Stream {
	block, _ := aes.NewCipher(key)
	//lint:ignore SA1019 the legacy (alterId) VMess header is AES-CFB on the wire
	return cipher.NewCFBDecrypter(block, iv)
}
