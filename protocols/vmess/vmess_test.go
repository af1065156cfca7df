package vmess

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"go/parser"
	"go/token"
	"hash"
	"hash/fnv"
	"io"
	"net/netip"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols"
)

var testUUID = [16]byte{0xb8, 0x31, 0x38, 0x1d, 0x63, 0x24, 0x4d, 0x53, 0xad, 0x4f, 0x8c, 0xda, 0x48, 0xb3, 0x08, 0x11}

// unhex decodes hex digits, ignoring whitespace and # comments.
func unhex(s string) []byte {
	var digits strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		panic(err)
	}
	return b
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func testRequest() Request {
	return Request{
		IV:           [16]byte(seq(16, 0x10)),
		Key:          [16]byte(seq(16, 0x20)),
		ResponseAuth: 0x5a,
		Options:      OptionChunkStream | OptionChunkMasking | OptionGlobalPadding,
		Security:     SecurityAES128GCM,
		Command:      CommandTCP,
		Target:       protocols.Addr{Domain: "example.com", Port: 443},
		Padding:      []byte{0xee, 0xdd, 0xcc},
	}
}

// TestKDF checks the nested HMAC against V2Ray's own vector
// (proxy/vmess/aead/kdf_test.go) and against a second, textbook HMAC
// construction written here.
func TestKDF(t *testing.T) {
	got := KDF([]byte("Demo Key for KDF Value Test"), "Demo Path for KDF Value Test", "Demo Path for KDF Value Test2", "Demo Path for KDF Value Test3")
	if want := "53e9d7e1bd7bd25022b71ead07d8a596efc8a845c7888652fd684b4903dc8892"; hex.EncodeToString(got[:]) != want {
		t.Errorf("KDF = %x, want %s", got, want)
	}
	// HMAC[H, k](m) = H((k^opad) ‖ H((k^ipad) ‖ m)) with 64-byte blocks.
	type fn func([]byte) []byte
	hmacOf := func(h fn, key []byte) fn {
		return func(m []byte) []byte {
			var ipad, opad [64]byte
			copy(ipad[:], key)
			copy(opad[:], key)
			for i := range ipad {
				ipad[i] ^= 0x36
				opad[i] ^= 0x5c
			}
			return h(append(opad[:], h(append(ipad[:], m...))...))
		}
	}
	sha := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
	h := hmacOf(sha, []byte("VMess AEAD KDF"))
	h = hmacOf(h, []byte(LabelAuthIDKey))
	want := h([]byte("some cmd key 16b"))
	if got := KDF([]byte("some cmd key 16b"), LabelAuthIDKey); !bytes.Equal(got[:], want) {
		t.Errorf("KDF(k, label) = %x, textbook %x", got, want)
	}
	if k16 := KDF16([]byte("x"), "a", "b"); !bytes.Equal(k16[:], func() []byte { k := KDF([]byte("x"), "a", "b"); return k[:16] }()) {
		t.Error("KDF16 is not KDF's prefix")
	}
}

func TestIDs(t *testing.T) {
	// CmdKey and the alter-id chain written out with crypto/md5 directly.
	m := md5.Sum(append(testUUID[:], "c48619fe-8f02-49e0-b9e9-edf763e17e21"...))
	if CmdKey(testUUID) != m {
		t.Errorf("CmdKey = %x, want %x", CmdKey(testUUID), m)
	}
	ids := AlterIDs(testUUID, 3)
	prev := testUUID
	for i, id := range ids {
		if want := md5.Sum(append(prev[:], "16167dc8-16b6-4e6d-b8bb-65dd68113a81"...)); id != want {
			t.Errorf("alter id %d = %x, want %x", i, id, want)
		}
		prev = id
	}
	if len(AlterIDs(testUUID, -1)) != 0 || len(AlterIDs(testUUID, 0)) != 0 {
		t.Error("AlterIDs of n <= 0 is not empty")
	}
	mac := hmac.New(md5.New, testUUID[:])
	mac.Write(binary.BigEndian.AppendUint64(nil, 1700000000))
	if got := LegacyAuth(testUUID, 1700000000); !bytes.Equal(got[:], mac.Sum(nil)) {
		t.Error("LegacyAuth is not HMAC-MD5(id, ts)")
	}
	ts := binary.BigEndian.AppendUint64(nil, 1700000000)
	if got, want := legacyHeaderIV(1700000000), md5.Sum(bytes.Repeat(ts, 4)); got != want {
		t.Errorf("legacy IV = %x, want %x", got, want)
	}
	c := chachaKey([]byte("0123456789abcdef"))
	a := md5.Sum([]byte("0123456789abcdef"))
	b := md5.Sum(a[:])
	if !bytes.Equal(c[:16], a[:]) || !bytes.Equal(c[16:], b[:]) {
		t.Error("chacha key is not MD5(k) ‖ MD5(MD5(k))")
	}
	f := fnv.New32a()
	f.Write([]byte("vmess"))
	if fnv1a([]byte("vmess")) != f.Sum32() {
		t.Error("fnv1a differs from hash/fnv")
	}
}

