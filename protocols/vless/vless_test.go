package vless

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"go/parser"
	"go/token"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

var update = flag.Bool("update", false, "rewrite testdata/fuzz seeds from the hand-written testdata/*.hex vectors")

var testID = [16]byte{0xb8, 0x31, 0x38, 0x1d, 0x63, 0x24, 0x4d, 0x53, 0xad, 0x4f, 0x8c, 0xda, 0x48, 0xb3, 0x08, 0x11}

func ipAddr(s string, port uint16) protocols.Addr {
	return protocols.Addr{IP: netip.MustParseAddr(s), Port: port}
}

// readHex reads a hand-written vector: hex digits, whitespace, # comments.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for _, line := range strings.Split(string(text), "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

var vision = FlowVision

var requestVectors = []struct {
	file      string
	want      RequestHeader
	canonical bool // the encoder must reproduce the bytes
	unmap     bool // compare the target IP unmapped (protocols.VAddr decides whether it unmaps)
}{
	{"req_tcp_ipv4.hex", RequestHeader{ID: testID, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)}, true, false},
	{"req_tcp_domain_vision.hex", RequestHeader{ID: testID, Addons: Addons{Flow: vision}, Command: CommandTCP, Target: protocols.Addr{Domain: "example.com", Port: 80}}, true, false},
	{"req_udp_ipv6.hex", RequestHeader{ID: testID, Command: CommandUDP, Target: ipAddr("2001:db8::1", 53)}, true, false},
	{"req_mux.hex", RequestHeader{ID: testID, Command: CommandMux}, true, false},
	{"req_tcp_domain_port0.hex", RequestHeader{ID: testID, Command: CommandTCP, Target: protocols.Addr{Domain: "a", Port: 0}}, true, false},
	{"req_tcp_ipv4_port65535.hex", RequestHeader{ID: testID, Command: CommandTCP, Target: ipAddr("255.255.255.255", 65535)}, true, false},
	{"req_flow_seed.hex", RequestHeader{ID: testID, Addons: Addons{Flow: vision, Seed: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, Command: CommandTCP, Target: ipAddr("10.0.0.1", 8443)}, true, false},
	{"req_unknown_fields.hex", RequestHeader{ID: testID, Addons: Addons{Flow: vision}, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)}, false, false},
	{"req_ipv4_mapped.hex", RequestHeader{ID: testID, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)}, false, true},
}

var responseVectors = []struct {
	file string
	want ResponseHeader
}{
	{"resp_plain.hex", ResponseHeader{}},
	{"resp_flow.hex", ResponseHeader{Addons: Addons{Flow: vision}}},
}

func TestKnownAnswers(t *testing.T) {
	for _, v := range requestVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			payload := []byte("GET / HTTP/1.1\r\n")
			got, n, err := ParseRequest(append(bytes.Clone(wire), payload...))
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if n != len(wire) {
				t.Errorf("ParseRequest used %d bytes, the header is %d", n, len(wire))
			}
			if v.unmap {
				got.Target.IP = got.Target.IP.Unmap()
			}
			if !reflect.DeepEqual(got, v.want) {
				t.Errorf("ParseRequest = %+v\nwant          %+v", got, v.want)
			}
			if !v.canonical {
				return
			}
			enc, err := AppendRequest([]byte("prefix"), &v.want)
			if err != nil {
				t.Fatalf("AppendRequest: %v", err)
			}
			if !bytes.Equal(enc[len("prefix"):], wire) || string(enc[:len("prefix")]) != "prefix" {
				t.Errorf("AppendRequest =\n%x\nwant\n%x", enc[len("prefix"):], wire)
			}
		})
	}
	for _, v := range responseVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := ParseResponse(append(bytes.Clone(wire), 0xaa, 0xbb))
			if err != nil || n != len(wire) || !reflect.DeepEqual(got, v.want) {
				t.Fatalf("ParseResponse = %+v, %d, %v; want %+v, %d, nil", got, n, err, v.want, len(wire))
			}
			enc, err := AppendResponse(nil, &v.want)
			if err != nil || !bytes.Equal(enc, wire) {
				t.Fatalf("AppendResponse = %x, %v; want %x", enc, err, wire)
			}
		})
	}
}

