package anytls

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

// passwordHash is sha256("password"), written out rather than computed.
var passwordHash = [32]byte(mustHex("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"))

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// readHex reads a hand-written vector: hex digits, whitespace, # comments.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.SplitSeq(string(text), "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func ip(s string, port uint16) protocols.Addr {
	return protocols.Addr{IP: netip.MustParseAddr(s), Port: port}
}

var frameVectors = []struct {
	file string
	want Frame
}{
	{"frame_syn.hex", Frame{Cmd: CmdSYN, Stream: 1, Data: []byte{}}},
	{"frame_psh.hex", Frame{Cmd: CmdPSH, Stream: 1, Data: mustHex("01 7f000001 0050")}},
	{"frame_fin.hex", Frame{Cmd: CmdFIN, Stream: 515, Data: []byte{}}},
	{"frame_settings.hex", Frame{Cmd: CmdSettings, Data: []byte("v=2\nclient=anytls/0.0.1\npadding-md5=" + DefaultSchemeMD5)}},
	{"frame_server_settings.hex", Frame{Cmd: CmdServerSettings, Data: []byte("v=2")}},
	{"frame_synack_error.hex", Frame{Cmd: CmdSYNACK, Stream: 2, Data: []byte("dial tcp: connection refused")}},
	{"frame_synack_ok.hex", Frame{Cmd: CmdSYNACK, Stream: 0xffffffff, Data: []byte{}}},
	{"frame_waste.hex", Frame{Cmd: CmdWaste, Data: make([]byte, 5)}},
	{"frame_heart_request.hex", Frame{Cmd: CmdHeartRequest, Data: []byte{}}},
	{"frame_alert.hex", Frame{Cmd: CmdAlert, Data: []byte("hi")}},
}

var authVectors = []struct {
	file string
	want Auth
}{
	{"auth_default.hex", Auth{Hash: passwordHash, PaddingLen: 30}},
	{"auth_nopad.hex", Auth{Hash: passwordHash, PaddingLen: 0}},
}

var uotRequestVectors = []struct {
	file string
	want UoTRequest
}{
	{"uot_request_connect.hex", UoTRequest{Connect: true, Target: ip("8.8.8.8", 53)}},
	{"uot_request_domain.hex", UoTRequest{Target: protocols.Addr{Domain: "example.com", Port: 443}}},
}

var uotPacketVectors = []struct {
	file    string
	connect bool
	want    UoTPacket
}{
	{"uot_packet_ipv6.hex", false, UoTPacket{Addr: ip("2001:db8::1", 53), Payload: []byte("abc")}},
	{"uot_packet_domain.hex", false, UoTPacket{Addr: protocols.Addr{Domain: "x", Port: 1}, Payload: []byte{}}},
	{"uot_packet_connect.hex", true, UoTPacket{Payload: mustHex("deadbeef")}},
}

