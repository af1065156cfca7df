package links

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestParseVLESS(t *testing.T) {
	tests := []struct {
		in   string
		want Link
	}{
		{
			// As V2RayN exports a VLESS+WS+TLS server.
			"vless://b831381d-6324-4d53-ad4f-8cda48b30811@example.com:443?encryption=none&security=tls&sni=cdn.example.com&type=ws&host=example.com&path=%2Fws%3Fed%3D2048#my%20server",
			Link{Protocol: "vless", ID: "b831381d-6324-4d53-ad4f-8cda48b30811", Host: "example.com", Port: 443, Name: "my server",
				Transport: "ws", Path: "/ws?ed=2048", HostHeader: "example.com", Security: "tls", SNI: "cdn.example.com", Encryption: "none"},
		},
		{
			"vless://b831381d-6324-4d53-ad4f-8cda48b30811@[2001:db8::1]:8443?type=grpc&serviceName=tun&security=tls&alpn=h2,http/1.1&allowInsecure=1",
			Link{Protocol: "vless", ID: "b831381d-6324-4d53-ad4f-8cda48b30811", Host: "2001:db8::1", Port: 8443,
				Transport: "grpc", ServiceName: "tun", Security: "tls", ALPN: []string{"h2", "http/1.1"}, Insecure: true, Encryption: "none"},
		},
		{
			"VLESS://id@1.2.3.4:80",
			Link{Protocol: "vless", ID: "id", Host: "1.2.3.4", Port: 80, Transport: "tcp", Security: "none", Encryption: "none"},
		},
		{
			"vless://id@h:1?insecure=true&v=1&flow=xtls-rprx-vision&pin=ab",
			Link{Protocol: "vless", ID: "id", Host: "h", Port: 1, Transport: "tcp", Security: "none", Insecure: true, Version: 1, Flow: "xtls-rprx-vision", Pin: "ab", Encryption: "none"},
		},
		{
			"vless://id@h:443?security=tls&v=1&ka=1&resolve=1&pad=300-900",
			Link{Protocol: "vless", ID: "id", Host: "h", Port: 443, Transport: "tcp", Security: "tls", Encryption: "none",
				Version: 1, KeepAlive: true, Resolve: true, PadMin: 300, PadMax: 900},
		},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
		}
		again, err := Parse(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("round trip of %q via %q: %+v, %v", tt.in, got.String(), again, err)
		}
	}
}

func TestParseAnyTLS(t *testing.T) {
	// As mihomo documents the form; the password needs escaping.
	in := "anytls://p%40ss%2Fword@example.com:8443/?sni=cdn.example.com&insecure=1#my%20anytls"
	want := Link{Protocol: "anytls", ID: "p@ss/word", Host: "example.com", Port: 8443, Name: "my anytls",
		Transport: "tcp", Security: "tls", SNI: "cdn.example.com", Insecure: true}
	got, err := Parse(in)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse = %+v, %v\nwant %+v", got, err, want)
	}
	again, err := Parse(got.String())
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
	}
	for _, bad := range []string{"anytls://example.com:1", "anytls://pw@example.com"} {
		if _, err := Parse(bad); !errors.Is(err, ErrBadLink) {
			t.Errorf("Parse(%q) = %v", bad, err)
		}
	}
}

func TestParseVMess(t *testing.T) {
	// A v2rayN export (port and aid as strings), and one with numbers.
	js := `{"v":"2","ps":"hk 01","add":"example.com","port":"443","id":"b831381d-6324-4d53-ad4f-8cda48b30811","aid":"0","scy":"chacha20-poly1305","net":"ws","type":"none","host":"cdn.example.com","path":"/ray","tls":"tls","sni":"example.com","alpn":"h2,http/1.1"}`
	want := Link{Protocol: "vmess", ID: "b831381d-6324-4d53-ad4f-8cda48b30811", Host: "example.com", Port: 443, Name: "hk 01",
		Cipher: "chacha20-poly1305", Transport: "ws", HostHeader: "cdn.example.com", Path: "/ray", Security: "tls",
		SNI: "example.com", ALPN: []string{"h2", "http/1.1"}}
	got, err := Parse("vmess://" + base64.StdEncoding.EncodeToString([]byte(js)))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse = %+v, %v\nwant %+v", got, err, want)
	}
	again, err := Parse(got.String())
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
	}
	js = `{"v":2,"ps":"","add":"1.2.3.4","port":8443,"id":"b831381d-6324-4d53-ad4f-8cda48b30811","aid":4,"net":"tcp","tls":""}`
	got, err = Parse("vmess://" + base64.RawURLEncoding.EncodeToString([]byte(js)))
	if err != nil || got.Port != 8443 || got.AlterID != 4 || got.Cipher != "auto" || got.Security != "none" {
		t.Fatalf("numbers form: %+v, %v", got, err)
	}
	for _, bad := range []string{"vmess://!!!", "vmess://" + base64.StdEncoding.EncodeToString([]byte(`{"v":"3","add":"a","port":"1","id":"x"}`)),
		"vmess://" + base64.StdEncoding.EncodeToString([]byte(`{"add":"a","port":"0","id":"x"}`)),
		"vmess://" + base64.StdEncoding.EncodeToString([]byte(`{"add":"a","port":"1"}`))} {
		if _, err := Parse(bad); !errors.Is(err, ErrBadLink) {
			t.Errorf("Parse(%q) = %v", bad, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"", "example.com:443", "trojan://pw@h:1", "vless://h:1", "vless://id@h", "vless://id@:1",
		"vless://id@h:0", "vless://id@h:70000", "vless://id@h:1?v=2", "vless://id@h:1?v=x", "vless://id@h:1?ka=1", "vless://id@h:1?v=1&pad=9-3", "vless://id@h:1?v=1&pad=x", "vless://%zz@h:1",
	} {
		if _, err := Parse(in); !errors.Is(err, ErrBadLink) {
			t.Errorf("Parse(%q) err = %v, want ErrBadLink", in, err)
		}
	}
}

func ExampleLink_String() {
	l := Link{Protocol: "vless", ID: "b831381d-6324-4d53-ad4f-8cda48b30811", Host: "127.0.0.1", Port: 8443,
		Security: "tls", Pin: "c74c0e39799591261034a69d418cd0afef8c40ff4903d3781335145897297698", Name: "portico-vless"}
	fmt.Println(l.String())
	// Output: vless://b831381d-6324-4d53-ad4f-8cda48b30811@127.0.0.1:8443?encryption=none&pin=c74c0e39799591261034a69d418cd0afef8c40ff4903d3781335145897297698&security=tls&type=tcp#portico-vless
}

func FuzzParse(f *testing.F) {
	f.Add("vless://b831381d-6324-4d53-ad4f-8cda48b30811@example.com:443?encryption=none&security=tls&type=ws&path=%2Fws#x")
	f.Add("vless://id@[::1]:1?alpn=h2")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(l.String())
		if err != nil {
			t.Fatalf("re-parse of %q (from %q): %v", l.String(), s, err)
		}
		if again.ID != l.ID || again.Host != l.Host || again.Port != l.Port || again.Transport != l.Transport || again.Path != l.Path {
			t.Fatalf("round trip changed %+v into %+v", l, again)
		}
	})
}