// TestTruncatedPrefixes: every proper prefix of a valid header is a valid
// prefix, so the parsers must ask for more, never fail or succeed.
func TestTruncatedPrefixes(t *testing.T) {
	check := func(t *testing.T, wire []byte, parse func([]byte) (int, error)) {
		for i := 0; i < len(wire); i++ {
			if n, err := parse(wire[:i]); err != protocols.ErrNeedMore {
				t.Errorf("prefix of %d/%d bytes: n=%d err=%v, want ErrNeedMore", i, len(wire), n, err)
			}
		}
		if n, err := parse(wire); err != nil || n != len(wire) {
			t.Errorf("whole header: n=%d err=%v", n, err)
		}
	}
	parseReq := func(b []byte) (int, error) { _, n, err := ParseRequest(b); return n, err }
	parseResp := func(b []byte) (int, error) { _, n, err := ParseResponse(b); return n, err }
	for _, v := range requestVectors {
		t.Run(v.file, func(t *testing.T) { check(t, readHex(t, v.file), parseReq) })
	}
	for _, v := range responseVectors {
		t.Run(v.file, func(t *testing.T) { check(t, readHex(t, v.file), parseResp) })
	}
	t.Run("longest", func(t *testing.T) {
		wire, err := AppendRequest(nil, longestRequest())
		if err != nil {
			t.Fatal(err)
		}
		if len(wire) != MaxRequestLen {
			t.Fatalf("longest request is %d bytes, MaxRequestLen is %d", len(wire), MaxRequestLen)
		}
		check(t, wire, parseReq)
	})
}

// longestRequest has 255 bytes of addons (a 252-byte seed: tag, two-byte
// varint, 252 bytes) and a 255-byte domain.
func longestRequest() *RequestHeader {
	return &RequestHeader{
		ID:      testID,
		Addons:  Addons{Seed: bytes.Repeat([]byte{0x5a}, 252)},
		Command: CommandTCP,
		Target:  protocols.Addr{Domain: strings.Repeat("d", 255), Port: 65535},
	}
}