func TestAuthID(t *testing.T) {
	k := NewUserKey(testUUID)
	id := k.AuthID(1700000000, [4]byte{1, 2, 3, 4})
	ts, rnd, ok := k.OpenAuthID(id[:])
	if !ok || ts != 1700000000 || rnd != [4]byte{1, 2, 3, 4} {
		t.Fatalf("OpenAuthID = %d, %x, %v", ts, rnd, ok)
	}
	other := NewUserKey([16]byte{1})
	if _, _, ok := other.OpenAuthID(id[:]); ok {
		t.Error("another user's key opens the AuthID")
	}
	for i := range 16 {
		bad := id
		bad[i] ^= 1
		if _, _, ok := k.OpenAuthID(bad[:]); ok {
			t.Errorf("AuthID with byte %d flipped passes the CRC", i)
		}
	}
	if _, _, ok := k.OpenAuthID(id[:15]); ok {
		t.Error("15 bytes accepted")
	}
	neg := k.AuthID(-5, [4]byte{})
	if _, _, ok := k.OpenAuthID(neg[:]); ok {
		t.Error("a negative time is accepted")
	}
	// The plaintext layout: ts ‖ rand ‖ CRC32.
	var plain [16]byte
	k.auth.Decrypt(plain[:], id[:])
	if binary.BigEndian.Uint64(plain[:]) != 1700000000 || !bytes.Equal(plain[8:12], []byte{1, 2, 3, 4}) {
		t.Errorf("AuthID plaintext %x", plain)
	}
}

func TestCheckTime(t *testing.T) {
	for _, tt := range []struct {
		ts, now int64
		ok      bool
	}{
		{1000, 1000, true}, {1120, 1000, true}, {880, 1000, true},
		{1121, 1000, false}, {879, 1000, false},
	} {
		err := CheckTime(tt.ts, tt.now)
		if (err == nil) != tt.ok {
			t.Errorf("CheckTime(%d, %d) = %v", tt.ts, tt.now, err)
		}
		if err != nil && (!errors.Is(err, ErrClockSkew) || !strings.Contains(err.Error(), "client clock differs from server by more than 120 s")) {
			t.Errorf("CheckTime error %q", err)
		}
	}
	if err := CheckTime(1300, 1000); !strings.Contains(err.Error(), "300 s ahead of") {
		t.Errorf("ahead: %v", err)
	}
	if err := CheckTime(500, 1000); !strings.Contains(err.Error(), "500 s behind") {
		t.Errorf("behind: %v", err)
	}
}

