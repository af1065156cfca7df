package vless

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// The v1 vectors in testdata/v1_*.hex are written by hand from
// docs/protocols/vless-v1.md; every one is canonical, so the encoder must
// reproduce it byte for byte.
var v1RequestVectors = []struct {
	file string
	next bool // a request on a reused connection
	want RequestV1
}{
	{"v1_req_tcp_ipv4.hex", false, RequestV1{ID: testID, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)}},
	{"v1_req_udpmulti_domain.hex", false, RequestV1{ID: testID, UDPMulti: true, Command: CommandUDP, Target: protocols.Addr{Domain: "dns.google", Port: 53}}},
	{"v1_req_keepalive_resolve_pad.hex", false, RequestV1{ID: testID, KeepAlive: true, Resolve: true, Padded: true, PadLen: 256, Command: CommandTCP, Target: protocols.Addr{Domain: "example.com", Port: 80}}},
	{"v1_req_all_addons_ipv6.hex", false, RequestV1{ID: testID, UDPMulti: true, KeepAlive: true, Resolve: true, Padded: true, Command: CommandTCP, Target: ipAddr("2001:db8::1", 443)}},
	{"v1_udphdr_multi_assoc.hex", false, RequestV1{ID: testID, UDPMulti: true, HasAssociation: true, Association: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Command: CommandUDP, Target: ipAddr("8.8.8.8", 53)}},
	{"v1_udphdr_longest.hex", false, *longestV1(false)},
	{"v1_req_padding_max.hex", false, RequestV1{ID: testID, Padded: true, PadLen: MaxPadLen, Command: CommandTCP, Target: ipAddr("127.0.0.1", 80)}},
	{"v1_req_mux.hex", false, RequestV1{ID: testID, Command: CommandMux, Target: ipAddr("10.0.0.1", 80)}},
	{"v1_next_keepalive.hex", true, RequestV1{KeepAlive: true, Command: CommandTCP, Target: protocols.Addr{Domain: "a", Port: 443}}},
	{"v1_next_keepalive_resolve.hex", true, RequestV1{KeepAlive: true, Resolve: true, Command: CommandTCP, Target: ipAddr("::1", 80)}},
	{"v1_next_last.hex", true, RequestV1{Command: CommandTCP, Target: ipAddr("1.1.1.1", 65535)}},
}

var v1ResolvedVectors = []struct {
	file string
	want netip.AddrPort
}{
	{"v1_resolved_ipv4.hex", netip.MustParseAddrPort("127.0.0.1:8080")},
	{"v1_resolved_ipv6.hex", netip.MustParseAddrPort("[2001:db8::53]:443")},
	{"v1_resolved_unknown.hex", netip.AddrPort{}},
}

func parseV1(next bool) func([]byte) (RequestV1, int, error) {
	if next {
		return ParseNextRequest
	}
	return ParseRequestV1
}

func appendV1(next bool) func([]byte, *RequestV1) ([]byte, error) {
	if next {
		return AppendNextRequest
	}
	return AppendRequestV1
}

func TestV1KnownAnswers(t *testing.T) {
	for _, v := range v1RequestVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := parseV1(v.next)(append(bytes.Clone(wire), "payload"...))
			if err != nil || n != len(wire) || !reflect.DeepEqual(got, v.want) {
				t.Fatalf("parse = %+v, %d, %v\nwant    %+v, %d", got, n, err, v.want, len(wire))
			}
			enc, err := appendV1(v.next)([]byte("prefix"), &v.want)
			if err != nil || !bytes.Equal(enc, append([]byte("prefix"), wire...)) {
				t.Fatalf("append = %x, %v\nwant       %x", enc[min(6, len(enc)):], err, wire)
			}
		})
	}
	for _, v := range v1ResolvedVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := ParseResolved(append(bytes.Clone(wire), 0xee))
			if err != nil || n != len(wire) || got != v.want {
				t.Fatalf("ParseResolved = %v, %d, %v; want %v, %d", got, n, err, v.want, len(wire))
			}
			if enc := AppendResolved([]byte{0xaa}, v.want); !bytes.Equal(enc, append([]byte{0xaa}, wire...)) {
				t.Fatalf("AppendResolved = %x, want aa%x", enc, wire)
			}
		})
	}
	t.Run("v1_chunks.hex", func(t *testing.T) {
		wire := readHex(t, "v1_chunks.hex")
		var got []string
		rest := wire
		for {
			data, end, n, err := ParseChunk(rest)
			if err != nil {
				t.Fatalf("ParseChunk(%x): %v", rest, err)
			}
			rest = rest[n:]
			if end {
				break
			}
			got = append(got, string(data))
		}
		if len(rest) != 0 || !reflect.DeepEqual(got, []string{"hello", "!"}) {
			t.Fatalf("chunks = %q, %d bytes left", got, len(rest))
		}
		enc := AppendChunkEnd(AppendChunks(AppendChunks(nil, []byte("hello"), 0), []byte("!"), 0))
		if !bytes.Equal(enc, wire) {
			t.Fatalf("encoded %x, want %x", enc, wire)
		}
	})
}