func TestRoundTrip(t *testing.T) {
	reqs := []RequestHeader{
		{ID: testID, Command: CommandTCP, Target: ipAddr("127.0.0.1", 1)},
		{ID: [16]byte{}, Command: CommandTCP, Target: ipAddr("::", 0)},
		{ID: testID, Command: CommandUDP, Target: ipAddr("fe80::1", 65535)},
		{ID: testID, Command: CommandUDP, Target: protocols.Addr{Domain: "dns.example", Port: 53}},
		{ID: testID, Command: CommandMux},
		{ID: testID, Addons: Addons{Flow: "custom-flow"}, Command: CommandTCP, Target: protocols.Addr{Domain: "x.y", Port: 8080}},
		{ID: testID, Addons: Addons{Seed: []byte{0}}, Command: CommandMux},
		{ID: testID, Addons: Addons{Flow: strings.Repeat("f", 252)}, Command: CommandTCP, Target: ipAddr("8.8.8.8", 853)},
		*longestRequest(),
	}
	for i, r := range reqs {
		wire, err := AppendRequest(nil, &r)
		if err != nil {
			t.Fatalf("%d: AppendRequest: %v", i, err)
		}
		got, n, err := ParseRequest(wire)
		if err != nil || n != len(wire) || !reflect.DeepEqual(got, r) {
			t.Errorf("%d: round trip = %+v, %d, %v\nwant %+v, %d", i, got, n, err, r, len(wire))
		}
	}
	resps := []ResponseHeader{{}, {Addons: Addons{Flow: "f"}}, {Addons: Addons{Flow: vision, Seed: []byte("seed")}}}
	for i, r := range resps {
		wire, err := AppendResponse(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		got, n, err := ParseResponse(wire)
		if err != nil || n != len(wire) || !reflect.DeepEqual(got, r) {
			t.Errorf("%d: response round trip = %+v, %d, %v; want %+v", i, got, n, err, r)
		}
	}
}

// hdr builds a request from hex fragments, for the error table.
func hdr(parts ...string) []byte {
	var b []byte
	for _, p := range parts {
		x, err := hex.DecodeString(strings.ReplaceAll(p, " ", ""))
		if err != nil {
			panic(err)
		}
		b = append(b, x...)
	}
	return b
}

const idHex = "b831381d63244d53ad4f8cda48b30811"

func TestParseRequestFields(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want RequestHeader
	}{
		{"ipv4", hdr("00", idHex, "00 01 0050 01 7f000001"), RequestHeader{ID: testID, Command: CommandTCP, Target: ipAddr("127.0.0.1", 80)}},
		{"ipv6", hdr("00", idHex, "00 01 01bb 03 00000000000000000000000000000001"), RequestHeader{ID: testID, Command: CommandTCP, Target: ipAddr("::1", 443)}},
		{"domain", hdr("00", idHex, "00 01 01bb 02 03 616263"), RequestHeader{ID: testID, Command: CommandTCP, Target: protocols.Addr{Domain: "abc", Port: 443}}},
		{"domain IP literal kept as sent", hdr("00", idHex, "00 01 01bb 02 07 312e322e332e34"), RequestHeader{ID: testID, Command: CommandTCP, Target: protocols.Addr{Domain: "1.2.3.4", Port: 443}}},
		{"port 0", hdr("00", idHex, "00 02 0000 01 01010101"), RequestHeader{ID: testID, Command: CommandUDP, Target: ipAddr("1.1.1.1", 0)}},
		{"port 65535", hdr("00", idHex, "00 02 ffff 01 01010101"), RequestHeader{ID: testID, Command: CommandUDP, Target: ipAddr("1.1.1.1", 65535)}},
		{"mux", hdr("00", idHex, "00 03"), RequestHeader{ID: testID, Command: CommandMux}},
		{"flow absent, empty addons field", hdr("00", idHex, "02 0a00 01 0050 01 7f000001"), RequestHeader{ID: testID, Command: CommandTCP, Target: ipAddr("127.0.0.1", 80)}},
		{"flow present", hdr("00", idHex, "03 0a0161 01 0050 01 7f000001"), RequestHeader{ID: testID, Addons: Addons{Flow: "a"}, Command: CommandTCP, Target: ipAddr("127.0.0.1", 80)}},
		{"last flow wins", hdr("00", idHex, "06 0a0161 0a0162 01 0050 01 7f000001"), RequestHeader{ID: testID, Addons: Addons{Flow: "b"}, Command: CommandTCP, Target: ipAddr("127.0.0.1", 80)}},
		{"seed only", hdr("00", idHex, "04 1202abcd 03"), RequestHeader{ID: testID, Addons: Addons{Seed: []byte{0xab, 0xcd}}, Command: CommandMux}},
		{"seed before flow", hdr("00", idHex, "07 1202abcd 0a0161 03"), RequestHeader{ID: testID, Addons: Addons{Flow: "a", Seed: []byte{0xab, 0xcd}}, Command: CommandMux}},
		{"unknown fixed64", hdr("00", idHex, "09 110102030405060708 03"), RequestHeader{ID: testID, Command: CommandMux}},
		{"unknown nested group", hdr("00", idHex, "09 1b 23 0801 24 1c 0a0161 03"), RequestHeader{ID: testID, Addons: Addons{Flow: "a"}, Command: CommandMux}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := ParseRequest(tt.wire)
			if err != nil || n != len(tt.wire) || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseRequest = %+v, %d, %v\nwant %+v, %d, nil", got, n, err, tt.want, len(tt.wire))
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want error
		msg  string // substring of the message
	}{
		{"version 1", hdr("01"), ErrUnknownVersion, "vless: unknown version 1"},
		{"version ff with uuid", hdr("ff", idHex, "00 01 0050 01 7f000001"), ErrUnknownVersion, "version 255"},
		{"command 0", hdr("00", idHex, "00 00"), ErrUnsupportedCommand, "vless: unsupported command 0"},
		{"command 4", hdr("00", idHex, "00 04 0050 01 7f000001"), ErrUnsupportedCommand, "command 4"},
		{"command ff", hdr("00", idHex, "00 ff"), ErrUnsupportedCommand, "command 255"},
		{"atyp 0", hdr("00", idHex, "00 01 0050 00"), protocols.ErrBadAddr, "vless: target"},
		{"atyp 4 (SOCKS IPv6)", hdr("00", idHex, "00 01 0050 04"), protocols.ErrBadAddr, "unknown address type 4"},
		{"empty domain", hdr("00", idHex, "00 01 0050 02 00"), protocols.ErrBadAddr, "empty domain"},
		{"addons: truncated tag", hdr("00", idHex, "01 80 01"), ErrBadAddons, "truncated varint"},
		{"addons: truncated length", hdr("00", idHex, "01 0a 01"), ErrBadAddons, "truncated varint"},
		{"addons: field past end", hdr("00", idHex, "02 0a05 01"), ErrBadAddons, "longer than the message"},
		{"addons: field number 0", hdr("00", idHex, "02 0201 01"), ErrBadAddons, "field number 0"},
		{"addons: stray end group", hdr("00", idHex, "01 0c 01"), ErrBadAddons, "end group"},
		{"addons: unterminated group", hdr("00", idHex, "03 0b 0801 01"), ErrBadAddons, "truncated"},
		{"addons: mismatched end group", hdr("00", idHex, "02 0b 14 01"), ErrBadAddons, "mismatched"},
		{"addons: wire type 6", hdr("00", idHex, "02 0e00 01"), ErrBadAddons, "wire type 6"},
		{"addons: wire type 7", hdr("00", idHex, "02 0f00 01"), ErrBadAddons, "wire type 7"},
		{"addons: truncated fixed32", hdr("00", idHex, "03 0d0102 01"), ErrBadAddons, "fixed32"},
		{"addons: truncated fixed64", hdr("00", idHex, "03 090102 01"), ErrBadAddons, "fixed64"},
		{"addons: varint overflow", hdr("00", idHex, "0b 18 ffffffffffffffffff02 01"), ErrBadAddons, "overflows"},
		{"addons: field number too big", hdr("00", idHex, "06 8280808010 00 01"), ErrBadAddons, "field number"},
		{"addons: flow not UTF-8", hdr("00", idHex, "03 0a01ff 01"), ErrBadAddons, "UTF-8"},
		{"addons: groups too deep", hdr("00", idHex, "11", strings.Repeat("0b", 17), "01"), ErrBadAddons, "too deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := ParseRequest(tt.wire)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseRequest err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "vless: ") {
				t.Errorf("message %q lacks %q or the vless prefix", err, tt.msg)
			}
			if n != 0 || !reflect.DeepEqual(got, RequestHeader{}) {
				t.Errorf("failed parse returned %+v, %d", got, n)
			}
		})
	}
}