func TestSecurity(t *testing.T) {
	for _, tt := range []struct {
		name string
		want Security
	}{
		{"", SecurityAuto}, {"auto", SecurityAuto}, {"AES-128-GCM", SecurityAES128GCM}, {"chacha20-poly1305", SecurityChaCha20Poly1305},
		{"none", SecurityNone}, {"zero", SecurityZero}, {"aes-128-cfb", SecurityLegacy}, {"legacy", SecurityLegacy},
	} {
		if s, err := ParseSecurity(tt.name); s != tt.want || err != nil {
			t.Errorf("ParseSecurity(%q) = %v, %v", tt.name, s, err)
		}
	}
	if _, err := ParseSecurity("aes-256-gcm"); !errors.Is(err, ErrBadSecurity) || !strings.Contains(err.Error(), `"aes-128-gcm", "chacha20-poly1305", "auto"`) {
		t.Errorf("bad name: %v", err)
	}
	for arch, want := range map[string]Security{"amd64": SecurityAES128GCM, "arm64": SecurityAES128GCM, "s390x": SecurityAES128GCM,
		"386": SecurityChaCha20Poly1305, "arm": SecurityChaCha20Poly1305, "wasm": SecurityChaCha20Poly1305, "mips": SecurityChaCha20Poly1305} {
		if got := SecurityAuto.ResolveFor(arch); got != want {
			t.Errorf("auto on %s = %v, want %v", arch, got, want)
		}
	}
	if SecurityNone.ResolveFor("386") != SecurityNone {
		t.Error("Resolve changed a concrete security")
	}
	// What a V2Ray v4 client sends for each configured security.
	for _, tt := range []struct {
		s       Security
		authLen bool
		wire    Security
		opts    Option
	}{
		{SecurityAES128GCM, false, 3, 0x0d},
		{SecurityChaCha20Poly1305, false, 4, 0x0d},
		{SecurityAES128GCM, true, 3, 0x1d},
		{SecurityNone, false, 5, 0x05},
		{SecurityNone, true, 5, 0x05},
		{SecurityZero, false, 5, 0x00},
		{SecurityLegacy, false, 1, 0x01},
	} {
		w, o := ClientOptions(tt.s, tt.authLen)
		if w != tt.wire || o != tt.opts {
			t.Errorf("ClientOptions(%v, %v) = %d, %#x; want %d, %#x", tt.s, tt.authLen, w, o, tt.wire, tt.opts)
		}
	}
	if w, _ := ClientOptions(SecurityAuto, false); w != SecurityAuto.Resolve() {
		t.Error("ClientOptions does not resolve auto")
	}
	for _, s := range []Security{SecurityNone, SecurityZero, SecurityLegacy, 0} {
		if !s.Insecure() {
			t.Errorf("%v is not insecure", s)
		}
	}
	if SecurityAES128GCM.Insecure() || SecurityChaCha20Poly1305.Insecure() {
		t.Error("an AEAD is insecure")
	}
	if Security(9).String() != "security(9)" || Command(7).String() != "command(7)" || CommandMux.String() != "mux" {
		t.Error("String")
	}
}

// requestVector is a command section written by hand from the layout.
var requestVector = unhex(`
	01                                   # version
	101112131415161718191a1b1c1d1e1f     # IV
	202122232425262728292a2b2c2d2e2f     # key
	5a                                   # V
	0d                                   # options: chunk stream | masking | padding
	33                                   # padding 3 << 4 | security 3 (aes-128-gcm)
	00                                   # reserved
	01                                   # TCP
	01bb 02 0b 6578616d706c652e636f6d    # port 443, domain "example.com"
	eeddcc                               # padding
`)

func withFNV(b []byte) []byte {
	f := fnv.New32a()
	f.Write(b)
	return f.Sum(b)
}

