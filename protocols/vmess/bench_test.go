package vmess

import (
	"crypto/cipher"
	mathrand "math/rand/v2"
	"testing"
	"time"
)

// benchPayload is V2Ray's payload per chunk with masking and padding: the
// chunk size every V2Ray peer sends in bulk.
const benchPayload = ChunkLimit - 16 - 2 - 64

var benchAEADs = []struct {
	name string
	sec  Security
}{{"aes-128-gcm", SecurityAES128GCM}, {"chacha20-poly1305", SecurityChaCha20Poly1305}}

func bareAEAD(s Security) cipher.AEAD {
	r := testRequest()
	return newBodyAEAD(s, r.Key[:])
}

// BenchmarkChunkSeal seals one V2Ray-sized chunk per op, with V2Ray's
// options (masking, padding), and reports beside it the bare cipher.AEAD
// sealing the same bytes, and their ratio (1.00 = no cost over the AEAD).
func BenchmarkChunkSeal(b *testing.B) {
	for _, a := range benchAEADs {
		b.Run(a.name, func(b *testing.B) {
			s := session(bodyConfig{a.sec, 0x0d}, false)
			sealer, _ := s.RequestSealer(mathrand.NewChaCha8([32]byte{}))
			bare := bareAEAD(a.sec)
			payload := make([]byte, benchPayload)
			buf := make([]byte, 0, 2*ChunkLimit)
			var nonce [12]byte
			var tBare, tVMess time.Duration
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				buf = bare.Seal(buf[:0], nonce[:], payload, nil)
				t1 := time.Now()
				buf = sealer.Seal(buf[:0], payload)
				t2 := time.Now()
				tBare, tVMess = tBare+t1.Sub(t0), tVMess+t2.Sub(t1)
			}
			report(b, tBare, tVMess)
		})
	}
}

// BenchmarkChunkOpen opens one V2Ray-sized chunk per op, in place, beside
// the bare cipher.AEAD opening the same bytes; both walk a stream of 256
// chunks, so that both pay the same cache misses.
func BenchmarkChunkOpen(b *testing.B) {
	for _, a := range benchAEADs {
		b.Run(a.name, func(b *testing.B) {
			const batch = 256
			s := session(bodyConfig{a.sec, 0x0d}, false)
			payload := make([]byte, benchPayload)
			bare := bareAEAD(a.sec)
			var nonce [12]byte
			var stream, bareStream []byte
			sealer, _ := s.RequestSealer(nil)
			for i := range batch {
				stream = sealer.Seal(stream, payload)
				nonce[0] = byte(i)
				bareStream = bare.Seal(bareStream, nonce[:], payload, nil)
			}
			work, bareWork := make([]byte, len(stream)), make([]byte, len(bareStream))
			sealedLen := benchPayload + 16
			var o *Opener
			var rest []byte
			i := 0
			var tBare, tVMess time.Duration
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				if i%batch == 0 { // fresh streams every batch chunks
					o, _ = s.RequestOpener()
					copy(work, stream)
					copy(bareWork, bareStream)
					rest = work
				}
				nonce[0] = byte(i % batch)
				chunk := bareWork[(i%batch)*sealedLen : (i%batch+1)*sealedLen]
				t0 := time.Now()
				if _, err := bare.Open(chunk[:0], nonce[:], chunk, nil); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				_, n, err := o.Open(rest)
				t2 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				rest = rest[n:]
				i++
				tBare, tVMess = tBare+t1.Sub(t0), tVMess+t2.Sub(t1)
			}
			report(b, tBare, tVMess)
		})
	}
}

func report(b *testing.B, bare, vmess time.Duration) {
	if bare <= 0 || vmess <= 0 {
		return
	}
	mb := float64(b.N) * benchPayload / 1e6
	b.ReportMetric(mb/bare.Seconds(), "bare-MB/s")
	b.ReportMetric(mb/vmess.Seconds(), "vmess-MB/s")
	b.ReportMetric(bare.Seconds()/vmess.Seconds(), "vmess/bare")
}

// BenchmarkHeaders is a client's AEAD request header plus a server's open
// of it and its response header: the per-connection cost.
func BenchmarkHeaders(b *testing.B) {
	k := NewUserKey(testUUID)
	r := testRequest()
	buf := make([]byte, 0, MaxAEADHeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendAEADRequest(buf[:0], k, testSeed, &r)
		got, _, err := OpenAEADRequest(k, buf)
		if err != nil {
			b.Fatal(err)
		}
		s := got.Session(false)
		if _, _, err := s.AppendResponse(nil, &Response{Auth: got.ResponseAuth}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenAuthID is the per-user cost of matching a connection.
func BenchmarkOpenAuthID(b *testing.B) {
	k := NewUserKey(testUUID)
	id := k.AuthID(testSeed.Time, testSeed.AuthRand)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := k.OpenAuthID(id[:]); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkKDF is the header keys' derivation: a label, the AuthID and the
// nonce deep.
func BenchmarkKDF(b *testing.B) {
	key := make([]byte, 16)
	b.ReportAllocs()
	for range b.N {
		KDF(key, LabelHeaderKey, "0123456789abcdef", "01234567")
	}
}
