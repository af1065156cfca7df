package vmess

import (
	"bytes"
	"crypto/sha3"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols"
)

type bodyConfig struct {
	sec  Security
	opts Option
}

func (c bodyConfig) String() string { return fmt.Sprintf("%v/%#02x", c.sec, byte(c.opts)) }

// bodyConfigs covers what V2Ray clients send and the option combinations
// a server must read.
var bodyConfigs = []bodyConfig{
	{SecurityAES128GCM, 0x0d}, {SecurityChaCha20Poly1305, 0x0d}, // V2Ray's defaults
	{SecurityAES128GCM, 0x1d}, {SecurityChaCha20Poly1305, 0x1d}, // authenticated length
	{SecurityAES128GCM, 0x15}, {SecurityAES128GCM, 0x10}, // authenticated length without padding
	{SecurityAES128GCM, 0x05}, {SecurityAES128GCM, 0x01}, {SecurityAES128GCM, 0x00}, // fewer options
	{SecurityChaCha20Poly1305, 0x00},
	{SecurityNone, 0x05}, {SecurityNone, 0x01}, {SecurityNone, 0x0d}, {SecurityNone, 0x00}, // none; zero
	{SecurityLegacy, 0x01}, {SecurityLegacy, 0x0d}, {SecurityLegacy, 0x00},
}

func session(c bodyConfig, legacy bool) Session {
	r := testRequest()
	r.Security, r.Options = c.sec, c.opts
	return r.Session(legacy)
}

// openAll feeds stream to o in pieces of at most step bytes (0: all at
// once), as a connection would, and returns the payload and the final
// error (io.EOF for a framed stream that ended, ErrNeedMore otherwise).
func openAll(o *Opener, stream []byte, step int) ([]byte, error) {
	src := bytes.Clone(stream)
	var out, buf []byte
	for {
		p, n, err := o.Open(buf)
		if err == nil {
			out = append(out, p...)
			buf = buf[n:]
			continue
		}
		if err != protocols.ErrNeedMore {
			return out, err
		}
		if len(src) == 0 {
			return out, err
		}
		m := len(src)
		if step > 0 {
			m = min(m, step)
		}
		buf = append(buf, src[:m]...) // may move buf: Open tolerates it
		src = src[m:]
	}
}

func TestChunkRoundTrip(t *testing.T) {
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	payloads := [][]byte{[]byte("a"), seq(200, 0), make([]byte, 8110), make([]byte, 8175), make([]byte, 70000)}
	for _, p := range payloads[2:] {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	}
	var all []byte
	for _, p := range payloads {
		all = append(all, p...)
	}
	for _, c := range bodyConfigs {
		for _, legacy := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/legacy=%v", c, legacy), func(t *testing.T) {
				s := session(c, legacy)
				sealer, err := s.RequestSealer(mathrand.NewChaCha8([32]byte{1}))
				if err != nil {
					t.Fatal(err)
				}
				var stream []byte
				for _, p := range payloads {
					before := len(stream)
					stream = sealer.Seal(stream, p)
					if grew := len(stream) - before; grew > sealer.SealedLen(len(p)) {
						t.Errorf("Seal of %d bytes appended %d > SealedLen %d", len(p), grew, sealer.SealedLen(len(p)))
					}
				}
				stream = sealer.SealEnd(stream)
				for _, step := range []int{0, 1, 7, 1000, 8192} {
					o, err := s.RequestOpener()
					if err != nil {
						t.Fatal(err)
					}
					got, err := openAll(o, stream, step)
					wantErr := error(io.EOF)
					if !sealer.Framed() {
						wantErr = protocols.ErrNeedMore
					}
					if err != wantErr || !bytes.Equal(got, all) {
						t.Fatalf("step %d: %d bytes (want %d), err %v (want %v)", step, len(got), len(all), err, wantErr)
					}
					if o.Framed() != sealer.Framed() {
						t.Error("Framed differs")
					}
				}
				// The response direction, behind its header.
				hdr, rs, err := s.AppendResponse(nil, &Response{Auth: s.ResponseAuth}, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp := rs.SealEnd(rs.Seal(hdr, all))
				_, n, ro, err := s.OpenResponse(resp)
				if err != nil {
					t.Fatal(err)
				}
				got, err := openAll(ro, resp[n:], 333)
				if !bytes.Equal(got, all) || (rs.Framed() && err != io.EOF) {
					t.Fatalf("response: %d bytes, %v", len(got), err)
				}
			})
		}
	}
}