func TestKnownAnswers(t *testing.T) {
	trailer := []byte{0xee, 0xee}
	for _, v := range frameVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := ParseFrame(append(bytes.Clone(wire), trailer...))
			if err != nil || n != len(wire) || !reflect.DeepEqual(got, v.want) {
				t.Fatalf("ParseFrame = %+v, %d, %v\nwant %+v, %d", got, n, err, v.want, len(wire))
			}
			h, hn, err := ParseHeader(wire)
			if err != nil || hn != HeaderLen || h != (Header{v.want.Cmd, v.want.Stream, uint16(len(v.want.Data))}) {
				t.Errorf("ParseHeader = %+v, %d, %v", h, hn, err)
			}
			enc, err := AppendFrame([]byte("keep"), v.want)
			if err != nil || !bytes.Equal(enc[4:], wire) || string(enc[:4]) != "keep" {
				t.Errorf("AppendFrame = %x, %v\nwant keep+%x", enc, err, wire)
			}
		})
	}
	for _, v := range authVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := ParseAuth(append(bytes.Clone(wire), trailer...))
			if err != nil || n != len(wire) || got != v.want {
				t.Fatalf("ParseAuth = %+v, %d, %v; want %+v, %d", got, n, err, v.want, len(wire))
			}
			enc, err := AppendAuth(nil, v.want.Hash, v.want.PaddingLen)
			if err != nil || !bytes.Equal(enc, wire) {
				t.Errorf("AppendAuth = %x, %v\nwant %x", enc, err, wire)
			}
			if PasswordHash("password") != v.want.Hash {
				t.Errorf("PasswordHash(password) = %x", PasswordHash("password"))
			}
		})
	}
	for _, v := range uotRequestVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := ParseUoTRequest(append(bytes.Clone(wire), trailer...))
			if err != nil || n != len(wire) || got != v.want {
				t.Fatalf("ParseUoTRequest = %+v, %d, %v; want %+v", got, n, err, v.want)
			}
			enc, err := AppendUoTRequest(nil, v.want)
			if err != nil || !bytes.Equal(enc, wire) {
				t.Errorf("AppendUoTRequest = %x, %v\nwant %x", enc, err, wire)
			}
		})
	}
	for _, v := range uotPacketVectors {
		t.Run(v.file, func(t *testing.T) {
			wire := readHex(t, v.file)
			got, n, err := ParseUoTPacket(append(bytes.Clone(wire), trailer...), v.connect)
			if err != nil || n != len(wire) || !reflect.DeepEqual(got, v.want) {
				t.Fatalf("ParseUoTPacket = %+v, %d, %v; want %+v", got, n, err, v.want)
			}
			enc, err := AppendUoTPacket(nil, v.connect, v.want)
			if err != nil || !bytes.Equal(enc, wire) {
				t.Errorf("AppendUoTPacket = %x, %v\nwant %x", enc, err, wire)
			}
		})
	}
}

// TestTruncatedPrefixes: every proper prefix of a valid message must ask
// for more, never fail or succeed.
func TestTruncatedPrefixes(t *testing.T) {
	check := func(t *testing.T, wire []byte, parse func([]byte) (int, error)) {
		t.Helper()
		for i := range wire {
			if n, err := parse(wire[:i]); err != protocols.ErrNeedMore || n != 0 {
				t.Errorf("prefix of %d/%d bytes: n=%d err=%v, want ErrNeedMore", i, len(wire), n, err)
			}
		}
		if n, err := parse(wire); err != nil || n != len(wire) {
			t.Errorf("whole message: n=%d err=%v", n, err)
		}
	}
	for _, v := range frameVectors {
		t.Run(v.file, func(t *testing.T) {
			check(t, readHex(t, v.file), func(b []byte) (int, error) { _, n, err := ParseFrame(b); return n, err })
		})
	}
	for _, v := range authVectors {
		t.Run(v.file, func(t *testing.T) {
			check(t, readHex(t, v.file), func(b []byte) (int, error) { _, n, err := ParseAuth(b); return n, err })
		})
	}
	for _, v := range uotRequestVectors {
		t.Run(v.file, func(t *testing.T) {
			check(t, readHex(t, v.file), func(b []byte) (int, error) { _, n, err := ParseUoTRequest(b); return n, err })
		})
	}
	for _, v := range uotPacketVectors {
		t.Run(v.file, func(t *testing.T) {
			check(t, readHex(t, v.file), func(b []byte) (int, error) { _, n, err := ParseUoTPacket(b, v.connect); return n, err })
		})
	}
	t.Run("longest frame", func(t *testing.T) {
		wire, err := AppendFrame(nil, Frame{Cmd: CmdPSH, Stream: 7, Data: bytes.Repeat([]byte{0x5a}, MaxDataLen)})
		if err != nil || len(wire) != HeaderLen+MaxDataLen {
			t.Fatalf("AppendFrame: %d bytes, %v", len(wire), err)
		}
		// Every prefix would be 65542 parses; a sample is as good.
		for _, i := range []int{0, 1, 6, 7, 8, 1000, len(wire) - 1} {
			if _, n, err := ParseFrame(wire[:i]); err != protocols.ErrNeedMore || n != 0 {
				t.Errorf("prefix %d: %d, %v", i, n, err)
			}
		}
	})
	t.Run("longest padding0", func(t *testing.T) {
		wire, _ := AppendAuth(nil, passwordHash, MaxDataLen)
		for _, i := range []int{0, 31, 32, 33, 34, 35, len(wire) - 1} {
			if _, n, err := ParseAuth(wire[:i]); err != protocols.ErrNeedMore || n != 0 {
				t.Errorf("prefix %d: %d, %v", i, n, err)
			}
		}
		if a, n, err := ParseAuth(wire); err != nil || n != len(wire) || a.PaddingLen != MaxDataLen {
			t.Errorf("ParseAuth = %+v, %d, %v", a, n, err)
		}
	})
}

