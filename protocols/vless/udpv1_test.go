package vless

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// Hand-written v1 UDP frames (testdata/v1_udp_*.hex, docs section 9); all
// canonical, so the encoders must reproduce them.
var classicVectors = []struct {
	file    string
	payload string
	addr    protocols.Addr
}{
	{"v1_udp_classic_ipv4.hex", "hello", ipAddr("1.2.3.4", 53)},
	{"v1_udp_classic_domain.hex", "hi", protocols.Addr{Domain: "example.com", Port: 443}},
	{"v1_udp_classic_empty_ipv6.hex", "", ipAddr("2001:db8::53", 5353)},
}

var multiVectors = []struct {
	file    string
	payload string
	from    protocols.Addr
	other   bool
}{
	{"v1_udp_multi_flag0.hex", "hello", protocols.Addr{}, false},
	{"v1_udp_multi_flag1_ipv4.hex", "pong", ipAddr("9.9.9.9", 3478), true},
	{"v1_udp_multi_flag1_ipv6.hex", "x", ipAddr("2001:db8::1", 443), true},
}

func TestUDPV1KnownAnswers(t *testing.T) {
	for _, v := range classicVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			payload, addr, n, err := ParsePacketV1(append(bytes.Clone(wire), 0xee, 0xee))
			if err != nil || n != len(wire) || string(payload) != v.payload || addr != v.addr {
				t.Fatalf("ParsePacketV1 = %q, %v, %d, %v; want %q, %v, %d", payload, addr, n, err, v.payload, v.addr, len(wire))
			}
			enc, err := AppendPacketV1([]byte{0xaa}, []byte(v.payload), v.addr)
			if err != nil || !bytes.Equal(enc, append([]byte{0xaa}, wire...)) {
				t.Fatalf("AppendPacketV1 = %x, %v; want aa%x", enc, err, wire)
			}
		})
	}
	for _, v := range multiVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			payload, from, other, n, err := ParseMultiPacket(append(bytes.Clone(wire), 0xee))
			if err != nil || n != len(wire) || string(payload) != v.payload || from != v.from || other != v.other {
				t.Fatalf("ParseMultiPacket = %q, %v, %v, %d, %v; want %q, %v, %v, %d", payload, from, other, n, err, v.payload, v.from, v.other, len(wire))
			}
			// flag 0 ignores from: pass a real address to prove it.
			arg := v.from
			if !v.other {
				arg = ipAddr("5.5.5.5", 5)
			}
			enc, err := AppendMultiPacket([]byte{0xaa}, []byte(v.payload), arg, v.other)
			if err != nil || !bytes.Equal(enc, append([]byte{0xaa}, wire...)) {
				t.Fatalf("AppendMultiPacket = %x, %v; want aa%x", enc, err, wire)
			}
		})
	}
}

func TestUDPV1TruncatedPrefixes(t *testing.T) {
	for _, v := range classicVectors {
		wire := readHex(t, v.file)
		for i := range wire {
			if _, _, n, err := ParsePacketV1(wire[:i]); err != protocols.ErrNeedMore || n != 0 {
				t.Errorf("%s: prefix of %d/%d bytes: n=%d err=%v, want ErrNeedMore", v.file, i, len(wire), n, err)
			}
		}
	}
	for _, v := range multiVectors {
		wire := readHex(t, v.file)
		for i := range wire {
			if _, _, _, n, err := ParseMultiPacket(wire[:i]); err != protocols.ErrNeedMore || n != 0 {
				t.Errorf("%s: prefix of %d/%d bytes: n=%d err=%v, want ErrNeedMore", v.file, i, len(wire), n, err)
			}
		}
	}
}

// TestUDPV1Longest: the prefix constants are the longest prefixes the
// encoders write (a 255-byte domain).
func TestUDPV1Longest(t *testing.T) {
	long := protocols.Addr{Domain: strings.Repeat("n", 255), Port: 65535}
	if b, err := AppendPacketV1(nil, nil, long); err != nil || len(b) != MaxPacketV1Prefix || MaxPacketV1Prefix != 261 {
		t.Errorf("classic prefix %d bytes, %v; constant %d, want 261", len(b), err, MaxPacketV1Prefix)
	}
	if b, err := AppendMultiPacket(nil, nil, long, true); err != nil || len(b) != MaxMultiPacketPrefix || MaxMultiPacketPrefix != 262 {
		t.Errorf("udp_multi prefix %d bytes, %v; constant %d, want 262", len(b), err, MaxMultiPacketPrefix)
	}
}