// longestV1 is the longest first header (MaxRequestV1Len: UDP with
// udp_multi, padding and association) and next header (MaxNextRequestLen:
// TCP with udp_multi, keep_alive and resolve).
func longestV1(next bool) *RequestV1 {
	target := protocols.Addr{Domain: strings.Repeat("d", 255), Port: 1}
	if next {
		return &RequestV1{UDPMulti: true, KeepAlive: true, Resolve: true, Command: CommandTCP, Target: target}
	}
	return &RequestV1{ID: testID, UDPMulti: true, Padded: true, HasAssociation: true,
		Association: [8]byte{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8}, Command: CommandUDP, Target: target}
}

// longestTCPV1 is the longest TCP first header, 285 bytes.
func longestTCPV1() *RequestV1 {
	return &RequestV1{ID: testID, UDPMulti: true, KeepAlive: true, Resolve: true, Padded: true, PadLen: 7,
		Command: CommandTCP, Target: protocols.Addr{Domain: strings.Repeat("d", 255), Port: 1}}
}

func TestV1TruncatedPrefixes(t *testing.T) {
	check := func(t *testing.T, wire []byte, parse func([]byte) (int, error)) {
		t.Helper()
		for i := range wire {
			if n, err := parse(wire[:i]); err != protocols.ErrNeedMore {
				t.Errorf("prefix of %d/%d bytes: n=%d err=%v, want ErrNeedMore", i, len(wire), n, err)
			}
		}
		if n, err := parse(wire); err != nil || n != len(wire) {
			t.Errorf("whole message: n=%d err=%v", n, err)
		}
	}
	for _, v := range v1RequestVectors {
		t.Run(v.file, func(t *testing.T) {
			check(t, readHex(t, v.file), func(b []byte) (int, error) { _, n, err := parseV1(v.next)(b); return n, err })
		})
	}
	for _, v := range v1ResolvedVectors {
		t.Run(v.file, func(t *testing.T) {
			check(t, readHex(t, v.file), func(b []byte) (int, error) { _, n, err := ParseResolved(b); return n, err })
		})
	}
	t.Run("chunk", func(t *testing.T) {
		check(t, AppendChunks(nil, []byte("abc"), 0), func(b []byte) (int, error) { _, _, n, err := ParseChunk(b); return n, err })
		check(t, AppendChunkEnd(nil), func(b []byte) (int, error) { _, _, n, err := ParseChunk(b); return n, err })
		check(t, AppendChunkEnd(nil), func(b []byte) (int, error) { _, n, err := ParseChunkHeader(b); return n, err })
	})
	for _, next := range []bool{false, true} {
		t.Run(fmt.Sprintf("longest next=%v", next), func(t *testing.T) {
			wire, err := appendV1(next)(nil, longestV1(next))
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool]int{false: MaxRequestV1Len, true: MaxNextRequestLen}[next]
			if len(wire) != want {
				t.Fatalf("longest header is %d bytes, the constant says %d", len(wire), want)
			}
			check(t, wire, func(b []byte) (int, error) { _, n, err := parseV1(next)(b); return n, err })
		})
	}
	if wire, err := AppendRequestV1(nil, longestTCPV1()); err != nil || len(wire) != 285 {
		t.Errorf("longest TCP header: %d bytes, %v; want 285", len(wire), err)
	}
}

