package vmess

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"unsafe"
)

// Key derivation, V2Ray proxy/vmess/aead/kdf.go and consts.go.
//
// KDF(key, p1, …, pn) is a chain of HMACs: the innermost hash is
// HMAC-SHA256 keyed with "VMess AEAD KDF"; each path element pi wraps the
// chain in one more HMAC, keyed with pi and using the chain so far as its
// hash function. The result is the outermost HMAC of key (32 bytes). KDF16
// is its first 16 bytes.
//
//	KDF(k)         = HMAC[SHA256, "VMess AEAD KDF"](k)
//	KDF(k, p1)     = HMAC[HMAC[SHA256, "VMess AEAD KDF"], p1](k)
//	KDF(k, p1, p2) = HMAC[HMAC[HMAC[SHA256, "VMess AEAD KDF"], p1], p2](k)
//
// The labels, each used as a path element:
const (
	LabelKDF              = "VMess AEAD KDF"                 // root of every derivation
	LabelAuthIDKey        = "AES Auth ID Encryption"         // KDF16(cmdKey, ·): AES key of the AuthID
	LabelHeaderLenKey     = "VMess Header AEAD Key_Length"   // KDF16(cmdKey, ·, authID, nonce)
	LabelHeaderLenNonce   = "VMess Header AEAD Nonce_Length" // KDF(cmdKey, ·, authID, nonce)[:12]
	LabelHeaderKey        = "VMess Header AEAD Key"          // KDF16(cmdKey, ·, authID, nonce)
	LabelHeaderNonce      = "VMess Header AEAD Nonce"        // KDF(cmdKey, ·, authID, nonce)[:12]
	LabelRespHeaderLenKey = "AEAD Resp Header Len Key"       // KDF16(respKey, ·)
	LabelRespHeaderLenIV  = "AEAD Resp Header Len IV"        // KDF(respIV, ·)[:12]
	LabelRespHeaderKey    = "AEAD Resp Header Key"           // KDF16(respKey, ·)
	LabelRespHeaderIV     = "AEAD Resp Header IV"            // KDF(respIV, ·)[:12]
	LabelAuthLen          = "auth_len"                       // KDF16(requestKey, ·): authenticated-length key, both directions
)

// KDF is VMess's nested-HMAC key derivation (see above). It is computed
// level by level on stack buffers: a literal chain of hmac.New, each level
// building its parent's hash objects twice over, costs 90 allocations for
// a three-element path, and a tunnel's headers take nine derivations.
// Level i of the chain, keyed with ki (at most a block long, as every
// VMess label, AuthID and nonce is; a longer one is hashed first, as HMAC
// does), hashes m as
//
//	H_i(m) = H_{i-1}((ki ⊕ opad) ‖ H_{i-1}((ki ⊕ ipad) ‖ m)),  H_0 = SHA-256.
func KDF(key []byte, path ...string) [32]byte {
	if len(path) > maxKDFPath {
		panic("vmess: KDF path longer than any VMess derivation")
	}
	var keys [1 + maxKDFPath][]byte
	keys[0] = bytesOf(LabelKDF)
	for i, p := range path {
		keys[1+i] = bytesOf(p)
	}
	return kdfHash(keys[:1+len(path)], key)
}

// kdfHeader is KDF(key, label, authID, nonce), without making strings of
// the AuthID and nonce.
func kdfHeader(key []byte, label string, authID, nonce []byte) [32]byte {
	keys := [1 + maxKDFPath][]byte{bytesOf(LabelKDF), bytesOf(label), authID, nonce}
	return kdfHash(keys[:], key)
}

// bytesOf is s's bytes, read only.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// maxKDFPath is the longest path VMess derives with: label, AuthID, nonce.
const maxKDFPath = 3

// kdfHash is H_len(keys)(msg), keys[0] keying the innermost HMAC.
func kdfHash(keys [][]byte, msg []byte) [32]byte {
	if len(keys) == 0 {
		return sha256.Sum256(msg)
	}
	below := keys[:len(keys)-1]
	key := keys[len(keys)-1]
	var hashedKey [32]byte
	if len(key) > sha256.BlockSize {
		hashedKey = kdfHash(below, key)
		key = hashedKey[:]
	}
	// (ki ⊕ pad) ‖ m on the stack; messages grow by one block a level and
	// start as a 16-byte key, so a few hundred bytes hold any of them.
	var stack [sha256.BlockSize + 256]byte
	buf := stack[:0]
	if n := sha256.BlockSize + max(len(msg), sha256.Size); n > len(stack) {
		buf = make([]byte, 0, n)
	}
	padded := func(pad byte, rest []byte) []byte {
		b := buf[:sha256.BlockSize]
		for i := range b {
			b[i] = pad
		}
		for i, c := range key {
			b[i] ^= c
		}
		return append(b, rest...)
	}
	inner := kdfHash(below, padded(0x36, msg))
	return kdfHash(below, padded(0x5c, inner[:]))
}

// KDF16 is the first 16 bytes of KDF.
func KDF16(key []byte, path ...string) [16]byte {
	k := KDF(key, path...)
	return [16]byte(k[:16])
}

// cmdKeySalt and the alter-id salts are V2Ray's fixed strings
// (common/protocol/id.go).
const (
	cmdKeySalt     = "c48619fe-8f02-49e0-b9e9-edf763e17e21"
	alterIDSalt    = "16167dc8-16b6-4e6d-b8bb-65dd68113a81"
	alterIDReSalt  = "533eff8a-4113-4b10-b5ce-0f5d76b98cd2"
	maxAlterIDs    = 65535
	legacyAuthSize = 16
)