func TestUDPV1RoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0x5a}, MaxPacketLen)
	addrs := []protocols.Addr{ipAddr("0.0.0.0", 0), ipAddr("::1", 65535), {Domain: "a", Port: 1}, {Domain: "1.2.3.4", Port: 80}}
	for _, a := range addrs {
		for _, p := range [][]byte{nil, []byte("x"), big} {
			b, err := AppendPacketV1(nil, p, a)
			if err != nil {
				t.Fatal(err)
			}
			got, addr, n, err := ParsePacketV1(b)
			if err != nil || n != len(b) || !bytes.Equal(got, p) || addr != a {
				t.Errorf("classic %v, %d bytes: %v, %d, %v", a, len(p), addr, n, err)
			}
			for _, other := range []bool{false, true} {
				b, err := AppendMultiPacket(nil, p, a, other)
				if err != nil {
					t.Fatal(err)
				}
				got, from, o, n, err := ParseMultiPacket(b)
				want := a
				if !other {
					want = protocols.Addr{}
				}
				if err != nil || n != len(b) || !bytes.Equal(got, p) || from != want || o != other {
					t.Errorf("multi %v other=%v, %d bytes: %v, %v, %d, %v", a, other, len(p), from, o, n, err)
				}
			}
		}
	}
}

// TestUDPV1MappedSource: an IPv4-mapped IPv6 address is written as IPv4.
func TestUDPV1MappedSource(t *testing.T) {
	mapped := ipAddr("::ffff:1.2.3.4", 53)
	want := readHex(t, "v1_udp_classic_ipv4.hex")
	if b, err := AppendPacketV1(nil, []byte("hello"), mapped); err != nil || !bytes.Equal(b, want) {
		t.Errorf("classic from %v = %x, %v; want %x", mapped, b, err, want)
	}
	if b, err := AppendMultiPacket(nil, []byte("hello"), mapped, true); err != nil || !bytes.Equal(b, append([]byte{1}, want...)) {
		t.Errorf("udp_multi from %v = %x, %v; want 01%x", mapped, b, err, want)
	}
}

func TestUDPV1Errors(t *testing.T) {
	tooLong := make([]byte, MaxPacketLen+1)
	for name, f := range map[string]func() ([]byte, error){
		"classic too long": func() ([]byte, error) { return AppendPacketV1([]byte("keep"), tooLong, ipAddr("1.1.1.1", 1)) },
		"multi too long":   func() ([]byte, error) { return AppendMultiPacket([]byte("keep"), tooLong, protocols.Addr{}, false) },
		"multi 1 too long": func() ([]byte, error) { return AppendMultiPacket([]byte("keep"), tooLong, ipAddr("1.1.1.1", 1), true) },
	} {
		if b, err := f(); !errors.Is(err, ErrPacketTooLong) || string(b) != "keep" {
			t.Errorf("%s: %q, %v; want b unchanged and ErrPacketTooLong", name, b, err)
		}
	}
	for name, f := range map[string]func() ([]byte, error){
		"classic no addr": func() ([]byte, error) { return AppendPacketV1([]byte("keep"), nil, protocols.Addr{}) },
		"classic long name": func() ([]byte, error) {
			return AppendPacketV1([]byte("keep"), nil, protocols.Addr{Domain: strings.Repeat("a", 256)})
		},
		"multi 1 no addr": func() ([]byte, error) { return AppendMultiPacket([]byte("keep"), nil, protocols.Addr{}, true) },
	} {
		if b, err := f(); !errors.Is(err, protocols.ErrBadAddr) || string(b) != "keep" {
			t.Errorf("%s: %q, %v; want b unchanged and ErrBadAddr", name, b, err)
		}
	}
	// flag 0 carries no address, so none is needed.
	if b, err := AppendMultiPacket(nil, []byte("a"), protocols.Addr{}, false); err != nil || !bytes.Equal(b, []byte{0, 0, 1, 'a'}) {
		t.Errorf("flag 0 without an address: %x, %v", b, err)
	}

	parseTests := []struct {
		name  string
		multi bool
		wire  []byte
		want  error
		msg   string
	}{
		{"classic atyp 0", false, hdr("0035 00 01020304 0000"), protocols.ErrBadAddr, "vless: UDP packet address"},
		{"classic atyp 4", false, hdr("0035 04"), protocols.ErrBadAddr, "unknown address type 4"},
		{"classic empty domain", false, hdr("0035 02 00 0000"), protocols.ErrBadAddr, "empty domain"},
		{"flag 2", true, hdr("02 0001 61"), ErrBadFlag, "vless: udp_multi: unknown flag 0x02"},
		{"flag ff", true, hdr("ff"), ErrBadFlag, "unknown flag 0xff"},
		{"flag 1 bad atyp", true, hdr("01 0035 05"), protocols.ErrBadAddr, "vless: UDP packet address"},
	}
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			var n int
			var err error
			if tt.multi {
				_, _, _, n, err = ParseMultiPacket(tt.wire)
			} else {
				_, _, n, err = ParsePacketV1(tt.wire)
			}
			if !errors.Is(err, tt.want) || n != 0 || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("n=%d err=%v; want %v containing %q", n, err, tt.want, tt.msg)
			}
		})
	}
}

