package vless

import (
	"testing"

	"github.com/portico-gw/portico/protocols"
)

func benchRequests() map[string]*RequestHeader {
	return map[string]*RequestHeader{
		"ipv4":   {ID: testID, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)},
		"domain": {ID: testID, Command: CommandTCP, Target: protocols.Addr{Domain: "www.example.com", Port: 443}},
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	for name, r := range benchRequests() {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, MaxRequestLen)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = AppendRequest(buf[:0], r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseRequest(b *testing.B) {
	for name, r := range benchRequests() {
		b.Run(name, func(b *testing.B) {
			wire, _ := AppendRequest(nil, r)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := ParseRequest(wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTrip is a client's encode plus a server's decode.
func BenchmarkRoundTrip(b *testing.B) {
	for name, r := range benchRequests() {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, MaxRequestLen)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendRequest(buf[:0], r)
				if _, _, err := ParseRequest(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkResponse(b *testing.B) {
	buf := make([]byte, 0, MaxResponseLen)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendResponse(buf[:0], &ResponseHeader{})
		if _, _, err := ParseResponse(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	wire, _ := AppendRequest(nil, benchRequests()["ipv4"])
	users := map[[16]byte]struct{}{testID: {}}
	known := func(id [16]byte) bool { _, ok := users[id]; return ok }
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := Match(wire, known); !ok {
			b.Fatal("no match")
		}
	}
}