// CmdKey is the user's command key: MD5(UUID ‖ "c48619fe-8f02-49e0-b9e9-edf763e17e21").
// Every header key derives from it.
func CmdKey(id [16]byte) [16]byte {
	h := md5.New()
	h.Write(id[:])
	h.Write([]byte(cmdKeySalt))
	var k [16]byte
	h.Sum(k[:0])
	return k
}

// AlterIDs returns the first n alternative ids of a legacy user, in order:
// each is MD5(previous ‖ "16167dc8-…") (re-hashed with "533eff8a-…" appended
// in the unlikely case it equals the previous id), starting from the main
// id. A legacy client with alterId n authenticates with one of them at
// random; the main id is used only when n is 0.
func AlterIDs(id [16]byte, n int) [][16]byte {
	n = min(max(n, 0), maxAlterIDs)
	out := make([][16]byte, n)
	prev := id
	for i := range out {
		h := md5.New()
		h.Write(prev[:])
		h.Write([]byte(alterIDSalt))
		var next [16]byte
		for {
			h.Sum(next[:0])
			if next != prev {
				break
			}
			h.Write([]byte(alterIDReSalt))
		}
		out[i] = next
		prev = next
	}
	return out
}

// LegacyAuth is the 16 bytes that open a legacy request:
// HMAC-MD5(key = the id in use, message = ts as a big-endian uint64).
func LegacyAuth(id [16]byte, ts int64) [16]byte {
	m := hmac.New(md5.New, id[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(ts))
	m.Write(b[:])
	var out [16]byte
	m.Sum(out[:0])
	return out
}

// legacyHeaderIV is the IV of the legacy header's AES-CFB: MD5 of the
// timestamp written four times (big-endian uint64 each).
func legacyHeaderIV(ts int64) [16]byte {
	var b [32]byte
	for i := 0; i < 32; i += 8 {
		binary.BigEndian.PutUint64(b[i:], uint64(ts))
	}
	return md5.Sum(b[:])
}

// UserKey is what a client or server keeps of one VMess id: its command
// key and the AES block that seals and opens its AuthIDs. Create it once per
// user with NewUserKey; it is safe for concurrent use.
type UserKey struct {
	CmdKey [16]byte
	auth   cipher.Block
}

// NewUserKey derives the keys of id.
func NewUserKey(id [16]byte) *UserKey {
	k := &UserKey{CmdKey: CmdKey(id)}
	ak := KDF16(k.CmdKey[:], LabelAuthIDKey)
	k.auth, _ = aes.NewCipher(ak[:]) // cannot fail: 16-byte key
	return k
}

// AuthID seals the 16-byte AuthID that opens an AEAD request
// (proxy/vmess/aead/authid.go):
//
//	AES-128-ECB[KDF16(cmdKey, "AES Auth ID Encryption")](
//	    ts (8, BE, Unix seconds) ‖ rand (4) ‖ CRC32-IEEE of the 12 bytes before (4, BE))
func (k *UserKey) AuthID(ts int64, rand [4]byte) [16]byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(ts))
	copy(b[8:12], rand[:])
	binary.BigEndian.PutUint32(b[12:], crc32.ChecksumIEEE(b[:12]))
	k.auth.Encrypt(b[:], b[:])
	return b
}

// OpenAuthID decrypts an AuthID with this user's key and reports whether
// its checksum holds (a 2^-32 chance for bytes not made with this key). It
// returns the timestamp it carries and its 4 random bytes; the caller checks
// the time with CheckTime. It costs one AES block and does not allocate.
func (k *UserKey) OpenAuthID(authID []byte) (ts int64, rand [4]byte, ok bool) {
	var scratch [16]byte
	return k.openAuthID(scratch[:], authID)
}

func (k *UserKey) openAuthID(b, authID []byte) (ts int64, rand [4]byte, ok bool) {
	if len(authID) < 16 {
		return 0, rand, false
	}
	k.auth.Decrypt(b, authID[:16])
	if binary.BigEndian.Uint32(b[12:]) != crc32.ChecksumIEEE(b[:12]) {
		return 0, rand, false
	}
	ts = int64(binary.BigEndian.Uint64(b[:8]))
	if ts < 0 { // V2Ray refuses negative times too
		return 0, rand, false
	}
	return ts, [4]byte(b[8:12]), true
}

// FindAuthID tries authID against every key, one AES block each, and
// returns the index of the first whose checksum holds and the time it
// carries; the caller checks the time with CheckTime. It allocates once,
// whatever the number of keys.
func FindAuthID(keys []*UserKey, authID []byte) (i int, ts int64, ok bool) {
	scratch := make([]byte, 16)
	for i, k := range keys {
		if ts, _, ok := k.openAuthID(scratch, authID); ok {
			return i, ts, true
		}
	}
	return -1, 0, false
}

// chachaKey is V2Ray's 32-byte ChaCha20-Poly1305 key from a 16-byte one:
// MD5(k) ‖ MD5(MD5(k)) (proxy/vmess/encoding/auth.go).
func chachaKey(k []byte) [32]byte {
	var out [32]byte
	t := md5.Sum(k)
	copy(out[:16], t[:])
	t = md5.Sum(t[:])
	copy(out[16:], t[:])
	return out
}

// fnv1a is FNV-1a 32 (hash/fnv New32a) without the allocation.
func fnv1a(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}
