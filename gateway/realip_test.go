package gateway

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestRealSource(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name, remote string
		xff          []string
		xrip         string
		want         string
	}{
		{"direct client, headers ignored", "198.51.100.7:4000", []string{"203.0.113.9"}, "203.0.113.8", "198.51.100.7:4000"},
		{"trusted proxy, one hop", "127.0.0.1:5000", []string{"203.0.113.9"}, "", "203.0.113.9:0"},
		{"chain of trusted proxies", "127.0.0.1:5000", []string{"203.0.113.9, 10.1.1.1", "10.2.2.2"}, "", "203.0.113.9:0"},
		{"spoofed leftmost entry is not believed", "127.0.0.1:5000", []string{"192.0.2.66, 203.0.113.9"}, "", "203.0.113.9:0"},
		{"X-Real-IP when no XFF", "127.0.0.1:5000", nil, "2001:db8::5", "[2001:db8::5]:0"},
		{"malformed XFF falls back", "127.0.0.1:5000", []string{"junk"}, "", "127.0.0.1:5000"},
		{"trusted proxy without headers", "[::ffff:127.0.0.1]:5000", nil, "", "127.0.0.1:5000"},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if tt.xrip != "" {
			r.Header.Set("X-Real-IP", tt.xrip)
		}
		if got := realSource(r, trusted).String(); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}
