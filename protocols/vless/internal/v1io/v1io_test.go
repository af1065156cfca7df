package v1io

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
)

// TestDeframer reads chunks cut at every byte, stops at the end marker and
// leaves what follows it in the Reader for the next message.
func TestDeframer(t *testing.T) {
	wire := vless.AppendChunks(nil, []byte("hello, "), 0)
	wire = vless.AppendChunks(wire, bytes.Repeat([]byte("w"), 5000), 0)
	wire = vless.AppendChunkEnd(wire)
	wire = append(wire, "NEXT"...)
	want := "hello, " + string(bytes.Repeat([]byte("w"), 5000))
	for _, src := range map[string]io.Reader{
		"whole":       bytes.NewReader(wire),
		"byte a time": iotest.OneByteReader(bytes.NewReader(wire)),
		"half":        iotest.HalfReader(bytes.NewReader(wire)),
	} {
		r := NewReader(src, 64)
		d := &Deframer{R: r}
		got, err := io.ReadAll(d)
		if err != nil || string(got) != want || !d.Ended() {
			t.Fatalf("ReadAll = %d bytes, %v, ended %v", len(got), err, d.Ended())
		}
		if n, err := d.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("Read after the end = %d, %v", n, err)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "NEXT" {
			t.Fatalf("after the end marker the Reader holds %q", rest)
		}
	}
}

func TestDeframerCut(t *testing.T) {
	for _, wire := range [][]byte{{}, {0}, {0, 5, 'a', 'b'}, {0, 1, 'a'}} {
		d := &Deframer{R: NewReader(bytes.NewReader(wire), 64)}
		_, err := io.ReadAll(d)
		if !errors.Is(err, io.ErrUnexpectedEOF) || d.Ended() {
			t.Errorf("%x: ReadAll err = %v, ended %v; want ErrUnexpectedEOF", wire, err, d.Ended())
		}
	}
	boom := errors.New("boom")
	d := &Deframer{R: NewReader(iotest.ErrReader(boom), 64)}
	if _, err := d.Read(make([]byte, 4)); err != boom {
		t.Errorf("read error = %v, want it passed through", err)
	}
}

type writes struct{ w [][]byte }

func (w *writes) Write(p []byte) (int, error) {
	w.w = append(w.w, bytes.Clone(p))
	return len(p), nil
}

// TestFramer: one carrier write per chunk of at most bufpool.LargeChunk
// (a 48,000-byte Write: two), the prefix in the first; a framed stream
// deframes to the same bytes.
func TestFramer(t *testing.T) {
	var w writes
	f := &Framer{W: &w}
	data := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 bytes: 2 chunks
	n, err := f.Write([]byte("HDR"), data)
	if n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := f.End(nil); err != nil {
		t.Fatal(err)
	}
	if len(w.w) != 2+1 || string(w.w[0][:3]) != "HDR" || len(w.w[0]) != 3+2+bufpool.LargeChunk || !bytes.Equal(w.w[2], []byte{0, 0}) {
		t.Fatalf("%d writes, first %d bytes", len(w.w), len(w.w[0]))
	}
	all := bytes.Join(w.w, nil)[3:]
	got, err := io.ReadAll(&Deframer{R: NewReader(bytes.NewReader(all), 16)})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("deframed %d bytes, %v", len(got), err)
	}
	w.w = nil
	if n, err := f.Write([]byte("only"), nil); n != 0 || err != nil || len(w.w) != 1 || string(w.w[0]) != "only" {
		t.Fatalf("prefix alone: %d, %v, %q", n, err, w.w)
	}
	if n, err := WriteRaw(&w, []byte("h"), []byte("ello")); n != 4 || err != nil || string(w.w[1]) != "hello" {
		t.Fatalf("WriteRaw = %d, %v, %q", n, err, w.w)
	}
}

func TestReaderSkipAndReadMsg(t *testing.T) {
	r := NewReader(iotest.OneByteReader(bytes.NewReader([]byte("0123456789\x00\x05abcde"))), 4)
	if err := r.Skip(10); err != nil {
		t.Fatal(err)
	}
	size, err := ReadMsg(r, vless.ParseChunkHeader)
	if err != nil || size != 5 {
		t.Fatalf("ReadMsg = %d, %v", size, err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "abcde" {
		t.Fatalf("rest %q", rest)
	}
	if err := NewReader(bytes.NewReader([]byte("abc")), 2).Skip(4); err != io.ErrUnexpectedEOF {
		t.Fatalf("Skip past the end = %v", err)
	}
	if _, err := ReadMsg(NewReader(bytes.NewReader(make([]byte, 10)), 2), func(b []byte) (int, int, error) {
		return 0, 0, protocols.ErrNeedMore
	}); err != ErrTooLong {
		t.Fatalf("ReadMsg of an endless message = %v, want ErrTooLong", err)
	}
}

// sink keeps the last carrier write in a buffer it reuses.
type sink struct{ last []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.last = append(s.last[:0], p...)
	return len(p), nil
}

// TestChunkPathAllocs: in steady state a relay chunk (32 KiB) framed on
// the way out and deframed on the way in allocates nothing. The framed
// bytes are the layout of docs/protocols/vless-v1.md: a 2-byte big-endian
// length, then the data.
func TestChunkPathAllocs(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops buffers on purpose); make test runs this without it")
	}
	chunk := bytes.Repeat([]byte{0xA5}, bufpool.LargeChunk)
	var out sink
	f := &Framer{W: &out}
	if n, err := f.Write(nil, chunk); n != len(chunk) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	want := append([]byte{byte(len(chunk) >> 8), byte(len(chunk))}, chunk...)
	if !bytes.Equal(out.last, want) {
		t.Fatalf("framed %d bytes, not length then data", len(out.last))
	}
	if a := testing.AllocsPerRun(100, func() { f.Write(nil, chunk) }); a != 0 {
		t.Errorf("Framer.Write of a relay chunk: %v allocations, want 0", a)
	}

	wire := bytes.NewReader(want)
	r := NewReader(wire, 4096)
	p := make([]byte, len(chunk))
	if a := testing.AllocsPerRun(100, func() {
		wire.Reset(want)
		d := Deframer{R: r}
		if n, err := d.Read(p); n != len(chunk) || err != nil {
			t.Fatalf("Deframer.Read = %d, %v", n, err)
		}
	}); a != 0 {
		t.Errorf("Deframer.Read of a relay chunk: %v allocations, want 0", a)
	}
}
