package vless

import (
	"bytes"
	"errors"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

var packetVectors = []struct {
	payload []byte
	wire    []byte
}{
	{nil, []byte{0, 0}},
	{[]byte("abc"), []byte{0, 3, 'a', 'b', 'c'}},
	{bytes.Repeat([]byte{7}, 300), append([]byte{1, 0x2c}, bytes.Repeat([]byte{7}, 300)...)},
}

func TestPacketRoundTrip(t *testing.T) {
	for _, v := range packetVectors {
		got, err := AppendPacket([]byte{0xAA}, v.payload)
		if err != nil || !bytes.Equal(got[1:], v.wire) {
			t.Fatalf("AppendPacket(%d bytes) = % x, %v", len(v.payload), got, err)
		}
		p, n, err := ParsePacket(append(bytes.Clone(v.wire), 0xEE))
		if err != nil || n != len(v.wire) || !bytes.Equal(p, v.payload) {
			t.Fatalf("ParsePacket = %d bytes, n=%d, %v", len(p), n, err)
		}
		for i := range v.wire {
			if _, _, err := ParsePacket(v.wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d of %d: err = %v, want ErrNeedMore", i, len(v.wire), err)
			}
		}
	}
	if b, err := AppendPacket(nil, make([]byte, MaxPacketLen+1)); !errors.Is(err, ErrPacketTooLong) || len(b) != 0 {
		t.Fatalf("too long: %d bytes, %v", len(b), err)
	}
	if b, err := AppendPacket(nil, make([]byte, MaxPacketLen)); err != nil || len(b) != MaxPacketLen+2 {
		t.Fatalf("longest: %d bytes, %v", len(b), err)
	}
	if n, err := PacketLen([]byte{1, 2}); n != 258 || err != nil {
		t.Fatalf("PacketLen = %d, %v", n, err)
	}
}

// FuzzParsePacket: ParsePacket never panics or over-claims, and what it
// accepts re-encodes to the same bytes.
func FuzzParsePacket(f *testing.F) {
	for _, v := range packetVectors {
		f.Add(v.wire)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := ParsePacket(b)
		if err != nil {
			if err != protocols.ErrNeedMore || n != 0 {
				t.Fatalf("err %v, n %d", err, n)
			}
			return
		}
		if n > len(b) || n != len(p)+PacketHeaderLen {
			t.Fatalf("n=%d payload %d of %d bytes", n, len(p), len(b))
		}
		again, err := AppendPacket(nil, p)
		if err != nil || !bytes.Equal(again, b[:n]) {
			t.Fatalf("round trip % x became % x", b[:n], again)
		}
	})
}
