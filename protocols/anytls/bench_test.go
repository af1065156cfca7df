package anytls

import (
	"math/rand/v2"
	"testing"
)

func BenchmarkAppendFrame(b *testing.B) {
	data := make([]byte, 16<<10)
	buf := make([]byte, 0, HeaderLen+len(data))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendFrame(buf[:0], Frame{Cmd: CmdPSH, Stream: 3, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseFrame(b *testing.B) {
	wire, _ := AppendFrame(nil, Frame{Cmd: CmdPSH, Stream: 3, Data: make([]byte, 16<<10)})
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseFrame(wire); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeader is the session's hot path: a 7-byte header each way.
func BenchmarkHeader(b *testing.B) {
	var buf [HeaderLen]byte
	b.ReportAllocs()
	for b.Loop() {
		wire := AppendHeader(buf[:0], Header{Cmd: CmdPSH, Stream: 9, Length: 1400})
		if h, _, err := ParseHeader(wire); err != nil || h.Length != 1400 {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlan(b *testing.B) {
	s := DefaultScheme()
	r := rand.New(rand.NewPCG(1, 2))
	plan := make([]Record, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		for pkt := range s.Stop() {
			plan = s.Plan(plan[:0], pkt, 1500, r)
		}
	}
}

func BenchmarkParseScheme(b *testing.B) {
	raw := []byte(DefaultSchemeText)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseScheme(raw); err != nil {
			b.Fatal(err)
		}
	}
}