func TestRequestKnownAnswer(t *testing.T) {
	wire := withFNV(bytes.Clone(requestVector))
	r := testRequest()
	got, err := AppendRequest([]byte("pre"), &r)
	if err != nil || !bytes.Equal(got[3:], wire) {
		t.Fatalf("AppendRequest = %x, %v\nwant %x", got[3:], err, wire)
	}
	back, n, err := ParseRequest(append(bytes.Clone(wire), 1, 2, 3))
	if err != nil || n != len(wire) || !reflect.DeepEqual(back, r) {
		t.Fatalf("ParseRequest = %+v, %d, %v", back, n, err)
	}
	for i := range wire {
		if _, _, err := ParseRequest(wire[:i]); err != protocols.ErrNeedMore {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
}

func TestRequestRoundTrip(t *testing.T) {
	targets := []protocols.Addr{
		{IP: netip.MustParseAddr("1.2.3.4"), Port: 80},
		{IP: netip.MustParseAddr("2001:db8::1"), Port: 65535},
		{Domain: strings.Repeat("a", 255), Port: 0},
	}
	for _, target := range targets {
		for _, cmd := range []Command{CommandTCP, CommandUDP, CommandMux} {
			for _, pad := range [][]byte{nil, seq(15, 1)} {
				r := testRequest()
				r.Target, r.Command, r.Padding = target, cmd, pad
				if cmd == CommandMux {
					r.Target = protocols.Addr{}
				}
				wire, err := AppendRequest(nil, &r)
				if err != nil {
					t.Fatal(err)
				}
				if len(wire) > MaxRequestLen || len(wire) < MinRequestLen {
					t.Errorf("%d bytes outside [%d, %d]", len(wire), MinRequestLen, MaxRequestLen)
				}
				back, n, err := ParseRequest(wire)
				if err != nil || n != len(wire) || !reflect.DeepEqual(back, r) {
					t.Fatalf("round trip of %+v: %+v, %d, %v", r, back, n, err)
				}
			}
		}
	}
	r := testRequest()
	r.Target = protocols.Addr{Domain: strings.Repeat("a", 255)}
	r.Padding = seq(15, 0)
	if wire, _ := AppendRequest(nil, &r); len(wire) != MaxRequestLen {
		t.Errorf("longest request is %d bytes, MaxRequestLen %d", len(wire), MaxRequestLen)
	}
}

func TestRequestErrors(t *testing.T) {
	good := withFNV(bytes.Clone(requestVector))
	mod := func(i int, v byte) []byte {
		b := bytes.Clone(requestVector)
		b[i] = v
		return withFNV(b)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"version 2", mod(0, 2), ErrBadVersion},
		{"command 4", mod(37, 4), ErrBadCommand},
		{"atyp 9", mod(40, 9), protocols.ErrBadAddr},
		{"checksum", append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1), ErrChecksum},
		{"security 2 (auto)", mod(35, 0x32), ErrBadSecurity},
		{"security 6 (zero)", mod(35, 0x36), ErrBadSecurity},
		{"security 9", mod(35, 0x39), ErrBadSecurity},
		{"padding without masking", mod(34, 0x09), ErrBadOptions},
	}
	for _, tt := range tests {
		if _, n, err := ParseRequest(tt.b); !errors.Is(err, tt.want) || n != 0 {
			t.Errorf("%s: %v, n=%d; want %v", tt.name, err, n, tt.want)
		}
	}
	// A received 0 means aes-128-cfb, as in V2Ray.
	if r, _, err := ParseRequest(mod(35, 0x30)); err != nil || r.Security != SecurityLegacy {
		t.Errorf("security 0: %v, %v", r.Security, err)
	}
	r := testRequest()
	for _, bad := range []func(*Request){
		func(r *Request) { r.Security = SecurityAuto },
		func(r *Request) { r.Security = SecurityZero },
		func(r *Request) { r.Command = 9 },
		func(r *Request) { r.Padding = make([]byte, 16) },
		func(r *Request) { r.Target = protocols.Addr{} },
		func(r *Request) { r.Options = OptionGlobalPadding },
	} {
		x := r
		bad(&x)
		if b, err := AppendRequest([]byte("keep"), &x); err == nil || string(b) != "keep" {
			t.Errorf("AppendRequest(%+v) = %q, %v", x, b, err)
		}
	}
}

var testSeed = AEADSeed{Time: 1700000000, AuthRand: [4]byte{9, 8, 7, 6}, Nonce: [8]byte(seq(8, 0x40))}

