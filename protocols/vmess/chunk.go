package vmess

import (
	"crypto/cipher"
	"crypto/sha3"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/portico-gw/portico/protocols"
)

// Body chunks (V2Ray common/crypto/auth.go, chunk.go; proxy/vmess/encoding
// EncodeRequestBody, DecodeRequestBody and their response twins). Each
// direction is one stream of chunks with its own key, IV and counters:
//
//	aes-128-gcm, chacha20-poly1305 (whatever the chunk-stream bit says):
//	  +--------+-----------------------------+-----------+
//	  | length | AEAD(payload) + tag (16)    | padding   |
//	  | 2 | 18 | length - padding            | 0..63     |
//	  +--------+-----------------------------+-----------+
//	none with the chunk-stream bit (TCP):   length (2) ‖ payload
//	aes-128-cfb with the chunk-stream bit:  AES-CFB over length (2) ‖ FNV1a(payload) (4) ‖ payload ‖ padding
//	none or aes-128-cfb without it ("zero"): the bytes as they are (through AES-CFB for aes-128-cfb)
//
//	length   the bytes after the length field: sealed payload (or checksum
//	         and payload) plus padding. Plain big-endian, or XORed with
//	         the next 2 bytes of SHAKE128(this direction's IV) when chunk
//	         masking is on, or, with authenticated length, the length
//	         minus 16 sealed with its own AEAD into 18 bytes.
//	padding  with global padding, the next 2 SHAKE bytes (big-endian) mod 64,
//	         drawn BEFORE that chunk's mask; random bytes, not checked.
//	nonce    12 bytes: a 16-bit big-endian chunk counter starting at 0,
//	         then bytes 2..11 of the direction's IV. The counter wraps after
//	         65536 chunks, as in V2Ray (the nonce then repeats).
//	keys     the direction's body key; for chacha20-poly1305 the 32-byte key
//	         MD5(k) ‖ MD5(MD5(k)). Authenticated length uses
//	         KDF16(REQUEST key, "auth_len") (expanded the same way for
//	         chacha20-poly1305) and the REQUEST IV for its nonces, in BOTH
//	         directions, each direction with its own counter.
//	end      a chunk whose length is exactly the overhead (16 for the
//	         AEADs, 4 for aes-128-cfb, 0 for none) plus its padding: an
//	         empty payload. Unframed streams end with the carrier.
const (
	// ChunkLimit is the most bytes a V2Ray writer puts in one chunk after
	// the length field (V2Ray's buffer size, buf.Size); Portico's writers
	// keep to it. Readers accept up to 65535 (plus 16 with authenticated
	// length).
	ChunkLimit = 8192
	// MaxChunkLen is the longest chunk a reader may have to hold whole.
	MaxChunkLen = 2 + aeadTag + 65535 + aeadTag
	maxChunkPad = 64
)

type bodyKind uint8

const (
	kindRaw    bodyKind = iota // no framing
	kindRawCFB                 // no framing, through AES-CFB
	kindPlain                  // length ‖ payload
	kindAEAD                   // length ‖ sealed payload ‖ padding
	kindFNV                    // AES-CFB(length ‖ FNV1a ‖ payload ‖ padding)
)

// codec is the state of one end of one direction.
type codec struct {
	kind       bodyKind
	aead       cipher.AEAD
	nonce      [12]byte
	count      uint16
	lenAEAD    cipher.AEAD // authenticated length, or nil
	lenNonce   [12]byte
	lenCount   uint16
	shake      *sha3.SHAKE // chunk masking, or nil
	padding    bool        // global padding (needs shake)
	cfb        cipher.Stream
	sizeLen    int // 0 (unframed), 2 or 18
	overhead   int // 16, 4 or 0
	maxPayload int
	sizeBuf    [2]byte
	maskBuf    [2]byte
}

// direction is the key material and framing of one direction.
type direction struct {
	security      Security
	options       Option
	packet        bool
	key, iv       [16]byte
	reqKey, reqIV [16]byte      // for authenticated length
	cfb           cipher.Stream // aes-128-cfb: a stream to continue (the legacy response header's), or nil
	seal          bool          // this end writes (a new CFB stream encrypts)
}

