package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/links"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vmess"
)

const testUUID = "b831381d-6324-4d53-ad4f-8cda48b30811"

var testID = [16]byte{0xb8, 0x31, 0x38, 0x1d, 0x63, 0x24, 0x4d, 0x53, 0xad, 0x4f, 0x8c, 0xda, 0x48, 0xb3, 0x08, 0x11}

// fixedEnv has a fixed clock and a counter for randomness.
func fixedEnv() Env {
	return Env{Now: func() int64 { return 1700000000 }, Rand: &counter{}}
}

type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		c.n++
		p[i] = c.n
	}
	return len(p), nil
}

// vlessHex reads a hand-written VLESS vector (hex, whitespace, # comments).
func vlessHex(t *testing.T, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("..", "..", "protocols", "vless", "testdata", name))
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

// call runs op with args (a JSON text) and returns its result as JSON.
func call(t *testing.T, e Env, op, args string) (string, error) {
	t.Helper()
	res, err := Call(e, op, json.RawMessage(args))
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("%s: marshal: %v", op, err)
	}
	return string(b), nil
}

func hexJSON(b []byte) string { return `"` + hex.EncodeToString(b) + `"` }

func TestVLESSEncodeRequest(t *testing.T) {
	for _, tc := range []struct {
		args, vector string
	}{
		{`{"version":0,"id":"` + testUUID + `","command":"tcp","target":"1.2.3.4:443"}`, "req_tcp_ipv4.hex"},
		{`{"version":0,"id":"` + testUUID + `","command":"tcp","target":"example.com:80","flow":"xtls-rprx-vision"}`, "req_tcp_domain_vision.hex"},
		{`{"version":0,"id":"` + testUUID + `","command":"udp","target":"[2001:db8::1]:53"}`, "req_udp_ipv6.hex"},
		{`{"version":0,"id":"` + testUUID + `","command":"mux"}`, "req_mux.hex"},
		{`{"version":0,"id":"` + testUUID + `","command":"tcp","target":"10.0.0.1:8443","flow":"xtls-rprx-vision","seed":"0102030405060708"}`, "req_flow_seed.hex"},
		{`{"version":1,"id":"` + testUUID + `","command":"tcp","target":"example.com:80","keepAlive":true,"resolve":true,"padLen":256}`, "v1_req_keepalive_resolve_pad.hex"},
		{`{"version":1,"id":"` + strings.ReplaceAll(testUUID, "-", "") + `","command":"tcp","target":"1.2.3.4:443"}`, "v1_req_tcp_ipv4.hex"},
	} {
		got, err := call(t, Env{}, "vless.encodeRequest", tc.args)
		if err != nil {
			t.Errorf("%s: %v", tc.vector, err)
			continue
		}
		if want := hexJSON(vlessHex(t, tc.vector)); got != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.vector, got, want)
		}
	}
}