// FuzzParsePacketV1 checks ParsePacketV1: no panic, no overclaim, only the
// documented errors; what parses re-encodes to the same bytes (the one
// non-unique encoding, an IPv4-mapped IPv6 address, re-encodes as IPv4),
// and every proper prefix asks for more.
func FuzzParsePacketV1(f *testing.F) {
	f.Add([]byte{})
	f.Add(hdr("0035 01 7f000001 0003 616263"))
	f.Add(hdr("0035 03 00000000000000000000ffff01020304 0000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, addr, n, err := ParsePacketV1(b)
		if err != nil {
			if n != 0 || (err != protocols.ErrNeedMore && !errors.Is(err, protocols.ErrBadAddr)) {
				t.Fatalf("%d, %v", n, err)
			}
			return
		}
		if n > len(b) || n > MaxPacketV1Prefix+len(payload) {
			t.Fatalf("used %d of %d bytes for %d of payload", n, len(b), len(payload))
		}
		wire, err := AppendPacketV1(nil, payload, addr)
		if err != nil {
			t.Fatalf("cannot re-encode %v: %v", addr, err)
		}
		if addr.IP.Is4In6() {
			return
		}
		if !bytes.Equal(wire, b[:n]) {
			t.Fatalf("re-encoded %x, input %x", wire, b[:n])
		}
		for i := range wire {
			if _, _, _, err := ParsePacketV1(wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d of %x: %v", i, wire, err)
			}
		}
	})
}

// FuzzParseMultiPacket checks ParseMultiPacket the same way.
func FuzzParseMultiPacket(f *testing.F) {
	f.Add([]byte{0})
	f.Add(hdr("00 0002 6869"))
	f.Add(hdr("01 01bb 02 01 61 0000"))
	f.Add(hdr("02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, from, other, n, err := ParseMultiPacket(b)
		if err != nil {
			if n != 0 || (err != protocols.ErrNeedMore && !errors.Is(err, protocols.ErrBadAddr) && !errors.Is(err, ErrBadFlag)) {
				t.Fatalf("%d, %v", n, err)
			}
			return
		}
		if n > len(b) || n > MaxMultiPacketPrefix+len(payload) || (!other && from != protocols.Addr{}) {
			t.Fatalf("used %d of %d bytes for %d of payload; from %v other %v", n, len(b), len(payload), from, other)
		}
		wire, err := AppendMultiPacket(nil, payload, from, other)
		if err != nil {
			t.Fatalf("cannot re-encode %v: %v", from, err)
		}
		if from.IP.Is4In6() {
			return
		}
		if !bytes.Equal(wire, b[:n]) {
			t.Fatalf("re-encoded %x, input %x", wire, b[:n])
		}
		for i := range wire {
			if _, _, _, _, err := ParseMultiPacket(wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d of %x: %v", i, wire, err)
			}
		}
	})
}

func TestUDPV1FuzzSeeds(t *testing.T) {
	for _, v := range classicVectors {
		checkSeed(t, "FuzzParsePacketV1", v.file, readHex(t, v.file))
	}
	for _, v := range multiVectors {
		checkSeed(t, "FuzzParseMultiPacket", v.file, readHex(t, v.file))
	}
}
