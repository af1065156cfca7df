package protocols

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in      string
		want    Addr
		wantErr string
	}{
		{in: "example.com:443", want: Addr{Domain: "example.com", Port: 443}},
		{in: "example.com.:80", want: Addr{Domain: "example.com", Port: 80}},
		{in: "127.0.0.1:8443", want: Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 8443}},
		{in: "[::1]:53", want: Addr{IP: netip.MustParseAddr("::1"), Port: 53}},
		{in: "[::ffff:10.0.0.1]:1", want: Addr{IP: netip.MustParseAddr("10.0.0.1"), Port: 1}},
		{in: "host:0", want: Addr{Domain: "host", Port: 0}},
		{in: "host:65535", want: Addr{Domain: "host", Port: 65535}},
		{in: "host", wantErr: "want host:port"},
		{in: "::1:53", wantErr: "want host:port"},
		{in: "host:65536", wantErr: "port"},
		{in: "host:http", wantErr: "port"},
		{in: ":80", wantErr: "empty host"},
		{in: "bad host:80", wantErr: "domain has byte"},
		{in: strings.Repeat("a", 256) + ":1", wantErr: "longer than 255"},
	}
	for _, tt := range tests {
		got, err := ParseAddr(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadAddr) {
				t.Errorf("ParseAddr(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestAddrString(t *testing.T) {
	for _, tt := range []struct {
		a    Addr
		want string
	}{
		{DomainAddr("example.com", 443), "example.com:443"},
		{DomainAddr("10.1.2.3", 80), "10.1.2.3:80"},
		{DomainAddr("[2001:db8::1]", 80), "[2001:db8::1]:80"},
		{Addr{}, "invalid:0"},
	} {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
	if !DomainAddr("10.1.2.3", 1).IP.IsValid() {
		t.Error("DomainAddr kept an IP literal as a domain")
	}
}

// The vectors are written from the layouts' specs (RFC 1928 §5; V2Ray's
// port-first address; sing-box UoT v2), not produced by the encoder.
var addrVectors = []struct {
	name  string
	codec AddrCodec
	addr  Addr
	hex   string
}{
	{"socks ipv4", SOCKSAddr, Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}, "01" + "01020304" + "0050"},
	{"socks domain", SOCKSAddr, Addr{Domain: "a.io", Port: 443}, "03" + "04" + "612e696f" + "01bb"},
	{"socks ipv6", SOCKSAddr, Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 53}, "04" + "20010db8000000000000000000000001" + "0035"},
	{"v ipv4", VAddr, Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}, "0050" + "01" + "01020304"},
	{"v domain", VAddr, Addr{Domain: "a.io", Port: 65535}, "ffff" + "02" + "04" + "612e696f"},
	{"v ipv6", VAddr, Addr{IP: netip.MustParseAddr("::1"), Port: 0}, "0000" + "03" + "00000000000000000000000000000001"},
	{"uot ipv4", UoTAddr, Addr{IP: netip.MustParseAddr("8.8.8.8"), Port: 53}, "00" + "08080808" + "0035"},
	{"uot ipv6", UoTAddr, Addr{IP: netip.MustParseAddr("::2"), Port: 53}, "01" + "00000000000000000000000000000002" + "0035"},
	{"uot domain", UoTAddr, Addr{Domain: "x", Port: 1}, "02" + "01" + "78" + "0001"},
}

func TestAddrCodecVectors(t *testing.T) {
	for _, v := range addrVectors {
		t.Run(v.name, func(t *testing.T) {
			want, _ := hex.DecodeString(v.hex)
			got, err := v.codec.Append([]byte{0xAA}, v.addr)
			if err != nil || !bytes.Equal(got[1:], want) || got[0] != 0xAA {
				t.Fatalf("Append = %x, %v; want aa%x", got, err, want)
			}
			if n := v.codec.Len(v.addr); n != len(want) {
				t.Errorf("Len = %d, want %d", n, len(want))
			}
			a, n, err := v.codec.Parse(append(want, 0xEE))
			if err != nil || n != len(want) || a != v.addr {
				t.Fatalf("Parse = %+v, %d, %v; want %+v, %d", a, n, err, v.addr, len(want))
			}
			for i := range want {
				if _, _, err := v.codec.Parse(want[:i]); err != ErrNeedMore {
					t.Fatalf("Parse of %d of %d bytes: err = %v, want ErrNeedMore", i, len(want), err)
				}
			}
		})
	}
}

func TestAddrCodecErrors(t *testing.T) {
	if _, _, err := SOCKSAddr.Parse([]byte{9, 1, 2}); !errors.Is(err, ErrBadAddr) {
		t.Errorf("unknown atyp: err = %v", err)
	}
	if _, _, err := SOCKSAddr.Parse([]byte{3, 0, 0, 80}); !errors.Is(err, ErrBadAddr) {
		t.Errorf("empty domain: err = %v", err)
	}
	if _, err := SOCKSAddr.Append(nil, Addr{}); !errors.Is(err, ErrBadAddr) {
		t.Errorf("invalid Addr: err = %v", err)
	}
	if _, err := VAddr.Append(nil, Addr{Domain: strings.Repeat("a", 256)}); !errors.Is(err, ErrBadAddr) {
		t.Errorf("long domain: err = %v", err)
	}
}

func FuzzAddrCodec(f *testing.F) {
	for _, v := range addrVectors {
		b, _ := hex.DecodeString(v.hex)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []AddrCodec{SOCKSAddr, VAddr, UoTAddr} {
			a, n, err := c.Parse(b)
			if err != nil {
				continue
			}
			if n > len(b) {
				t.Fatalf("consumed %d of %d bytes", n, len(b))
			}
			again, err := c.Append(nil, a)
			if err != nil {
				t.Fatalf("re-encode %+v: %v", a, err)
			}
			if !bytes.Equal(again, b[:n]) {
				t.Fatalf("round trip: %x became %x", b[:n], again)
			}
		}
	})
}