func TestVLESSEncodeRequestErrors(t *testing.T) {
	_, padErr := vless.AppendRequestV1(nil, &vless.RequestV1{ID: testID, Padded: true, PadLen: vless.MaxPadLen + 1, Command: vless.CommandTCP, Target: protocols.DomainAddr("a", 1)})
	_, addrErr := protocols.ParseAddr("nope")
	long := strings.Repeat("x", 300)
	_, flowErr := vless.AppendRequest(nil, &vless.RequestHeader{ID: testID, Addons: vless.Addons{Flow: long}, Command: vless.CommandTCP, Target: protocols.DomainAddr("a", 1)})
	for _, tc := range []struct{ args, want string }{
		{`{"version":1,"id":"` + testUUID + `","command":"tcp","target":"a:1","padLen":16385}`, padErr.Error()},
		{`{"version":0,"id":"` + testUUID + `","command":"tcp","target":"a:1","flow":"` + long + `"}`, flowErr.Error()},
		{`{"version":0,"id":"` + testUUID + `","command":"tcp","target":"nope"}`, "vless.encodeRequest: target: " + addrErr.Error()},
		{`{"version":0,"id":"x","command":"tcp","target":"a:1"}`, `vless.encodeRequest: id: invalid UUID "x": want 36 characters`},
		{`{"version":0,"id":"` + testUUID + `","command":"icmp","target":"a:1"}`, `vless.encodeRequest: command: "icmp" is not tcp, udp or mux`},
		{`{"version":2,"id":"` + testUUID + `","command":"tcp","target":"a:1"}`, "vless.encodeRequest: version: 2 is not 0 or 1"},
		{`{"version":0,"id":"` + testUUID + `","command":"tcp","target":"a:1","keepAlive":true}`, "vless.encodeRequest: udpMulti, keepAlive, resolve and padLen need version 1"},
		{`{"version":1,"id":"` + testUUID + `","command":"tcp","target":"a:1","flow":"x"}`, "vless.encodeRequest: flow and seed are version 0's"},
		{`{"version":0,"bogus":1}`, `vless.encodeRequest: arguments: json: unknown field "bogus"`},
	} {
		_, err := call(t, Env{}, "vless.encodeRequest", tc.args)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestVLESSDecodeRequest(t *testing.T) {
	for _, tc := range []struct {
		vector, want string
	}{
		{"req_tcp_ipv4.hex", `"version":0,"id":"` + testUUID + `","command":"tcp","target":"1.2.3.4:443","length":26`},
		{"req_mux.hex", `"version":0,"id":"` + testUUID + `","command":"mux","length":19`},
		{"req_flow_seed.hex", `"version":0,"id":"` + testUUID + `","command":"tcp","target":"10.0.0.1:8443","flow":"xtls-rprx-vision","seed":"0102030405060708"`},
		{"v1_req_keepalive_resolve_pad.hex", `"version":1,"id":"` + testUUID + `","command":"tcp","target":"example.com:80","keepAlive":true,"resolve":true,"padded":true,"padLen":256`},
		{"v1_req_mux.hex", `"version":1,"id":"` + testUUID + `","command":"mux"`},
	} {
		b := vlessHex(t, tc.vector)
		res, err := Call(Env{}, "vless.decodeRequest", json.RawMessage(`{"bytes":`+hexJSON(b)+`}`))
		if err != nil {
			t.Errorf("%s: %v", tc.vector, err)
			continue
		}
		got, _ := json.Marshal(res)
		if !strings.Contains(string(got), tc.want) {
			t.Errorf("%s:\n got %s\nwant it to hold %s", tc.vector, got, tc.want)
		}
		// The fields tile the header exactly.
		d := res.(*VLESSDecoded)
		if d.Length != len(b) {
			t.Errorf("%s: length %d, want %d", tc.vector, d.Length, len(b))
		}
		at := 0
		for _, f := range d.Fields {
			if f.Offset != at || f.Len <= 0 {
				t.Errorf("%s: field %+v at %d", tc.vector, f, at)
			}
			at = f.Offset + f.Len
		}
		if at != d.Length {
			t.Errorf("%s: fields end at %d, want %d", tc.vector, at, d.Length)
		}
	}
}

func TestVLESSDecodeRequestErrors(t *testing.T) {
	full := vlessHex(t, "req_tcp_ipv4.hex")
	_, _, errTrunc := vless.ParseRequest(full[:20])
	bad := bytes.Clone(full)
	bad[0] = 7
	_, _, errVersion := vless.ParseRequest(bad)
	for _, tc := range []struct {
		b    []byte
		want string
	}{
		{nil, protocols.ErrNeedMore.Error()},
		{full[:20], errTrunc.Error()},
		{bad, errVersion.Error()},
	} {
		_, err := DecodeVLESSRequest(tc.b)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%x: error %v, want %q", tc.b, err, tc.want)
		}
	}
	if _, err := call(t, Env{}, "vless.decodeRequest", `{"bytes":"0g"}`); err == nil || !strings.HasPrefix(err.Error(), "vless.decodeRequest: arguments: ") {
		t.Errorf("bad hex: %v", err)
	}
}

const sealArgs = `"id":"` + testUUID + `","security":"aes-128-gcm","command":"tcp","target":"example.com:443","time":1700000000,` +
	`"key":"01000000000000000000000000000000","iv":"02000000000000000000000000000000","responseAuth":66,"padding":"",` +
	`"authRand":"01020304","nonce":"0500000000000000"`

// TestVMessSeal checks that vmess.sealHeader with every random value fixed
// is vmess.AppendAEADRequest, byte for byte (the package's Example).
func TestVMessSeal(t *testing.T) {
	got, err := Call(Env{}, "vmess.sealHeader", json.RawMessage(`{`+sealArgs+`}`))
	if err != nil {
		t.Fatal(err)
	}
	sec, opts := vmess.ClientOptions(vmess.SecurityAES128GCM, false)
	req := vmess.Request{Key: [16]byte{1}, IV: [16]byte{2}, ResponseAuth: 0x42, Security: sec, Options: opts,
		Command: vmess.CommandTCP, Target: protocols.DomainAddr("example.com", 443), Padding: []byte{}}
	want, err := vmess.AppendAEADRequest(nil, vmess.NewUserKey(testID), vmess.AEADSeed{Time: 1700000000, AuthRand: [4]byte{1, 2, 3, 4}, Nonce: [8]byte{5}}, &req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.(Bytes), want) {
		t.Errorf("sealHeader\n got %x\nwant %x", got, want)
	}
	// Opened within the window, it gives back every field.
	out, err := call(t, Env{}, "vmess.openHeader", `{"bytes":`+hexJSON(want)+`,"id":"`+testUUID+`","time":1700000100}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"form":"aead"`, `"time":1700000000`, `"authRand":"01020304"`, `"nonce":"0500000000000000"`,
		`"key":"01000000000000000000000000000000"`, `"responseAuth":66`, `"options":13`,
		`"optionNames":["chunkStream","chunkMasking","globalPadding"]`, `"security":"aes-128-gcm"`, `"target":"example.com:443"`,
		`"length":` + itoa(len(want))} {
		if !strings.Contains(out, w) {
			t.Errorf("openHeader: %s lacks %s", out, w)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestVMessRoundTrips(t *testing.T) {
	e := fixedEnv()
	for _, args := range []string{
		`{"id":"` + testUUID + `","security":"chacha20-poly1305","command":"udp","target":"[2001:db8::1]:53"}`,
		`{"id":"` + testUUID + `","security":"none","command":"mux","authLen":true}`,
		`{"id":"` + testUUID + `","security":"zero","command":"tcp","target":"1.2.3.4:80","time":1700000050}`,
		`{"id":"` + testUUID + `","alterId":4,"security":"aes-128-cfb","command":"tcp","target":"1.2.3.4:80"}`,
		`{"id":"` + testUUID + `","alterId":4,"alterIndex":3,"security":"aes-128-gcm","command":"tcp","target":"a.example:1","time":1699999900}`,
	} {
		var a VMessSeal
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			t.Fatal(err)
		}
		b, err := SealVMessHeader(e, &a)
		if err != nil {
			t.Errorf("%s: %v", args, err)
			continue
		}
		o, err := OpenVMessHeader(e, &VMessOpen{Bytes: b, ID: testUUID, AlterID: a.AlterID})
		if err != nil {
			t.Errorf("%s: open: %v", args, err)
			continue
		}
		wantForm := "aead"
		if a.AlterID > 0 {
			wantForm = "legacy"
		}
		if o.Form != wantForm || o.Command != a.Command || (a.Command != "mux" && o.Target != a.Target) || o.Length != len(b) {
			t.Errorf("%s: opened %+v", args, o)
		}
		if a.AlterIndex != nil && (o.AlterIndex == nil || *o.AlterIndex != *a.AlterIndex) {
			t.Errorf("%s: alter index %v", args, o.AlterIndex)
		}
	}
}

func TestVMessOpenErrors(t *testing.T) {
	var a VMessSeal
	json.Unmarshal([]byte(`{`+sealArgs+`}`), &a)
	hdr, err := SealVMessHeader(Env{}, &a)
	if err != nil {
		t.Fatal(err)
	}
	skew := vmess.CheckTime(1700000000, 1700000121)
	_, _, trunc := vmess.OpenAEADRequest(vmess.NewUserKey(testID), hdr[:50])
	tampered := bytes.Clone(hdr)
	tampered[len(tampered)-1] ^= 1
	_, _, auth := vmess.OpenAEADRequest(vmess.NewUserKey(testID), tampered)
	now := int64(1700000000)
	for _, tc := range []struct {
		o    VMessOpen
		want string
	}{
		{VMessOpen{Bytes: hdr, ID: testUUID, Time: ptr(int64(1700000121))}, skew.Error()},
		{VMessOpen{Bytes: hdr[:50], ID: testUUID, Time: &now}, trunc.Error()},
		{VMessOpen{Bytes: tampered, ID: testUUID, Time: &now}, auth.Error()},
		{VMessOpen{Bytes: hdr[:10], ID: testUUID, Time: &now}, protocols.ErrNeedMore.Error()},
		{VMessOpen{Bytes: hdr, ID: "00000000-0000-0000-0000-000000000000", Time: &now},
			vmess.ErrAuth.Error() + ": neither the AuthID of this id nor a legacy auth of it (alterId 0) within 120 s of 1700000000"},
		{VMessOpen{Bytes: hdr, ID: testUUID}, "vmess.openHeader: no clock: pass time"},
		{VMessOpen{Bytes: hdr, ID: testUUID, Time: &now, AlterID: 1025}, "vmess.openHeader: alterId: 1025 is not in 0..1024"},
	} {
		_, err := OpenVMessHeader(Env{}, &tc.o)
		if err == nil || err.Error() != tc.want {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	// Sealing errors.
	_, secErr := vmess.ParseSecurity("rot13")
	for _, tc := range []struct{ args, want string }{
		{`{"id":"` + testUUID + `","security":"rot13","command":"tcp","target":"a:1"}`, secErr.Error()},
		{`{"id":"` + testUUID + `","security":"none","command":"tcp","target":"a:1","time":1,"key":"01"}`, "vmess.sealHeader: key: want 16 bytes, got 1"},
		{`{"id":"` + testUUID + `","security":"none","command":"tcp","target":"a:1"}`, "vmess.sealHeader: no clock: pass time"},
		{`{"id":"` + testUUID + `","security":"none","command":"tcp","target":"a:1","time":1}`, "vmess.sealHeader: key: no randomness: pass the random values"},
		{`{"id":"` + testUUID + `","alterId":2,"alterIndex":2,"security":"none","command":"tcp","target":"a:1","time":1}`, ""},
	} {
		e := Env{}
		if tc.want == "" {
			e = fixedEnv()
			tc.want = "vmess.sealHeader: alterIndex: 2 is not in 0..1"
		}
		_, err := call(t, e, "vmess.sealHeader", tc.args)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestAnyTLS(t *testing.T) {
	out, err := call(t, Env{}, "anytls.parseScheme", `{"scheme":""}`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"md5":"`+anytls.DefaultSchemeMD5+`"`) || !strings.Contains(out, `{"packet":2,"steps":["400-500","c","500-1000","c","500-1000","c","500-1000","c","500-1000"]}`) {
		t.Errorf("parseScheme: %s", out)
	}
	// A seeded plan is the codec's plan with the same PCG.
	for _, tc := range []struct {
		pkt  uint32
		size int
	}{{1, 0}, {1, 50}, {2, 3000}, {3, 10}, {8, 100}, {9, 70000}} {
		var seed uint64 = 42
		got, err := PlanWrites(Env{}, &PlanArgs{Packet: tc.pkt, Size: tc.size, Seed: &seed})
		if err != nil {
			t.Fatal(err)
		}
		want := anytls.DefaultScheme().Plan(nil, tc.pkt, tc.size, rand.New(rand.NewPCG(42, 0)))
		if len(got) != len(want) {
			t.Fatalf("packet %d size %d: %d records, want %d", tc.pkt, tc.size, len(got), len(want))
		}
		sum := 0
		for i, r := range got {
			w := want[i]
			if r.Payload != w.Payload || r.Len != w.Len() || (r.Waste == nil) != (w.Waste == anytls.NoWaste) || (r.Waste != nil && *r.Waste != w.Waste) {
				t.Errorf("packet %d size %d record %d: %+v, want %+v", tc.pkt, tc.size, i, r, w)
			}
			sum += r.Payload
		}
		if sum != tc.size {
			t.Errorf("packet %d: payload %d, want %d", tc.pkt, sum, tc.size)
		}
	}
	// Without a seed, the Env's randomness.
	if _, err := call(t, fixedEnv(), "anytls.planWrites", `{"packet":2,"size":10}`); err != nil {
		t.Error(err)
	}
	_, schemeErr := anytls.ParseScheme([]byte("stop=x"))
	for _, tc := range []struct{ op, args, want string }{
		{"anytls.planWrites", `{"scheme":"stop=x","packet":1,"size":1,"seed":1}`, schemeErr.Error()},
		{"anytls.parseScheme", `{"scheme":"stop=x"}`, schemeErr.Error()},
		{"anytls.planWrites", `{"packet":1,"size":-1,"seed":1}`, "anytls.planWrites: size: -1 is negative"},
		{"anytls.planWrites", `{"packet":1,"size":1}`, "anytls.planWrites: seed: no randomness: pass the random values"},
	} {
		_, err := call(t, Env{}, tc.op, tc.args)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s %s: error %v, want %q", tc.op, tc.args, err, tc.want)
		}
	}
}

func TestLinks(t *testing.T) {
	for _, in := range []string{
		"vless://b831381d-6324-4d53-ad4f-8cda48b30811@example.com:443?encryption=none&security=tls&sni=cdn.example.com&type=ws&host=example.com&path=%2Fws%3Fed%3D2048#my%20server",
		"vless://b831381d-6324-4d53-ad4f-8cda48b30811@[2001:db8::1]:8443?type=grpc&serviceName=tun&security=tls&alpn=h2,http/1.1&allowInsecure=1",
		"vless://id@h:443?security=tls&v=1&ka=1&resolve=1&pad=300-900",
		"anytls://p%40ss%2Fword@example.com:8443/?sni=cdn.example.com&insecure=1#my%20anytls",
	} {
		native, err := links.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseLink(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		// Through JSON and back, as JavaScript would.
		j, _ := json.Marshal(l)
		out, err := Call(Env{}, "links.format", j)
		if err != nil {
			t.Fatal(err)
		}
		if out != native.String() {
			t.Errorf("%s:\n got %s\nwant %s", in, out, native.String())
		}
		again, err := links.Parse(out.(string))
		if err != nil || again.String() != native.String() {
			t.Errorf("%s: reparse %v %v", in, again, err)
		}
	}
	for _, bad := range []string{"", "trojan://pw@h:1", "vless://id@h:70000", "vless://id@h:1?v=1&pad=9-3"} {
		_, want := links.Parse(bad)
		_, err := ParseLink(bad)
		if err == nil || err.Error() != want.Error() {
			t.Errorf("%q: error %v, want %v", bad, err, want)
		}
	}
}

func TestServe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"op":"links.parse","args":{"url":"vless://id@h:1"}}`, `{"ok":true,"result":{"protocol":"vless","id":"id","host":"h","port":1`},
		{`{"op":"vless.encodeRequest","args":{"version":0,"id":"` + testUUID + `","command":"mux"}}`, `{"ok":true,"result":"00b831381d63244d53ad4f8cda48b308110003"}`},
		{`{"op":"nope"}`, `{"ok":false,"error":"api: unknown operation \"nope\""}`},
		{`{"op":`, `{"ok":false,"error":"api: reading the request: unexpected EOF"}`},
		{`{"op":"links.parse","args":{"url":"x"}}`, `{"ok":false,"error":"links: bad share link`},
	} {
		var out bytes.Buffer
		if err := Serve(fixedEnv(), strings.NewReader(tc.in), &out); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out.String(), tc.want) || !strings.HasSuffix(out.String(), "}\n") {
			t.Errorf("%s:\n got %s\nwant %s…", tc.in, out.String(), tc.want)
		}
	}
}

func TestOps(t *testing.T) {
	want := "anytls.parseScheme anytls.planWrites links.format links.parse vless.decodeRequest vless.encodeRequest vmess.openHeader vmess.sealHeader"
	if got := strings.Join(OpNames(), " "); got != want {
		t.Errorf("ops %s, want %s", got, want)
	}
}