func TestParseResponseErrors(t *testing.T) {
	tests := []struct {
		wire []byte
		want error
	}{
		{hdr("01 00"), ErrUnknownVersion},
		{hdr("ff"), ErrUnknownVersion},
		{hdr("00 02 0a05"), ErrBadAddons},
		{hdr("00 01 0c"), ErrBadAddons},
		{hdr("00 03 0a01ff"), ErrBadAddons},
	}
	for _, tt := range tests {
		if _, n, err := ParseResponse(tt.wire); !errors.Is(err, tt.want) || n != 0 {
			t.Errorf("ParseResponse(%x) = %d, %v; want %v", tt.wire, n, err, tt.want)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	tests := []struct {
		name string
		r    RequestHeader
		want error
	}{
		{"command 0", RequestHeader{Command: 0, Target: ipAddr("1.2.3.4", 1)}, ErrUnsupportedCommand},
		{"command 4", RequestHeader{Command: 4, Target: ipAddr("1.2.3.4", 1)}, ErrUnsupportedCommand},
		{"no target", RequestHeader{Command: CommandTCP}, protocols.ErrBadAddr},
		{"domain too long", RequestHeader{Command: CommandUDP, Target: protocols.Addr{Domain: strings.Repeat("a", 256), Port: 1}}, protocols.ErrBadAddr},
		{"flow too long", RequestHeader{Command: CommandMux, Addons: Addons{Flow: strings.Repeat("f", 253)}}, ErrAddonsTooLong},
		{"seed too long", RequestHeader{Command: CommandMux, Addons: Addons{Flow: "x", Seed: make([]byte, 250)}}, ErrAddonsTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte("keep")
			got, err := AppendRequest(b, &tt.r)
			if !errors.Is(err, tt.want) || !strings.HasPrefix(err.Error(), "vless: ") {
				t.Fatalf("AppendRequest err = %v, want %v", err, tt.want)
			}
			if string(got) != "keep" {
				t.Errorf("AppendRequest changed b on error: %q", got)
			}
		})
	}
	if _, err := AppendResponse(nil, &ResponseHeader{Addons: Addons{Seed: make([]byte, 300)}}); !errors.Is(err, ErrAddonsTooLong) {
		t.Errorf("AppendResponse with 300-byte seed: %v", err)
	}
	// The limit is exact: 255 bytes of addons encode, 256 do not.
	if _, err := AppendResponse(nil, &ResponseHeader{Addons: Addons{Flow: strings.Repeat("f", 252)}}); err != nil {
		t.Errorf("255 bytes of addons: %v", err)
	}
}

func TestMatch(t *testing.T) {
	known := func(id [16]byte) bool { return id == testID }
	full := readHex(t, "req_tcp_ipv4.hex")
	for i := 0; i <= len(full); i++ {
		ok, err := Match(full[:i], known)
		switch {
		case i < 17 && (ok || err != protocols.ErrNeedMore):
			t.Errorf("Match(%d bytes) = %v, %v; want ErrNeedMore", i, ok, err)
		case i >= 17 && (!ok || err != nil):
			t.Errorf("Match(%d bytes) = %v, %v; want true", i, ok, err)
		}
	}
	other := bytes.Clone(full)
	other[16] ^= 1
	if ok, err := Match(other, known); ok || err != nil {
		t.Errorf("unknown UUID: %v, %v", ok, err)
	}
	for _, p := range [][]byte{{1}, {0x16, 0x03, 0x01}, []byte("GET / HTTP/1.1\r\n"), {0xff, 0}} {
		if ok, err := Match(p, known); ok || err != nil {
			t.Errorf("Match(%q) = %v, %v; want false, nil", p, ok, err)
		}
	}
}

func TestCommandString(t *testing.T) {
	for c, want := range map[Command]string{CommandTCP: "tcp", CommandUDP: "udp", CommandMux: "mux", 9: "command(9)"} {
		if c.String() != want {
			t.Errorf("%d.String() = %q", byte(c), c.String())
		}
	}
}

// TestPure enforces the package's promise: no sockets, no clock, no global
// randomness, no goroutines (checked by import, and by a scan for "go ").
// protocols itself imports net for its interfaces; that is its business.
func TestPure(t *testing.T) {
	forbidden := map[string]bool{"net": true, "net/http": true, "os": true, "os/exec": true, "time": true, "math/rand": true, "math/rand/v2": true, "crypto/rand": true, "syscall": true, "sync": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if forbidden[path] {
				t.Errorf("%s imports %q; the codec must stay pure", name, path)
			}
		}
	}
}

// TestFuzzSeeds keeps testdata/fuzz in step with the hand-written vectors.
func TestFuzzSeeds(t *testing.T) {
	write := func(dir, name string, b []byte) {
		path := filepath.Join("testdata", "fuzz", dir, strings.TrimSuffix(name, ".hex"))
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
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is stale or missing (err %v); run go test ./protocols/vless -run TestFuzzSeeds -args -update", path, err)
		}
	}
	for _, v := range requestVectors {
		write("FuzzParseRequest", v.file, readHex(t, v.file))
	}
	for _, v := range responseVectors {
		write("FuzzParseResponse", v.file, readHex(t, v.file))
	}
}