func TestV1RoundTrip(t *testing.T) {
	reqs := []RequestV1{
		{ID: testID, Command: CommandTCP, Target: ipAddr("0.0.0.0", 0)},
		{ID: testID, KeepAlive: true, Command: CommandTCP, Target: protocols.Addr{Domain: "x", Port: 1}},
		{ID: testID, Resolve: true, Command: CommandTCP, Target: protocols.Addr{Domain: "x.example", Port: 443}},
		{ID: testID, UDPMulti: true, Resolve: true, Command: CommandTCP, Target: ipAddr("::", 53)},
		{ID: testID, Command: CommandUDP, Target: ipAddr("::", 53)},
		{ID: testID, UDPMulti: true, Padded: true, PadLen: 9, Command: CommandUDP, Target: protocols.Addr{Domain: "stun.example", Port: 3478}},
		{ID: testID, UDPMulti: true, HasAssociation: true, Association: [8]byte{8, 7, 6, 5, 4, 3, 2, 1}, Command: CommandUDP, Target: ipAddr("2001:db8::2", 443)},
		*longestTCPV1(),
		{ID: testID, UDPMulti: true, Padded: true, PadLen: 1, Command: CommandTCP, Target: ipAddr("8.8.8.8", 853)},
		{ID: testID, KeepAlive: true, Resolve: true, Padded: true, PadLen: 1000, Command: CommandTCP, Target: ipAddr("fe80::1", 22)},
		{ID: testID, Command: CommandMux, Target: protocols.Addr{Domain: "v1.mux.cool", Port: 9527}},
		*longestV1(false),
	}
	for i, r := range reqs {
		for _, next := range []bool{false, true} {
			if next {
				if r.Padded || r.Command == CommandUDP {
					continue
				}
				r.ID = [16]byte{}
			}
			wire, err := appendV1(next)(nil, &r)
			if err != nil {
				t.Fatalf("%d next=%v: append: %v", i, next, err)
			}
			got, n, err := parseV1(next)(wire)
			if err != nil || n != len(wire) || !reflect.DeepEqual(got, r) {
				t.Errorf("%d next=%v: round trip = %+v, %d, %v\nwant %+v", i, next, got, n, err, r)
			}
		}
	}
	for _, s := range []string{"1.2.3.4:1", "[::1]:65535", "[2001:db8::1%eth0]:80", "[::ffff:10.1.2.3]:443", "0.0.0.0:0"} {
		ap := netip.MustParseAddrPort(s)
		want := netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
		got, n, err := ParseResolved(AppendResolved(nil, ap))
		if err != nil || got != want || n != map[bool]int{true: 7, false: 19}[want.Addr().Is4()] {
			t.Errorf("resolved %s: round trip = %v, %d, %v; want %v", s, got, n, err, want)
		}
	}
}