func TestChunkSizes(t *testing.T) {
	for _, c := range bodyConfigs {
		s := session(c, false)
		sealer, _ := s.RequestSealer(nil)
		if !sealer.Framed() {
			continue
		}
		o, _ := s.RequestOpener()
		stream := sealer.Seal(nil, make([]byte, 3*sealer.MaxPayload()+1))
		chunks := 0
		for len(stream) > 0 {
			need := o.Need()
			p, n, err := o.Open(bytes.Clone(stream[:need]))
			if err == protocols.ErrNeedMore {
				if o.Need() <= need {
					t.Fatalf("%v: Need did not grow past %d", c, need)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			if n-sealer.c.sizeLen > ChunkLimit {
				t.Errorf("%v: a chunk of %d bytes after its length, limit %d", c, n-sealer.c.sizeLen, ChunkLimit)
			}
			if chunks < 3 && len(p) != sealer.MaxPayload() {
				t.Errorf("%v: chunk %d carries %d, want %d", c, chunks, len(p), sealer.MaxPayload())
			}
			stream = stream[n:]
			chunks++
		}
		if chunks != 4 {
			t.Errorf("%v: %d chunks, want 4", c, chunks)
		}
	}
	// V2Ray's payload per chunk: buf.Size - overhead - length - max padding.
	for c, want := range map[bodyConfig]int{
		{SecurityAES128GCM, 0x0d}: 8192 - 16 - 2 - 64,
		{SecurityAES128GCM, 0x05}: 8192 - 16 - 2,
		{SecurityAES128GCM, 0x1d}: 8192 - 16 - 18 - 64,
		{SecurityNone, 0x05}:      8192,
		{SecurityLegacy, 0x01}:    8192 - 4 - 2,
	} {
		s := session(c, false)
		sealer, _ := s.RequestSealer(nil)
		if sealer.MaxPayload() != want {
			t.Errorf("%v: MaxPayload %d, want %d", c, sealer.MaxPayload(), want)
		}
	}
}

// shakeStream is SHAKE128(iv) read 2 bytes at a time.
func shakeStream(iv []byte) func() uint16 {
	h := sha3.NewSHAKE128()
	h.Write(iv)
	return func() uint16 {
		var b [2]byte
		h.Read(b[:])
		return binary.BigEndian.Uint16(b[:])
	}
}

// TestChunkLayout writes the first chunks of each body form by hand from
// the layout and compares.
func TestChunkLayout(t *testing.T) {
	r := testRequest()
	nonce := func(count uint16, iv [16]byte) []byte {
		n := bytes.Clone(iv[:12])
		binary.BigEndian.PutUint16(n, count)
		return n
	}
	payload := []byte("hello vmess")
	seal := func(c bodyConfig) []byte {
		s := session(c, false)
		sealer, err := s.RequestSealer(nil)
		if err != nil {
			t.Fatal(err)
		}
		return sealer.Seal(sealer.Seal(nil, payload), payload)
	}

	// aes-128-gcm, plain lengths: length ‖ GCM(key, 0000‖IV[2:12]).
	gcm := newGCM(r.Key[:])
	var want []byte
	for i := range 2 {
		want = binary.BigEndian.AppendUint16(want, uint16(len(payload)+16))
		want = gcm.Seal(want, nonce(uint16(i), r.IV), payload, nil)
	}
	if got := seal(bodyConfig{SecurityAES128GCM, 0x01}); !bytes.Equal(got, want) {
		t.Errorf("gcm plain:\n got %x\nwant %x", got, want)
	}

	// chacha20-poly1305 with masking and padding: per chunk the padding
	// length is drawn, then the mask; zero padding bytes (nil pad reader).
	ck := chachaKey(r.Key[:])
	cc, _ := chacha20poly1305.New(ck[:])
	next := shakeStream(r.IV[:])
	want = nil
	for i := range 2 {
		pad := int(next() % 64)
		want = binary.BigEndian.AppendUint16(want, uint16(len(payload)+16+pad)^next())
		want = cc.Seal(want, nonce(uint16(i), r.IV), payload, nil)
		want = append(want, make([]byte, pad)...)
	}
	if got := seal(bodyConfig{SecurityChaCha20Poly1305, 0x0d}); !bytes.Equal(got, want) {
		t.Errorf("chacha masked padded:\n got %x\nwant %x", got, want)
	}

	// none: masked length ‖ payload, no padding even with the padding bit.
	next = shakeStream(r.IV[:])
	want = nil
	for range 2 {
		want = binary.BigEndian.AppendUint16(want, uint16(len(payload))^next())
		want = append(want, payload...)
	}
	if got := seal(bodyConfig{SecurityNone, 0x0d}); !bytes.Equal(got, want) {
		t.Errorf("none masked:\n got %x\nwant %x", got, want)
	}

	// aes-128-cfb: CFB over length ‖ FNV1a ‖ payload, one stream.
	var plain []byte
	for range 2 {
		plain = binary.BigEndian.AppendUint16(plain, uint16(len(payload)+4))
		plain = binary.BigEndian.AppendUint32(plain, fnv1a(payload))
		plain = append(plain, payload...)
	}
	want = make([]byte, len(plain))
	newCFBEncrypter(r.Key[:], r.IV[:]).XORKeyStream(want, plain)
	if got := seal(bodyConfig{SecurityLegacy, 0x01}); !bytes.Equal(got, want) {
		t.Errorf("cfb:\n got %x\nwant %x", got, want)
	}

	// zero: the bytes as they are.
	if got := seal(bodyConfig{SecurityNone, 0}); !bytes.Equal(got, append(bytes.Clone(payload), payload...)) {
		t.Errorf("zero: %x", got)
	}

	// End of stream: an empty payload, masked like any chunk.
	s := session(bodyConfig{SecurityAES128GCM, 0x05}, false)
	sealer, _ := s.RequestSealer(nil)
	next = shakeStream(r.IV[:])
	want = binary.BigEndian.AppendUint16(nil, 16^next())
	want = gcm.Seal(want, nonce(0, r.IV), nil, nil)
	if got := sealer.SealEnd(nil); !bytes.Equal(got, want) {
		t.Errorf("end:\n got %x\nwant %x", got, want)
	}
}

// TestAuthenticatedLengthKeys pins V2Ray's quirk: the length AEAD of BOTH
// directions is keyed with KDF16(REQUEST key, "auth_len") and uses the
// REQUEST IV in its nonces, each direction counting from 0.
func TestAuthenticatedLengthKeys(t *testing.T) {
	r := testRequest()
	r.Options = 0x15 // chunk stream, masking, authenticated length; no padding
	s := r.Session(false)
	lk := KDF16(r.Key[:], LabelAuthLen)
	la := newGCM(lk[:])
	n0 := bytes.Clone(r.IV[:12])
	n0[0], n0[1] = 0, 0
	want := la.Seal(nil, n0, binary.BigEndian.AppendUint16(nil, 5), nil) // payload 5, length field = len - 16 + 16
	sealer, _ := s.RequestSealer(nil)
	if got := sealer.Seal(nil, []byte("hello")); !bytes.Equal(got[:18], want) {
		t.Errorf("request length field %x, want %x", got[:18], want)
	}
	hdr, rs, _ := s.AppendResponse(nil, &Response{Auth: r.ResponseAuth}, nil)
	if got := rs.Seal(nil, []byte("hello")); !bytes.Equal(got[:18], want) {
		t.Errorf("response length field %x, want the request direction's %x", got[:18], want)
	}
	_ = hdr
	// chacha20-poly1305 expands the auth_len key like the body key.
	r.Security = SecurityChaCha20Poly1305
	s = r.Session(false)
	ck := chachaKey(lk[:])
	cc, _ := chacha20poly1305.New(ck[:])
	want = cc.Seal(nil, n0, binary.BigEndian.AppendUint16(nil, 5), nil)
	sealer, _ = s.RequestSealer(nil)
	if got := sealer.Seal(nil, []byte("hello")); !bytes.Equal(got[:18], want) {
		t.Errorf("chacha request length field %x, want %x", got[:18], want)
	}
}

// TestNonceWraps pins V2Ray's 16-bit chunk counter: chunk 65536 reuses
// chunk 0's nonce.
func TestNonceWraps(t *testing.T) {
	s := session(bodyConfig{SecurityAES128GCM, 0x01}, false)
	sealer, _ := s.RequestSealer(nil)
	first := sealer.Seal(nil, []byte("x"))
	buf := make([]byte, 0, 64)
	for range 65535 {
		buf = sealer.Seal(buf[:0], []byte("x"))
	}
	if again := sealer.Seal(nil, []byte("x")); !bytes.Equal(again, first) {
		t.Error("chunk 65536 does not reuse chunk 0's nonce")
	}
}

func TestOpenerErrors(t *testing.T) {
	// Every flipped byte after the length field of an unpadded
	// authenticated chunk is caught; a flipped length either fails
	// authentication (sealed length), asks for more, or is impossible.
	for _, c := range []bodyConfig{{SecurityAES128GCM, 0x05}, {SecurityChaCha20Poly1305, 0x01}, {SecurityAES128GCM, 0x15},
		{SecurityChaCha20Poly1305, 0x10}, {SecurityLegacy, 0x01}, {SecurityLegacy, 0x05}} {
		s := session(c, false)
		sealer, _ := s.RequestSealer(nil)
		stream := sealer.Seal(nil, []byte("0123456789"))
		sizeLen := sealer.c.sizeLen
		for i := range stream {
			bad := bytes.Clone(stream)
			bad[i] ^= 0x01
			o, _ := s.RequestOpener()
			_, _, err := o.Open(bad)
			switch {
			case i >= sizeLen || sealer.c.lenAEAD != nil:
				if !errors.Is(err, ErrChunk) {
					t.Errorf("%v: byte %d flipped: %v, want ErrChunk", c, i, err)
				}
			default:
				if err == nil {
					t.Errorf("%v: length byte %d flipped, no error", c, i)
				}
			}
			if err != nil && err != protocols.ErrNeedMore {
				if _, _, again := o.Open(stream); again != err {
					t.Errorf("%v: error not sticky: %v then %v", c, err, again)
				}
			}
		}
	}
	// A length below the overhead.
	s := session(bodyConfig{SecurityAES128GCM, 0x01}, false)
	o, _ := s.RequestOpener()
	if _, _, err := o.Open([]byte{0, 5, 1, 2, 3, 4, 5}); !errors.Is(err, ErrChunkSize) {
		t.Errorf("length 5: %v", err)
	}
	// After the end, always EOF.
	sealer, _ := s.RequestSealer(nil)
	o, _ = s.RequestOpener()
	end := sealer.SealEnd(nil)
	if _, n, err := o.Open(end); err != io.EOF || n != 2 {
		t.Errorf("end: %d, %v", n, err)
	}
	if _, _, err := o.Open([]byte("more")); err != io.EOF {
		t.Errorf("after end: %v", err)
	}
}

func TestSessionRefusesBadOptions(t *testing.T) {
	for _, c := range []bodyConfig{{SecurityAES128GCM, OptionGlobalPadding}, {SecurityZero, 0}, {SecurityAuto, 0x0d}} {
		s := session(c, false)
		if _, err := s.RequestSealer(nil); err == nil {
			t.Errorf("%v: sealer made", c)
		}
		if _, err := s.RequestOpener(); err == nil {
			t.Errorf("%v: opener made", c)
		}
		if _, _, err := s.AppendResponse(nil, &Response{}, nil); err == nil {
			t.Errorf("%v: response made", c)
		}
	}
}

// TestChunkZeroAllocsSteadyState: sealing into a reused buffer and
// opening in place allocate nothing per chunk.
func TestChunkZeroAllocsSteadyState(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; run without it")
	}
	payload := make([]byte, 8000)
	for _, c := range []bodyConfig{{SecurityAES128GCM, 0x0d}, {SecurityChaCha20Poly1305, 0x0d}, {SecurityAES128GCM, 0x1d},
		{SecurityChaCha20Poly1305, 0x1d}, {SecurityNone, 0x05}, {SecurityLegacy, 0x01}, {SecurityNone, 0}} {
		s := session(c, false)
		sealer, _ := s.RequestSealer(mathrand.NewChaCha8([32]byte{}))
		o, _ := s.RequestOpener()
		buf := make([]byte, 0, 2*ChunkLimit)
		allocs := testing.AllocsPerRun(200, func() {
			buf = sealer.Seal(buf[:0], payload)
			rest := buf
			for len(rest) > 0 {
				_, n, err := o.Open(rest)
				if err != nil {
					panic(err)
				}
				rest = rest[n:]
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %.1f allocations per seal+open", c, allocs)
		}
	}
}
