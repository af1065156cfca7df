package vless

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

func benchV1Requests() map[string]*RequestV1 {
	return map[string]*RequestV1{
		"ipv4":             {ID: testID, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)},
		"ipv4 all addons":  {ID: testID, KeepAlive: true, Resolve: true, Padded: true, PadLen: 600, Command: CommandTCP, Target: ipAddr("1.2.3.4", 443)},
		"domain keepalive": {ID: testID, KeepAlive: true, Command: CommandTCP, Target: protocols.Addr{Domain: "www.example.com", Port: 443}},
	}
}

// BenchmarkV1RoundTrip is a client's encode plus a server's decode of a
// first header (0 allocs for IP targets; 1 for a domain, its string).
func BenchmarkV1RoundTrip(b *testing.B) {
	for name, r := range benchV1Requests() {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, MaxRequestV1Len)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendRequestV1(buf[:0], r)
				if _, _, err := ParseRequestV1(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNextRequestRoundTrip is the same for the short header of a
// reused connection.
func BenchmarkNextRequestRoundTrip(b *testing.B) {
	r := benchV1Requests()["ipv4"]
	buf := make([]byte, 0, MaxNextRequestLen)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendNextRequest(buf[:0], r)
		if _, _, err := ParseNextRequest(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkFrame frames 16 KiB into one chunk and parses it back.
func BenchmarkChunkFrame(b *testing.B) {
	data := bytes.Repeat([]byte{0x5a}, 16382)
	buf := make([]byte, 0, len(data)+ChunkHeaderLen)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendChunks(buf[:0], data, 0)
		if c, _, _, err := ParseChunk(buf); err != nil || len(c) != len(data) {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkHeader is the per-chunk cost alone: a length out and in.
func BenchmarkChunkHeader(b *testing.B) {
	var buf [2]byte
	b.ReportAllocs()
	for b.Loop() {
		h := AppendChunkHeader(buf[:0], 1400)
		if size, _, err := ParseChunkHeader(h); err != nil || size != 1400 {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolved(b *testing.B) {
	ap := netip.MustParseAddrPort("[2001:db8::1]:443")
	buf := make([]byte, 0, MaxResolvedLen)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendResolved(buf[:0], ap)
		if _, _, err := ParseResolved(buf); err != nil {
			b.Fatal(err)
		}
	}
}