func newCodec(d direction) (codec, error) {
	var c codec
	if err := checkRequest(d.security, d.options, CommandTCP); err != nil {
		return c, err
	}
	o := d.options
	if o.Has(OptionChunkMasking) {
		c.shake = sha3.NewSHAKE128()
		c.shake.Write(d.iv[:])
	}
	switch d.security {
	case SecurityNone:
		if !o.Has(OptionChunkStream) {
			c.kind = kindRaw
			return c, nil
		}
		c.kind, c.sizeLen = kindPlain, 2
		// The stream writer pads nothing; only the packet (UDP) writer does.
		c.padding = d.packet && o.Has(OptionGlobalPadding)
		c.maxPayload = ChunkLimit
		if c.padding {
			c.maxPayload = ChunkLimit - 2 - maxChunkPad
		}
		return c, nil
	case SecurityLegacy:
		c.cfb = d.cfb
		switch {
		case c.cfb != nil:
		case d.seal:
			c.cfb = newCFBEncrypter(d.key[:], d.iv[:])
		default:
			c.cfb = newCFBDecrypter(d.key[:], d.iv[:])
		}
		if !o.Has(OptionChunkStream) {
			c.kind = kindRawCFB
			return c, nil
		}
		c.kind, c.sizeLen, c.overhead = kindFNV, 2, 4
	case SecurityAES128GCM, SecurityChaCha20Poly1305:
		c.kind, c.sizeLen, c.overhead = kindAEAD, 2, aeadTag
		c.aead = newBodyAEAD(d.security, d.key[:])
		copy(c.nonce[:], d.iv[:12])
		if o.Has(OptionAuthenticatedLength) {
			lk := KDF16(d.reqKey[:], LabelAuthLen)
			c.lenAEAD = newBodyAEAD(d.security, lk[:])
			copy(c.lenNonce[:], d.reqIV[:12])
			c.sizeLen = 2 + aeadTag
		}
	}
	c.padding = o.Has(OptionGlobalPadding)
	c.maxPayload = ChunkLimit - c.overhead - c.sizeLen
	if c.padding {
		c.maxPayload -= maxChunkPad
	}
	return c, nil
}

func newBodyAEAD(s Security, key []byte) cipher.AEAD {
	if s == SecurityChaCha20Poly1305 {
		k := chachaKey(key)
		aead, _ := chacha20poly1305.New(k[:])
		return aead
	}
	return newGCM(key)
}

func (c *codec) nextNonce() []byte {
	binary.BigEndian.PutUint16(c.nonce[:2], c.count)
	c.count++
	return c.nonce[:]
}

func (c *codec) nextLenNonce() []byte {
	binary.BigEndian.PutUint16(c.lenNonce[:2], c.lenCount)
	c.lenCount++
	return c.lenNonce[:]
}

// next is the next 16 bits of the SHAKE128 stream.
func (c *codec) next() uint16 {
	c.shake.Read(c.maskBuf[:])
	return binary.BigEndian.Uint16(c.maskBuf[:])
}

// Sealer encodes one direction of a body: a client's request or a server's
// response. Create it from a Session. It is not safe for concurrent use and
// does not allocate once dst has room.
type Sealer struct {
	c   codec
	pad io.Reader
}

// Framed reports whether the stream has chunks, hence an end-of-stream
// marker: false for zero (and unframed aes-128-cfb), whose end is the
// carrier's.
func (s *Sealer) Framed() bool { return s.c.kind >= kindPlain }

// MaxPayload is the most payload bytes one chunk carries (0 when unframed).
func (s *Sealer) MaxPayload() int { return s.c.maxPayload }

// SealedLen is the most bytes Seal appends for n payload bytes.
func (s *Sealer) SealedLen(n int) int {
	if !s.Framed() {
		return n
	}
	chunks := (n + s.c.maxPayload - 1) / s.c.maxPayload
	per := s.c.sizeLen + s.c.overhead
	if s.c.padding {
		per += maxChunkPad - 1
	}
	return n + chunks*per
}

// Seal appends p to dst as chunks of at most MaxPayload bytes each (or as
// is, encrypted as the security wants, when unframed). An empty p appends
// nothing: the end of the stream is SealEnd.
func (s *Sealer) Seal(dst, p []byte) []byte {
	switch s.c.kind {
	case kindRaw:
		return append(dst, p...)
	case kindRawCFB:
		start := len(dst)
		dst = append(dst, p...)
		s.c.cfb.XORKeyStream(dst[start:], dst[start:])
		return dst
	}
	for len(p) > 0 {
		n := min(len(p), s.c.maxPayload)
		dst = s.sealChunk(dst, p[:n])
		p = p[n:]
	}
	return dst
}

// SealEnd appends the end-of-stream chunk (an empty payload); unframed
// streams have none and get nothing.
func (s *Sealer) SealEnd(dst []byte) []byte {
	if !s.Framed() {
		return dst
	}
	return s.sealChunk(dst, nil)
}

var zeroPad [maxChunkPad]byte

func (s *Sealer) sealChunk(dst, p []byte) []byte {
	c := &s.c
	padLen := 0
	if c.padding {
		padLen = int(c.next() % maxChunkPad) // before the mask, as V2Ray
	}
	size := len(p) + c.overhead + padLen
	start := len(dst)
	switch {
	case c.lenAEAD != nil:
		binary.BigEndian.PutUint16(c.sizeBuf[:], uint16(size-aeadTag))
		dst = c.lenAEAD.Seal(dst, c.nextLenNonce(), c.sizeBuf[:], nil)
	case c.shake != nil:
		dst = binary.BigEndian.AppendUint16(dst, uint16(size)^c.next())
	default:
		dst = binary.BigEndian.AppendUint16(dst, uint16(size))
	}
	switch c.kind {
	case kindPlain:
		dst = append(dst, p...)
	case kindAEAD:
		dst = c.aead.Seal(dst, c.nextNonce(), p, nil)
	case kindFNV:
		dst = binary.BigEndian.AppendUint32(dst, fnv1a(p))
		dst = append(dst, p...)
	}
	if padLen > 0 {
		dst = append(dst, zeroPad[:padLen]...)
		if s.pad != nil {
			io.ReadFull(s.pad, dst[len(dst)-padLen:])
		}
	}
	if c.kind == kindFNV {
		c.cfb.XORKeyStream(dst[start:], dst[start:])
	}
	return dst
}