func TestV1ParseErrors(t *testing.T) {
	first := func(parts ...string) []byte { return hdr(append([]string{"01", idHex}, parts...)...) }
	tests := []struct {
		name string
		next bool
		wire []byte
		want error
		msg  string
	}{
		{"version 0", false, hdr("00", idHex, "00 01 0050 01 7f000001"), ErrUnknownVersion, "vless: unknown version 0"},
		{"version 2", false, hdr("02"), ErrUnknownVersion, "version 2"},
		{"addon 0x03", false, first("03 01 0050 01 7f000001"), ErrUnknownAddon, "vless: unknown addon type 0x03"},
		{"addon 0x0f", false, first("0f"), ErrUnknownAddon, "0x0f"},
		{"addon 0x14", false, first("14"), ErrUnknownAddon, "0x14"},
		{"addon 0xff", true, hdr("ff"), ErrUnknownAddon, "0xff"},
		{"list of 0", false, first("02 00 01 0050 01 7f000001"), ErrBadAddons, "list of 0 addons"},
		{"list of 1", false, first("02 01 10 01 0050 01 7f000001"), ErrBadAddons, "list of 1 addons"},
		{"list of 5", false, first("02 05"), ErrBadAddons, "list of 5"},
		{"none inside list", false, first("02 02 00 10"), ErrBadAddons, "0x00 inside a list"},
		{"list inside list", false, first("02 02 02 10"), ErrBadAddons, "0x02 inside a list"},
		{"duplicate", false, first("02 02 10 10"), ErrBadAddons, "0x10 twice"},
		{"out of order", false, first("02 02 11 10"), ErrBadAddons, "out of order"},
		{"unknown inside list", false, first("02 02 10 14"), ErrUnknownAddon, "0x14"},
		{"udp with keep_alive", false, first("10 02 0035 01 08080808"), ErrBadAddons, "keep_alive and resolve are for TCP streams"},
		{"udp_multi with resolve", false, first("02 02 01 11 02 0035 01 08080808"), ErrBadAddons, "keep_alive and resolve are for TCP streams"},
		{"association without udp_multi", false, first("13 0102030405060708 02 0035 01 08080808"), ErrBadAddons, "association only with command UDP and udp_multi"},
		{"association on tcp", false, first("02 02 01 13 0102030405060708 01 0035 01 08080808"), ErrBadAddons, "association only with command UDP and udp_multi"},
		{"association on mux", false, first("02 02 01 13 0102030405060708 03 0035 01 08080808"), ErrBadAddons, "association only with command UDP and udp_multi"},
		{"association twice", false, first("02 03 01 13 0102030405060708 13"), ErrBadAddons, "0x13 twice"},
		{"udp in a next request", true, hdr("01 02 0035 01 08080808"), ErrBadAddons, "command UDP on a reused connection"},
		{"udp without addons in a next request", true, hdr("00 02 0035 01 08080808"), ErrBadAddons, "TCP streams only"},
		{"association in a next request", true, hdr("02 02 01 13"), ErrBadAddons, "association only in a connection's first request"},
		{"padding too long", false, first("12 4001"), ErrBadAddons, "padding length 16385 above 16384"},
		{"padding 0xffff in a list", false, first("02 02 10 12 ffff"), ErrBadAddons, "above 16384"},
		{"padding in a next request", true, hdr("12 0000 01 0050 01 7f000001"), ErrBadAddons, "padding only in a connection's first request"},
		{"padding in a next list", true, hdr("02 02 10 12"), ErrBadAddons, "first request"},
		{"command 0", false, first("00 00"), ErrUnsupportedCommand, "vless: unsupported command 0"},
		{"command 4", true, hdr("10 04 0050"), ErrUnsupportedCommand, "command 4"},
		{"atyp 4", false, first("00 01 0050 04"), protocols.ErrBadAddr, "vless: target"},
		{"empty domain", true, hdr("00 01 0050 02 00"), protocols.ErrBadAddr, "empty domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := parseV1(tt.next)(tt.wire)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "vless: ") {
				t.Errorf("message %q lacks %q or the vless prefix", err, tt.msg)
			}
			if n != 0 || !reflect.DeepEqual(got, RequestV1{}) {
				t.Errorf("failed parse returned %+v, %d", got, n)
			}
		})
	}
	for _, b := range [][]byte{{2}, {4, 1, 2, 3, 4, 0, 80}, {0xff}} {
		if _, n, err := ParseResolved(b); !errors.Is(err, ErrBadResolved) || n != 0 {
			t.Errorf("ParseResolved(%x) = %d, %v; want ErrBadResolved", b, n, err)
		}
	}
}