func TestCommands(t *testing.T) {
	want := []string{"cmdWaste", "cmdSYN", "cmdPSH", "cmdFIN", "cmdSettings", "cmdAlert",
		"cmdUpdatePaddingScheme", "cmdSYNACK", "cmdHeartRequest", "cmdHeartResponse", "cmdServerSettings"}
	for i, name := range want {
		c := Command(i)
		if c.String() != name || !c.Known() {
			t.Errorf("Command(%d) = %q, known %v; want %q", i, c, c.Known(), name)
		}
	}
	if c := Command(11); c.Known() || c.String() != "cmd(11)" {
		t.Errorf("Command(11) = %q, known %v", c, c.Known())
	}
	// The spec's values, written out.
	for c, v := range map[Command]uint8{CmdWaste: 0, CmdSYN: 1, CmdPSH: 2, CmdFIN: 3, CmdSettings: 4, CmdAlert: 5,
		CmdUpdatePaddingScheme: 6, CmdSYNACK: 7, CmdHeartRequest: 8, CmdHeartResponse: 9, CmdServerSettings: 10} {
		if uint8(c) != v {
			t.Errorf("%v = %d, want %d", c, uint8(c), v)
		}
	}
	for _, c := range []Command{CmdSYN, CmdFIN, CmdHeartRequest, CmdHeartResponse, 11} {
		if c.CarriesData() {
			t.Errorf("%v carries data", c)
		}
	}
	for _, c := range []Command{CmdWaste, CmdPSH, CmdSettings, CmdAlert, CmdUpdatePaddingScheme, CmdSYNACK, CmdServerSettings} {
		if !c.CarriesData() {
			t.Errorf("%v carries no data", c)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	b := []byte("keep")
	if got, err := AppendFrame(b, Frame{Cmd: CmdPSH, Data: make([]byte, MaxDataLen+1)}); !errors.Is(err, ErrFrameTooLong) || string(got) != "keep" {
		t.Errorf("AppendFrame(65536 bytes) = %q, %v", got, err)
	}
	if got, err := AppendWaste(b, MaxDataLen+1); !errors.Is(err, ErrFrameTooLong) || string(got) != "keep" {
		t.Errorf("AppendWaste(65536) = %q, %v", got, err)
	}
	if got, err := AppendWaste(b, -1); !errors.Is(err, ErrFrameTooLong) || string(got) != "keep" {
		t.Errorf("AppendWaste(-1) = %q, %v", got, err)
	}
	if got, err := AppendAuth(b, passwordHash, 70000); !errors.Is(err, ErrBadPadding) || string(got) != "keep" {
		t.Errorf("AppendAuth(70000) = %q, %v", got, err)
	}
	if got, err := AppendUoTRequest(b, UoTRequest{}); !errors.Is(err, ErrBadUoT) || !errors.Is(err, protocols.ErrBadAddr) || string(got) != "keep" {
		t.Errorf("AppendUoTRequest(no target) = %q, %v", got, err)
	}
	if got, err := AppendUoTPacket(b, false, UoTPacket{Payload: []byte("x")}); !errors.Is(err, ErrBadUoT) || string(got) != "keep" {
		t.Errorf("AppendUoTPacket(no addr) = %q, %v", got, err)
	}
	if got, err := AppendUoTPacket(b, true, UoTPacket{Payload: make([]byte, 65536)}); !errors.Is(err, ErrBadUoT) || string(got) != "keep" {
		t.Errorf("AppendUoTPacket(65536) = %q, %v", got, err)
	}
	// Connect mode ignores the address, even an invalid one.
	if got, err := AppendUoTPacket(nil, true, UoTPacket{Payload: []byte("x")}); err != nil || !bytes.Equal(got, []byte{0, 1, 'x'}) {
		t.Errorf("AppendUoTPacket(connect) = %x, %v", got, err)
	}
	waste, err := AppendWaste(nil, 3)
	if err != nil || !bytes.Equal(waste, mustHex("00 00000000 0003 000000")) {
		t.Errorf("AppendWaste(3) = %x, %v", waste, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		parse func() error
		want  error
		msg   string
	}{
		{"uot isConnect 2", func() error { _, _, err := ParseUoTRequest(mustHex("02 01 01020304 0035")); return err }, ErrBadUoT, "neither 0 nor 1"},
		{"uot request atyp 0", func() error { _, _, err := ParseUoTRequest(mustHex("00 00 01020304 0035")); return err }, protocols.ErrBadAddr, "unknown address type 0"},
		{"uot packet atyp 3", func() error { _, _, err := ParseUoTPacket(mustHex("03 01020304 0035 0000"), false); return err }, protocols.ErrBadAddr, "unknown address type 3"},
		{"uot packet empty domain", func() error { _, _, err := ParseUoTPacket(mustHex("02 00 0035 0000"), false); return err }, ErrBadUoT, "empty domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse()
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "anytls: ") {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	known := func(h [32]byte) bool { return h == passwordHash }
	full := readHex(t, "auth_default.hex")
	for i := 0; i <= len(full); i++ {
		ok, err := Match(full[:i], known)
		switch {
		case i < 32 && (ok || err != protocols.ErrNeedMore):
			t.Errorf("Match(%d bytes) = %v, %v; want ErrNeedMore", i, ok, err)
		case i >= 32 && (!ok || err != nil):
			t.Errorf("Match(%d bytes) = %v, %v; want true", i, ok, err)
		}
	}
	other := bytes.Clone(full)
	other[31] ^= 1
	ok, err := Match(other, known)
	if ok || !errors.Is(err, ErrUnknownPassword) {
		t.Fatalf("unknown hash: %v, %v", ok, err)
	}
	if strings.Contains(err.Error(), hex.EncodeToString(other[:32])) || strings.Contains(err.Error(), hex.EncodeToString(passwordHash[:])) {
		t.Errorf("error names a hash: %v", err)
	}
	for _, p := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), bytes.Repeat([]byte{0x16}, 40)} {
		if ok, err := Match(p, known); ok || !errors.Is(err, ErrUnknownPassword) {
			t.Errorf("Match(%q) = %v, %v", p, ok, err)
		}
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		in      string
		want    Settings
		version int
	}{
		{"v=2\nclient=anytls/0.0.1\npadding-md5=abc", Settings{{"v", "2"}, {"client", "anytls/0.0.1"}, {"padding-md5", "abc"}}, 2},
		{"v=1", Settings{{"v", "1"}}, 1},
		{"", nil, 0},
		{"client=x", Settings{{"client", "x"}}, 0},
		{"v=two", Settings{{"v", "two"}}, 0},
		{"v=-3", Settings{{"v", "-3"}}, 0},
		{"v=10", Settings{{"v", "10"}}, 10},
		{"garbage\nv=2\n\n", Settings{{"v", "2"}}, 2},     // lines without "=" are skipped
		{"v=1\nv=2", Settings{{"v", "1"}, {"v", "2"}}, 2}, // the last one counts
		{"k=a=b\n=x", Settings{{"k", "a=b"}, {"", "x"}}, 0},
		{"v=2\r", Settings{{"v", "2\r"}}, 0}, // kept byte for byte, as anytls-go does
	}
	for _, tt := range tests {
		got, n, err := ParseSettings([]byte(tt.in))
		if err != nil || n != len(tt.in) || !reflect.DeepEqual(got, tt.want) || got.Version() != tt.version {
			t.Errorf("ParseSettings(%q) = %q, %d, %v, version %d; want %q, version %d", tt.in, got, n, err, got.Version(), tt.want, tt.version)
		}
	}
	if v, ok := (Settings{{"a", "1"}, {"a", "2"}}).Get("a"); !ok || v != "2" {
		t.Errorf("Get = %q, %v", v, ok)
	}
	if _, ok := (Settings{}).Get("a"); ok {
		t.Error("Get on empty settings found a value")
	}
	enc, err := AppendSettings(nil, ClientSettings("anytls/0.0.1", DefaultSchemeMD5))
	if err != nil || !bytes.Equal(enc, readHex(t, "frame_settings.hex")[HeaderLen:]) {
		t.Errorf("ClientSettings encode to %q, %v", enc, err)
	}
	if enc, err := AppendSettings(nil, ServerSettings()); err != nil || string(enc) != "v=2" {
		t.Errorf("ServerSettings encode to %q, %v", enc, err)
	}
	for _, bad := range []Settings{{{"a=b", "c"}}, {{"a\n", "c"}}, {{"a", "c\nd"}}, {{"k", strings.Repeat("v", MaxDataLen)}}} {
		if got, err := AppendSettings([]byte("keep"), bad); !errors.Is(err, ErrBadSettings) || string(got) != "keep" {
			t.Errorf("AppendSettings(%q) = %q, %v", bad, got, err)
		}
	}
	if _, _, err := ParseSettings(make([]byte, MaxDataLen+1)); !errors.Is(err, ErrBadSettings) {
		t.Errorf("ParseSettings(65536 bytes) = %v", err)
	}
}

func TestIsUoT(t *testing.T) {
	for a, want := range map[protocols.Addr]bool{
		{Domain: "sp.v2.udp-over-tcp.arpa"}: true,
		{Domain: "sp.udp-over-tcp.arpa"}:    true,
		{Domain: "udp-over-tcp.arpa"}:       false,
		ip("1.2.3.4", 53):                   false,
	} {
		if IsUoT(a) != want {
			t.Errorf("IsUoT(%v) = %v", a, !want)
		}
	}
}

// TestPure enforces the package's promise: no sockets, no clock, no global
// randomness, no goroutines, no locks (checked by import).
func TestPure(t *testing.T) {
	forbidden := map[string]bool{"net": true, "net/http": true, "os": true, "os/exec": true, "time": true,
		"math/rand": true, "math/rand/v2": true, "crypto/rand": true, "syscall": true, "sync": true, "sync/atomic": true}
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
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), "\tgo ") {
			t.Errorf("%s starts a goroutine", name)
		}
	}
}

