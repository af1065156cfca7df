package anytls

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// Seeds for every target: testdata/fuzz/<target> (from the hand-written
// vectors, see TestFuzzSeeds) and the f.Add calls.

// FuzzParseFrame: ParseFrame never panics or claims more than it was
// given; what it accepts re-encodes to the same bytes, every proper prefix
// of which asks for more.
func FuzzParseFrame(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 1, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := ParseFrame(b)
		if err != nil {
			if err != protocols.ErrNeedMore || n != 0 {
				t.Fatalf("ParseFrame: %d, %v", n, err)
			}
			return
		}
		if n != HeaderLen+len(fr.Data) || n > len(b) {
			t.Fatalf("n=%d for %d data bytes of %d", n, len(fr.Data), len(b))
		}
		wire, err := AppendFrame(nil, fr)
		if err != nil || !bytes.Equal(wire, b[:n]) {
			t.Fatalf("re-encoded %x, %v; want %x", wire, err, b[:n])
		}
		for i := range wire {
			if _, _, err := ParseFrame(wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
	})
}

// FuzzParseAuth is FuzzParseFrame for the authentication.
func FuzzParseAuth(f *testing.F) {
	f.Add(make([]byte, 34))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, n, err := ParseAuth(b)
		if err != nil {
			if err != protocols.ErrNeedMore || n != 0 {
				t.Fatalf("ParseAuth: %d, %v", n, err)
			}
			return
		}
		if n != AuthHeaderLen+a.PaddingLen || n > len(b) {
			t.Fatalf("n=%d for padding %d of %d bytes", n, a.PaddingLen, len(b))
		}
		wire, err := AppendAuth(nil, a.Hash, a.PaddingLen)
		if err != nil || !bytes.Equal(wire[:AuthHeaderLen], b[:AuthHeaderLen]) || len(wire) != n {
			t.Fatalf("re-encoded %x, %v", wire, err)
		}
		for i := range wire {
			if _, _, err := ParseAuth(b[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
	})
}

// FuzzParseSettings: what ParseSettings accepts re-encodes, and the
// encoding parses to the same settings.
func FuzzParseSettings(f *testing.F) {
	f.Add([]byte("v=2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, n, err := ParseSettings(b)
		if err != nil {
			if !errors.Is(err, ErrBadSettings) || len(b) <= MaxDataLen {
				t.Fatalf("ParseSettings: %v", err)
			}
			return
		}
		if n != len(b) {
			t.Fatalf("n=%d of %d", n, len(b))
		}
		wire, err := AppendSettings(nil, s)
		if err != nil {
			t.Fatalf("cannot re-encode %q: %v", s, err)
		}
		s2, _, err := ParseSettings(wire)
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("%q re-encoded as %q parses to %q, %v", s, wire, s2, err)
		}
		_ = s.Version()
	})
}

// FuzzParseScheme: a scheme that parses has the MD5 of its bytes, and every
// plan it makes carries the payload exactly, in records a TLS write can
// send (each with content, each waste frame within a frame's limit).
func FuzzParseScheme(f *testing.F) {
	f.Add([]byte("stop=1\n0=1-2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseScheme(b)
		if err != nil {
			if !errors.Is(err, ErrBadScheme) {
				t.Fatalf("error %v does not wrap ErrBadScheme", err)
			}
			return
		}
		sum := md5.Sum(b)
		if s.MD5() != hex.EncodeToString(sum[:]) || s.Raw() != string(b) {
			t.Fatalf("MD5 %s, raw %q", s.MD5(), s.Raw())
		}
		if p := s.Padding0(fixedRand(len(b))); p < 0 || p > MaxDataLen {
			t.Fatalf("Padding0 = %d", p)
		}
		again, err := ParseScheme([]byte(s.Raw()))
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("reparse: %v", err)
		}
		var plan []Record
		for pkt := uint32(0); pkt < min(s.Stop(), 12); pkt++ {
			for _, payload := range []int{0, 1, 7, len(b), 1400, 70000} {
				plan = s.Plan(plan[:0], pkt, payload, fixedRand(payload))
				sum := 0
				for _, r := range plan {
					if r.Len() <= 0 || r.Payload < 0 || r.Waste < NoWaste || r.Waste > MaxDataLen {
						t.Fatalf("packet %d payload %d: bad record %+v in %+v", pkt, payload, r, plan)
					}
					sum += r.Payload
				}
				if sum != payload {
					t.Fatalf("packet %d: plan carries %d of %d bytes: %+v", pkt, sum, payload, plan)
				}
			}
		}
	})
}

// FuzzUoTRequest is FuzzParseFrame for the udp-over-tcp request.
func FuzzUoTRequest(f *testing.F) {
	f.Add([]byte{1, 1, 1, 2, 3, 4, 0, 53})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseUoTRequest(b)
		if err != nil {
			if n != 0 || (err != protocols.ErrNeedMore && !errors.Is(err, ErrBadUoT)) {
				t.Fatalf("ParseUoTRequest: %d, %v", n, err)
			}
			return
		}
		wire, err := AppendUoTRequest(nil, r)
		if err != nil || !bytes.Equal(wire, b[:n]) {
			t.Fatalf("re-encoded %x, %v; want %x", wire, err, b[:n])
		}
		for i := range wire {
			if _, _, err := ParseUoTRequest(wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
	})
}

// FuzzUoTPacket is FuzzParseFrame for udp-over-tcp packets, in both modes.
func FuzzUoTPacket(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 0, 53, 0, 1, 'x'}, false)
	f.Fuzz(func(t *testing.T, b []byte, connect bool) {
		p, n, err := ParseUoTPacket(b, connect)
		if err != nil {
			if n != 0 || (err != protocols.ErrNeedMore && !errors.Is(err, ErrBadUoT)) {
				t.Fatalf("ParseUoTPacket: %d, %v", n, err)
			}
			return
		}
		wire, err := AppendUoTPacket(nil, connect, p)
		if err != nil || !bytes.Equal(wire, b[:n]) {
			t.Fatalf("re-encoded %x, %v; want %x", wire, err, b[:n])
		}
		for i := range wire {
			if _, _, err := ParseUoTPacket(wire[:i], connect); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
	})
}