func TestV1AppendErrors(t *testing.T) {
	tcp := func(f func(*RequestV1)) RequestV1 {
		r := RequestV1{ID: testID, Command: CommandTCP, Target: ipAddr("1.2.3.4", 1)}
		f(&r)
		return r
	}
	tests := []struct {
		name string
		next bool
		r    RequestV1
		want error
	}{
		{"command 0", false, tcp(func(r *RequestV1) { r.Command = 0 }), ErrUnsupportedCommand},
		{"command 9", true, tcp(func(r *RequestV1) { r.Command = 9 }), ErrUnsupportedCommand},
		{"no target", false, tcp(func(r *RequestV1) { r.Target = protocols.Addr{} }), protocols.ErrBadAddr},
		{"mux without target", false, tcp(func(r *RequestV1) { r.Command, r.Target = CommandMux, protocols.Addr{} }), protocols.ErrBadAddr},
		{"long domain", true, tcp(func(r *RequestV1) { r.Target = protocols.Addr{Domain: strings.Repeat("a", 256)} }), protocols.ErrBadAddr},
		{"negative padding", false, tcp(func(r *RequestV1) { r.Padded, r.PadLen = true, -1 }), ErrBadAddons},
		{"padding too long", false, tcp(func(r *RequestV1) { r.Padded, r.PadLen = true, MaxPadLen+1 }), ErrBadAddons},
		{"padding in next", true, tcp(func(r *RequestV1) { r.Padded = true }), ErrBadAddons},
		{"udp with keep_alive", false, tcp(func(r *RequestV1) { r.Command, r.KeepAlive = CommandUDP, true }), ErrBadAddons},
		{"udp with resolve", false, tcp(func(r *RequestV1) { r.Command, r.Resolve, r.UDPMulti = CommandUDP, true, true }), ErrBadAddons},
		{"association on tcp", false, tcp(func(r *RequestV1) { r.UDPMulti, r.HasAssociation = true, true }), ErrBadAddons},
		{"association without udp_multi", false, tcp(func(r *RequestV1) { r.Command, r.HasAssociation = CommandUDP, true }), ErrBadAddons},
		{"udp in next", true, tcp(func(r *RequestV1) { r.Command = CommandUDP }), ErrBadAddons},
		{"association in next", true, tcp(func(r *RequestV1) { r.Command, r.UDPMulti, r.HasAssociation = CommandUDP, true, true }), ErrBadAddons},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := appendV1(tt.next)([]byte("keep"), &tt.r)
			if !errors.Is(err, tt.want) || !strings.HasPrefix(err.Error(), "vless: ") {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if string(got) != "keep" {
				t.Errorf("b changed on error: %q", got)
			}
		})
	}
	// PadLen without Padded is not encoded: Padded is what puts the addon on the wire.
	r := tcp(func(r *RequestV1) { r.PadLen = 5 })
	if wire, _ := AppendRequestV1(nil, &r); wire[17] != byte(AddonNone) {
		t.Errorf("PadLen without Padded put addon %#x on the wire", wire[17])
	}
}

func TestSplitFirstWrite(t *testing.T) {
	tests := []struct {
		size, hdr, payload int
		framed             bool
		pad, take          int
		ok                 bool
	}{
		{500, 26, 0, false, 474, 0, true},
		{500, 26, 100, false, 374, 100, true},
		{500, 26, 474, false, 0, 474, true},
		{500, 26, 10000, false, 0, 474, true},
		{500, 26, 0, true, 474, 0, true},
		{500, 26, 100, true, 372, 100, true},
		{500, 26, 472, true, 0, 472, true},
		{500, 26, 473, true, 0, 472, true},
		{500, 26, 10000, true, 0, 472, true},
		{500, 498, 5, true, 2, 0, true}, // room 2: no chunk fits
		{500, 497, 5, true, 0, 1, true}, // room 3: a 1-byte chunk
		{500, 500, 5, false, 0, 0, true},
		{500, 501, 5, false, 0, 0, false},
		{100000, 26, 200000, true, 100000 - 26 - 2 - MaxChunkLen, MaxChunkLen, true}, // one chunk at most
		{100000, 26, 90000, true, 100000 - 26 - 2 - MaxChunkLen, MaxChunkLen, true},
	}
	for _, tt := range tests {
		pad, take, ok := SplitFirstWrite(tt.size, tt.hdr, tt.payload, tt.framed)
		if pad != tt.pad || take != tt.take || ok != tt.ok {
			t.Errorf("SplitFirstWrite(%d, %d, %d, %v) = %d, %d, %v; want %d, %d, %v",
				tt.size, tt.hdr, tt.payload, tt.framed, pad, take, ok, tt.pad, tt.take, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		total := tt.hdr + pad + take
		if tt.framed && take > 0 {
			total += ChunkHeaderLen
		}
		if total != tt.size {
			t.Errorf("SplitFirstWrite(%d, %d, %d, %v): parts add up to %d", tt.size, tt.hdr, tt.payload, tt.framed, total)
		}
	}
}

func TestChunks(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 7000) // 70000 bytes
	for _, max := range []int{0, 1, 3, 16382, MaxChunkLen, MaxChunkLen + 1} {
		wire := AppendChunks([]byte{0xaa}, data, max)
		if wire[0] != 0xaa {
			t.Fatal("AppendChunks lost the prefix")
		}
		limit := max
		if limit <= 0 || limit > MaxChunkLen {
			limit = MaxChunkLen
		}
		var got []byte
		chunks := 0
		for rest := wire[1:]; len(rest) > 0; chunks++ {
			c, end, n, err := ParseChunk(rest)
			if err != nil || end || len(c) == 0 || len(c) > limit {
				t.Fatalf("max %d: chunk %d: %d bytes, end %v, %v", max, chunks, len(c), end, err)
			}
			got = append(got, c...)
			rest = rest[n:]
		}
		if !bytes.Equal(got, data) || chunks != (len(data)+limit-1)/limit {
			t.Errorf("max %d: %d chunks carried %d bytes", max, chunks, len(got))
		}
	}
	if got := AppendChunks(nil, nil, 0); len(got) != 0 {
		t.Errorf("empty data framed as %x; it must not look like an end marker", got)
	}
	if size, n, err := ParseChunkHeader([]byte{0xff, 0xff, 1}); size != MaxChunkLen || n != 2 || err != nil {
		t.Errorf("ParseChunkHeader(ffff) = %d, %d, %v", size, n, err)
	}
	for _, n := range []int{0, -1, MaxChunkLen + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AppendChunkHeader(%d) did not panic", n)
				}
			}()
			AppendChunkHeader(nil, n)
		}()
	}
	if got := AppendPadding([]byte{1}, 3); !bytes.Equal(got, []byte{1, 0, 0, 0}) {
		t.Errorf("AppendPadding = %x", got)
	}
}