// TestFuzzSeeds keeps testdata/fuzz in step with the hand-written vectors.
func TestFuzzSeeds(t *testing.T) {
	write := func(dir, name string, values ...any) {
		path := filepath.Join("testdata", "fuzz", dir, strings.TrimSuffix(name, ".hex"))
		var want strings.Builder
		want.WriteString("go test fuzz v1\n")
		for _, v := range values {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&want, "[]byte(%q)\n", v)
			case bool:
				fmt.Fprintf(&want, "bool(%v)\n", v)
			}
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want.String() {
			t.Errorf("%s is stale or missing (err %v); run go test ./protocols/anytls -run TestFuzzSeeds -args -update", path, err)
		}
	}
	for _, v := range frameVectors {
		write("FuzzParseFrame", v.file, readHex(t, v.file))
	}
	for _, v := range authVectors {
		write("FuzzParseAuth", v.file, readHex(t, v.file))
	}
	for _, v := range uotRequestVectors {
		write("FuzzUoTRequest", v.file, readHex(t, v.file))
	}
	for _, v := range uotPacketVectors {
		write("FuzzUoTPacket", v.file, readHex(t, v.file), v.connect)
	}
	for name, text := range schemeSeeds {
		write("FuzzParseScheme", name, []byte(text))
	}
	for name, text := range settingsSeeds {
		write("FuzzParseSettings", name, []byte(text))
	}
}

var schemeSeeds = map[string]string{
	"default":  DefaultSchemeText,
	"short":    "stop=3\n0=9-9\n1=200-200\n2=20-20,40-40",
	"checks":   "stop=4\n1=c,10-20,c\n2=\n3=65535-0",
	"unknowns": "stop=2\njitter=0-10\n 0 = 5-5 \r\n1=1-2,c",
}

var settingsSeeds = map[string]string{
	"client": "v=2\nclient=anytls/0.0.1\npadding-md5=" + DefaultSchemeMD5,
	"server": "v=2",
	"odd":    "v=1\nno equals\n=empty key\nk=a=b",
}
