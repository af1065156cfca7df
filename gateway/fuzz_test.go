package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// FuzzParseConfig: no config, however broken, panics the loader or gets a
// multi-line error; one that loads is checked and loads again the same.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"server": {}}`,
		`{"server": {"listen": ":443", "tls": {"source": "acme", "domains": ["a.example"]}}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "6b2f4a6e-8a47-4d3e-9c43-1d0f2c0b2a11"}], "decryption": "none"}}]}`,
		`{"inbounds": [{"protocol": "mixed", "listen": "127.0.0.1:1080"}], "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{"address": "a", "port": 1, "users": [{"id": "6b2f4a6e-8a47-4d3e-9c43-1d0f2c0b2a11"}]}]}}]}`,
		`{"udp": {"nat": "symmetric", "maxAssociations": 10}, "timeouts": {"idle": "1m", "handshake": 3}}`,
		`{"routing": {"rules": [{"ip": ["10.0.0.0/8"], "port": "53,1000-2000", "outboundTag": "block"}]}}`,
		`{"server": {"listen": 1}}`, `[1,2]`, `{"server": {"tls": {"source": "files"}}}`, `{"log": {"level": "loud"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || msg == "" {
				t.Fatalf("error is not one line: %q", msg)
			}
			return
		}
		if cfg == nil {
			t.Fatal("nil config without an error")
		}
	})
}

// FuzzClassify: the front door's decision on any first bytes is one of
// its verdicts, never a panic, and stable: the same bytes decide the same
// way, and a prefix that was decided stays decided when more bytes follow.
func FuzzClassify(f *testing.F) {
	st, err := LoadOrCreateState(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	g, err := New(st.DefaultConfig("127.0.0.1:0"), Options{})
	if err != nil {
		f.Fatal(err)
	}
	var matchers []protocols.Matcher
	for _, p := range g.front.Protocols {
		matchers = append(matchers, p.Match)
	}
	if len(matchers) != 3 {
		f.Fatalf("%d raw-TLS protocols on the default; want 3", len(matchers))
	}
	for _, s := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
		{0x00}, {0x01}, {0x00, 0x01, 0x02},
		append([]byte{0x00}, bytes.Repeat([]byte{0xab}, 40)...),
		bytes.Repeat([]byte{0x7f}, 64),
		[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v1, p1, _ := classify(data, matchers)
		v2, p2, _ := classify(data, matchers)
		if v1 != v2 || p1 != p2 {
			t.Fatalf("classify is not stable on %x: %v/%d then %v/%d", data, v1, p1, v2, p2)
		}
		if v1 != verdictMore {
			more := append(append([]byte(nil), data...), 0x00, 0x41, 0x0a)
			if v3, p3, _ := classify(more, matchers); v3 != v1 || p3 != p1 {
				t.Fatalf("decided %v/%d on %x, then %v/%d with more bytes", v1, p1, data, v3, p3)
			}
		}
	})
}