func TestMatchV1(t *testing.T) {
	known := func(id [16]byte) bool { return id == testID }
	for _, file := range []string{"v1_req_tcp_ipv4.hex", "req_tcp_ipv4.hex"} {
		full := readHex(t, file)
		for i := 0; i <= len(full); i++ {
			ok, err := MatchV1(full[:i], known)
			if i < 17 && (ok || err != protocols.ErrNeedMore) || i >= 17 && (!ok || err != nil) {
				t.Errorf("%s: MatchV1(%d bytes) = %v, %v", file, i, ok, err)
			}
		}
		other := bytes.Clone(full)
		other[5] ^= 1
		if ok, err := MatchV1(other, known); ok || err != nil {
			t.Errorf("%s: unknown UUID matched: %v, %v", file, ok, err)
		}
	}
	if ok, err := Match(readHex(t, "v1_req_tcp_ipv4.hex"), known); ok || err != nil {
		t.Errorf("Match (v0 only) took a v1 header: %v, %v", ok, err)
	}
	for _, p := range [][]byte{{2}, {0x16, 3, 1}, []byte("GET / HTTP/1.1\r\n")} {
		if ok, err := MatchV1(p, known); ok || err != nil {
			t.Errorf("MatchV1(%q) = %v, %v", p, ok, err)
		}
	}
}

// checkSeed keeps one fuzz seed file in step with a hand-written vector
// (rewritten with -update).
func checkSeed(t *testing.T, target, name string, b []byte) {
	t.Helper()
	path := filepath.Join("testdata", "fuzz", target, strings.TrimSuffix(name, ".hex"))
	want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != want {
		t.Errorf("%s is stale or missing (err %v); run go test ./protocols/vless -run FuzzSeeds -args -update", path, err)
	}
}

func TestV1FuzzSeeds(t *testing.T) {
	for _, v := range v1RequestVectors {
		target := "FuzzParseRequestV1"
		if v.next {
			target = "FuzzParseNextRequest"
		}
		checkSeed(t, target, v.file, readHex(t, v.file))
	}
	for _, v := range v1ResolvedVectors {
		checkSeed(t, "FuzzParseResolved", v.file, readHex(t, v.file))
	}
	checkSeed(t, "FuzzChunks", "v1_chunks.hex", readHex(t, "v1_chunks.hex"))
}
