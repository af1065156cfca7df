package vless

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// fuzzRequestV1 checks a v1 request parser: no panic, no overclaim, only
// the documented errors, and what it accepts re-encodes to exactly the
// bytes it used (the encoding is unique), every proper prefix of which asks
// for more.
func fuzzRequestV1(t *testing.T, b []byte, next bool) {
	r, n, err := parseV1(next)(b)
	if err != nil {
		if n != 0 {
			t.Fatalf("error %v with n=%d", err, n)
		}
		if err != protocols.ErrNeedMore && !errors.Is(err, ErrUnknownVersion) && !errors.Is(err, ErrUnknownAddon) &&
			!errors.Is(err, ErrBadAddons) && !errors.Is(err, ErrUnsupportedCommand) && !errors.Is(err, protocols.ErrBadAddr) {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	max := map[bool]int{false: MaxRequestV1Len, true: MaxNextRequestLen}[next]
	if n > len(b) || n > max || r.PadLen > MaxPadLen || (r.PadLen != 0 && !r.Padded) || (next && r.Padded) {
		t.Fatalf("accepted %+v using %d of %d bytes", r, n, len(b))
	}
	if !next {
		if ok, err := MatchV1(b, func(id [16]byte) bool { return id == r.ID }); !ok || err != nil {
			t.Fatalf("MatchV1 refuses an accepted header: %v, %v", ok, err)
		}
	}
	wire, err := appendV1(next)(nil, &r)
	if err != nil {
		t.Fatalf("cannot re-encode %+v: %v", r, err)
	}
	if !bytes.Equal(wire, b[:n]) {
		t.Fatalf("re-encoding %+v gives %x, the input was %x", r, wire, b[:n])
	}
	r2, n2, err := parseV1(next)(wire)
	if err != nil || n2 != len(wire) || !reflect.DeepEqual(r, r2) {
		t.Fatalf("re-encoded header parses to %+v, %d, %v; want %+v", r2, n2, err, r)
	}
	for i := range wire {
		if _, _, err := parseV1(next)(wire[:i]); err != protocols.ErrNeedMore {
			t.Fatalf("prefix %d of %x: %v", i, wire, err)
		}
	}
}

// FuzzParseRequestV1 fuzzes the first header. Seeds:
// testdata/fuzz/FuzzParseRequestV1 (the hand-written vectors) and f.Add.
func FuzzParseRequestV1(f *testing.F) {
	f.Add([]byte{1})
	f.Add(hdr("01", idHex, "02 02 10 11 01 0050 02 01 61"))
	f.Add(hdr("01", idHex, "12 0010 01 0050 01 01020304", "00000000000000000000000000000000"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRequestV1(t, b, false) })
}

// FuzzParseNextRequest fuzzes the header of a reused connection.
func FuzzParseNextRequest(f *testing.F) {
	f.Add([]byte{0x10})
	f.Add(hdr("02 03 01 10 11 03 0000 02 02 6162"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRequestV1(t, b, true) })
}

// FuzzChunks parses b as a keep-alive direction: chunks until the end
// marker. What parses re-frames to the same bytes, and the data survives
// framing with small chunk limits (1..4, from len(b)) and with none.
func FuzzChunks(f *testing.F) {
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 3, 'a', 'b', 'c', 0, 1, 'd', 0, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		max := len(b) % 5 // 0: no limit
		var data []byte
		var sizes []int
		rest := b
		for {
			c, end, n, err := ParseChunk(rest)
			if err != nil {
				if err != protocols.ErrNeedMore || n != 0 {
					t.Fatalf("ParseChunk: %d, %v", n, err)
				}
				return
			}
			if n > len(rest) || (end != (len(c) == 0)) || (!end && n != len(c)+ChunkHeaderLen) {
				t.Fatalf("chunk of %d bytes, end %v, used %d of %d", len(c), end, n, len(rest))
			}
			rest = rest[n:]
			if end {
				break
			}
			data = append(data, c...)
			sizes = append(sizes, len(c))
		}
		var again []byte
		off := 0
		for _, s := range sizes {
			again = AppendChunks(again, data[off:off+s], s)
			off += s
		}
		again = AppendChunkEnd(again)
		if used := len(b) - len(rest); !bytes.Equal(again, b[:used]) {
			t.Fatalf("re-framed %x, input %x", again, b[:used])
		}
		var got []byte
		for w := AppendChunks(nil, data, max); len(w) > 0; {
			c, end, n, err := ParseChunk(w)
			if err != nil || end {
				t.Fatalf("reframed with max %d: %v, end %v", max, err, end)
			}
			got, w = append(got, c...), w[n:]
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("data changed when reframed with max %d", max)
		}
	})
}

// FuzzParseResolved checks the resolved-address parser the same way.
func FuzzParseResolved(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 10, 0, 0, 1, 0, 80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, n, err := ParseResolved(b)
		if err != nil {
			if n != 0 || (err != protocols.ErrNeedMore && !errors.Is(err, ErrBadResolved)) {
				t.Fatalf("%d, %v", n, err)
			}
			return
		}
		wire := AppendResolved(nil, ap)
		if n > len(b) || n > MaxResolvedLen || (!bytes.Equal(wire, b[:n]) && !ap.Addr().Is4In6()) {
			t.Fatalf("%v used %d of %x; re-encodes to %x", ap, n, b, wire)
		}
	})
}
