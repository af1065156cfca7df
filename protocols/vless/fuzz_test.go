package vless

import (
	"errors"
	"reflect"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// FuzzParseRequest checks that ParseRequest never panics, never claims more
// bytes than it was given, and that what it accepts re-encodes to a header
// that parses to the same value, every proper prefix of which asks for more.
// Seeds: testdata/fuzz/FuzzParseRequest (the hand-written vectors) and f.Add.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{0})
	f.Add(hdr("00", idHex, "00 03"))
	f.Add(hdr("00", idHex, "05 0a01611200 01 0050 02 01 61"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseRequest(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			if err != protocols.ErrNeedMore && !errors.Is(err, ErrUnknownVersion) && !errors.Is(err, ErrUnsupportedCommand) &&
				!errors.Is(err, ErrBadAddons) && !errors.Is(err, protocols.ErrBadAddr) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n < 1+16+1+1 || n > len(b) || n > MaxRequestLen {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		if ok, err := Match(b, func(id [16]byte) bool { return id == r.ID }); !ok || err != nil {
			t.Fatalf("Match refuses an accepted header: %v, %v", ok, err)
		}
		wire, err := AppendRequest(nil, &r)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", r, err)
		}
		r2, n2, err := ParseRequest(wire)
		if err != nil || n2 != len(wire) || !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-encoded header parses to %+v, %d, %v; want %+v", r2, n2, err, r)
		}
		for i := range wire {
			if _, _, err := ParseRequest(wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d of %x: %v", i, wire, err)
			}
		}
	})
}

// FuzzParseResponse is FuzzParseRequest for the response header.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 3, 0x0a, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseResponse(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			if err != protocols.ErrNeedMore && !errors.Is(err, ErrUnknownVersion) && !errors.Is(err, ErrBadAddons) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n < 2 || n > len(b) || n > MaxResponseLen {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		wire, err := AppendResponse(nil, &r)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", r, err)
		}
		r2, n2, err := ParseResponse(wire)
		if err != nil || n2 != len(wire) || !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-encoded response parses to %+v, %d, %v; want %+v", r2, n2, err, r)
		}
		if len(wire) > n {
			t.Fatalf("canonical encoding %x is longer than the input's %d bytes", wire, n)
		}
	})
}