func TestAEADRequest(t *testing.T) {
	k := NewUserKey(testUUID)
	r := testRequest()
	wire, err := AppendAEADRequest([]byte("x"), k, testSeed, &r)
	if err != nil {
		t.Fatal(err)
	}
	wire = wire[1:]
	section, _ := AppendRequest(nil, &r)
	if len(wire) != AEADHeaderOverhead+len(section) {
		t.Errorf("header is %d bytes, want %d", len(wire), AEADHeaderOverhead+len(section))
	}
	// The layout: AuthID ‖ sealed length ‖ nonce ‖ sealed section.
	if id := k.AuthID(testSeed.Time, testSeed.AuthRand); !bytes.Equal(wire[:16], id[:]) {
		t.Error("header does not start with the AuthID")
	}
	if !bytes.Equal(wire[34:42], testSeed.Nonce[:]) {
		t.Error("nonce not at bytes 34..42")
	}
	lk := KDF16(k.CmdKey[:], LabelHeaderLenKey, string(wire[:16]), string(testSeed.Nonce[:]))
	ln := KDF(k.CmdKey[:], LabelHeaderLenNonce, string(wire[:16]), string(testSeed.Nonce[:]))
	if l, err := newGCM(lk[:]).Open(nil, ln[:12], wire[16:34], wire[:16]); err != nil || binary.BigEndian.Uint16(l) != uint16(len(section)) {
		t.Errorf("length field: %x, %v", l, err)
	}
	back, n, err := OpenAEADRequest(k, append(bytes.Clone(wire), "payload"...))
	if err != nil || n != len(wire) || !reflect.DeepEqual(back, r) {
		t.Fatalf("OpenAEADRequest = %+v, %d, %v", back, n, err)
	}
	for i := range wire {
		if _, _, err := OpenAEADRequest(k, wire[:i]); err != protocols.ErrNeedMore {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
	for i := 16; i < len(wire); i++ {
		bad := bytes.Clone(wire)
		bad[i] ^= 0x80
		if _, _, err := OpenAEADRequest(k, bad); !errors.Is(err, ErrAuth) && !errors.Is(err, ErrBadHeader) && err != protocols.ErrNeedMore {
			t.Errorf("byte %d flipped: %v", i, err)
		}
	}
	if _, _, err := OpenAEADRequest(NewUserKey([16]byte{7}), wire); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong user: %v", err)
	}
}

// sealedHeader builds an AEAD header around an arbitrary section.
func sealedHeader(k *UserKey, section []byte) []byte {
	authID := k.AuthID(testSeed.Time, testSeed.AuthRand)
	la, ln := headerAEAD(k, authID[:], testSeed.Nonce[:], LabelHeaderLenKey, LabelHeaderLenNonce)
	ca, cn := headerAEAD(k, authID[:], testSeed.Nonce[:], LabelHeaderKey, LabelHeaderNonce)
	b := append([]byte(nil), authID[:]...)
	b = la.Seal(b, ln[:12], binary.BigEndian.AppendUint16(nil, uint16(len(section))), authID[:])
	b = append(b, testSeed.Nonce[:]...)
	return ca.Seal(b, cn[:12], section, authID[:])
}

func TestAEADRequestBadSections(t *testing.T) {
	k := NewUserKey(testUUID)
	good := withFNV(bytes.Clone(requestVector))
	for _, tt := range []struct {
		name    string
		section []byte
		want    error
	}{
		{"too short", good[:20], ErrBadHeader},
		{"truncated inside", good[:len(good)-2], ErrBadHeader},
		{"trailing bytes", append(bytes.Clone(good), 0), ErrBadHeader},
		{"bad checksum", append(bytes.Clone(good[:len(good)-1]), 0), ErrChecksum},
		{"too long", make([]byte, MaxRequestLen+1), ErrBadHeader},
	} {
		if _, _, err := OpenAEADRequest(k, sealedHeader(k, tt.section)); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestLegacyRequest(t *testing.T) {
	r := testRequest()
	cmdKey := CmdKey(testUUID)
	alter := AlterIDs(testUUID, 2)[1]
	auth := LegacyAuth(alter, 1700000000)
	wire, err := AppendLegacyRequest([]byte("x"), auth, cmdKey, 1700000000, &r)
	if err != nil {
		t.Fatal(err)
	}
	wire = wire[1:]
	if !bytes.Equal(wire[:16], auth[:]) {
		t.Error("legacy header does not start with its auth")
	}
	plain, _ := AppendRequest(nil, &r)
	if len(wire) != 16+len(plain) || bytes.Equal(wire[16:], plain) {
		t.Error("section not encrypted in place")
	}
	back, n, err := OpenLegacyRequest(cmdKey, 1700000000, append(bytes.Clone(wire[16:]), "body"...))
	if err != nil || n != len(plain) || !reflect.DeepEqual(back, r) {
		t.Fatalf("OpenLegacyRequest = %+v, %d, %v", back, n, err)
	}
	for i := range wire[16:] {
		if _, _, err := OpenLegacyRequest(cmdKey, 1700000000, wire[16:16+i]); err != protocols.ErrNeedMore {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	if _, _, err := OpenLegacyRequest(cmdKey, 1700000001, wire[16:]); err == nil {
		t.Error("opened with the wrong time")
	}
	bad := bytes.Clone(wire[16:])
	bad[len(bad)-1] ^= 1
	if _, _, err := OpenLegacyRequest(cmdKey, 1700000000, bad); !errors.Is(err, ErrChecksum) {
		t.Errorf("flipped checksum: %v", err)
	}
	x := r
	x.Security = SecurityZero
	if b, err := AppendLegacyRequest([]byte("k"), auth, cmdKey, 1, &x); err == nil || string(b) != "k" {
		t.Errorf("bad request appended: %q, %v", b, err)
	}
}

func TestResponseKeys(t *testing.T) {
	r := testRequest()
	s := r.Session(false)
	k, v := s.ResponseKeys()
	sk, sv := sha256.Sum256(r.Key[:]), sha256.Sum256(r.IV[:])
	if !bytes.Equal(k[:], sk[:16]) || !bytes.Equal(v[:], sv[:16]) {
		t.Error("AEAD response keys are not SHA-256(request)[:16]")
	}
	s = r.Session(true)
	k, v = s.ResponseKeys()
	if k != md5.Sum(r.Key[:]) || v != md5.Sum(r.IV[:]) {
		t.Error("legacy response keys are not MD5(request)")
	}
}

func TestResponse(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		for _, h := range []Response{{Auth: 0x5a}, {Auth: 0x5a, Command: 1, CommandData: seq(40, 0)}} {
			r := testRequest()
			r.Security = SecurityLegacy
			r.Options = OptionChunkStream
			s := r.Session(legacy)
			wire, body, err := s.AppendResponse([]byte("x"), &h, nil)
			if err != nil {
				t.Fatal(err)
			}
			wire = body.Seal(wire, []byte("response body"))
			wire = body.SealEnd(wire)[1:]
			got, n, opener, err := s.OpenResponse(wire)
			if err != nil || !reflect.DeepEqual(got, h) {
				t.Fatalf("legacy=%v: OpenResponse = %+v, %v; want %+v", legacy, got, err, h)
			}
			want := 4 + len(h.CommandData)
			if !legacy {
				want += AEADResponseOverhead
			}
			if n != want {
				t.Errorf("legacy=%v: header of %d bytes, want %d", legacy, n, want)
			}
			rest := bytes.Clone(wire[n:])
			p, m, err := opener.Open(rest)
			if err != nil || string(p) != "response body" {
				t.Fatalf("legacy=%v: body after the header: %q, %v", legacy, p, err)
			}
			if _, _, err := opener.Open(rest[m:]); err != io.EOF {
				t.Errorf("legacy=%v: end: %v", legacy, err)
			}
			for i := range n {
				if _, _, _, err := s.OpenResponse(wire[:i]); err != protocols.ErrNeedMore {
					t.Fatalf("legacy=%v: prefix %d: %v", legacy, i, err)
				}
			}
			other := r
			other.ResponseAuth = 0x5b
			o2 := other.Session(legacy)
			if _, _, _, err := o2.OpenResponse(wire); !errors.Is(err, ErrBadResponse) {
				t.Errorf("legacy=%v: wrong V: %v", legacy, err)
			}
			if !legacy {
				other = r
				other.Key[0] ^= 1
				o2 = other.Session(false)
				if _, _, _, err := o2.OpenResponse(wire); !errors.Is(err, ErrBadResponse) {
					t.Errorf("wrong key: %v", err)
				}
			}
		}
	}
	r := testRequest()
	s := r.Session(false)
	if _, _, err := s.AppendResponse(nil, &Response{Command: 1, CommandData: make([]byte, 256)}, nil); err == nil {
		t.Error("256-byte command accepted")
	}
}

// TestPure enforces the package's promise: no sockets, no clock, no global
// randomness, no goroutines (checked by import).
func TestPure(t *testing.T) {
	forbidden := map[string]bool{"net": true, "net/http": true, "os": true, "os/exec": true, "time": true, "math/rand": true,
		"math/rand/v2": true, "crypto/rand": true, "syscall": true, "sync": true, "log": true, "log/slog": true}
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

// kdfChain is KDF written literally as V2Ray's proxy/vmess/aead/kdf.go
// builds it, hmac.New within hmac.New: the reference the derivation on
// stack buffers must match.
func kdfChain(key []byte, path ...string) [32]byte {
	h := func() hash.Hash { return hmac.New(sha256.New, []byte(LabelKDF)) }
	for _, p := range path {
		parent, label := h, []byte(p)
		h = func() hash.Hash { return hmac.New(parent, label) }
	}
	m := h()
	m.Write(key)
	var out [32]byte
	m.Sum(out[:0])
	return out
}

func TestKDFMatchesHMACChain(t *testing.T) {
	long := strings.Repeat("x", 100) // longer than a block: hashed first
	for _, tc := range []struct {
		key  string
		path []string
	}{
		{"0123456789abcdef", nil},
		{"0123456789abcdef", []string{LabelAuthIDKey}},
		{"0123456789abcdef", []string{LabelHeaderKey, "authid-16-bytes!", "nonce-8b"}},
		{"", []string{LabelRespHeaderIV}},
		{strings.Repeat("k", 300), []string{LabelAuthLen, long}},
	} {
		if got, want := KDF([]byte(tc.key), tc.path...), kdfChain([]byte(tc.key), tc.path...); got != want {
			t.Errorf("KDF(%q, %q) = %x, want %x", tc.key, tc.path, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { KDF([]byte("0123456789abcdef"), LabelHeaderKey, "authid-16-bytes!", "nonce-8b") }); n != 0 && !raceflag.Enabled {
		t.Errorf("KDF allocates %v times", n)
	}
}