// Opener decodes one direction of a body: a server's view of the request or
// a client's view of the response. Create it from a Session. It is not safe
// for concurrent use and does not allocate.
type Opener struct {
	c         codec
	hasSize   bool // the current chunk's length field is decoded
	size      int  // its length value
	padLen    int
	decrypted int // CFB: bytes at the start of the chunk already decrypted in place
	done      bool
	err       error
}

// Framed reports whether the stream has chunks and an end marker.
func (o *Opener) Framed() bool { return o.c.kind >= kindPlain }

// Need is how many bytes, from the start of the current chunk, Open needs
// before it can make progress: the length field, or the whole chunk once
// its length is known (at most MaxChunkLen). A caller whose buffer is
// smaller must grow it.
func (o *Opener) Need() int {
	if o.hasSize {
		return o.c.sizeLen + o.size
	}
	return max(o.c.sizeLen, 1)
}

// Open decodes the chunk at the start of src IN PLACE and returns its
// payload (a sub-slice of src) and the bytes it used.
//
// When src holds less than the next chunk it returns protocols.ErrNeedMore
// and n = 0: the caller must call again with the same bytes followed by
// more (some may already have been decrypted in place, and the chunk's
// length is remembered). Unframed streams return all of src at once. At the
// end-of-stream chunk it returns io.EOF, and io.EOF ever after; a chunk that
// fails authentication gives ErrChunk, an impossible length ErrChunkSize,
// and the same error ever after.
func (o *Opener) Open(src []byte) (payload []byte, n int, err error) {
	if o.err != nil {
		return nil, 0, o.err
	}
	c := &o.c
	switch c.kind {
	case kindRaw:
		if len(src) == 0 {
			return nil, 0, protocols.ErrNeedMore
		}
		return src, len(src), nil
	case kindRawCFB:
		if len(src) == 0 {
			return nil, 0, protocols.ErrNeedMore
		}
		c.cfb.XORKeyStream(src, src)
		return src, len(src), nil
	}
	if !o.hasSize {
		if len(src) < c.sizeLen {
			return nil, 0, protocols.ErrNeedMore
		}
		if c.kind == kindFNV {
			c.cfb.XORKeyStream(src[:2], src[:2])
			o.decrypted = 2
		}
		padLen := 0
		if c.padding {
			padLen = int(c.next() % maxChunkPad)
		}
		var size int
		switch {
		case c.lenAEAD != nil:
			if _, err := c.lenAEAD.Open(c.sizeBuf[:0], c.nextLenNonce(), src[:c.sizeLen], nil); err != nil {
				o.err = fmt.Errorf("%w (length)", ErrChunk)
				return nil, 0, o.err
			}
			size = int(binary.BigEndian.Uint16(c.sizeBuf[:])) + aeadTag
		case c.shake != nil:
			size = int(binary.BigEndian.Uint16(src) ^ c.next())
		default:
			size = int(binary.BigEndian.Uint16(src))
		}
		o.size, o.padLen = size, padLen
		if size == c.overhead+padLen {
			o.done, o.err = true, io.EOF
			return nil, c.sizeLen, io.EOF
		}
		if size < c.overhead+padLen {
			o.err = fmt.Errorf("%w: %d bytes cannot hold %d of overhead and %d of padding", ErrChunkSize, size, c.overhead, padLen)
			return nil, 0, o.err
		}
		o.hasSize = true
	}
	total := c.sizeLen + o.size
	if len(src) < total {
		return nil, 0, protocols.ErrNeedMore
	}
	body := src[c.sizeLen : total-o.padLen]
	switch c.kind {
	case kindPlain:
		payload = body
	case kindAEAD:
		payload, err = c.aead.Open(body[:0], c.nextNonce(), body, nil)
		if err != nil {
			o.err = ErrChunk
			return nil, 0, o.err
		}
	case kindFNV:
		c.cfb.XORKeyStream(src[o.decrypted:total], src[o.decrypted:total])
		if binary.BigEndian.Uint32(body) != fnv1a(body[4:]) {
			o.err = fmt.Errorf("%w (FNV-1a)", ErrChunk)
			return nil, 0, o.err
		}
		payload = body[4:]
	}
	o.hasSize, o.decrypted = false, 0
	return payload, total, nil
}
