package vmessconn

import (
	"bytes"
	"errors"
	"io"
	mathrand "math/rand/v2"
	"net"
	"runtime"
	"testing"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols/vmess"
)

// pipe is an in-memory carrier: writes append to buf, reads drain it.
type pipe struct {
	buf []byte
	off int
}

func (p *pipe) Write(b []byte) (int, error) {
	if p.off == len(p.buf) {
		p.buf, p.off = p.buf[:0], 0
	}
	p.buf = append(p.buf, b...)
	return len(b), nil
}

func (p *pipe) Read(b []byte) (int, error) {
	if p.off == len(p.buf) {
		return 0, io.EOF
	}
	n := copy(b, p.buf[p.off:])
	p.off += n
	return n, nil
}

func endpoints(t testing.TB, sec vmess.Security, opts vmess.Option) (*Writer, *Reader, *pipe) {
	t.Helper()
	r := vmess.Request{Security: sec, Options: opts, Command: vmess.CommandTCP}
	r.Key[0], r.IV[0] = 1, 2
	s := r.Session(false)
	sealer, err := s.RequestSealer(mathrand.NewChaCha8([32]byte{}))
	if err != nil {
		t.Fatal(err)
	}
	opener, _ := s.RequestOpener()
	p := &pipe{}
	return NewWriter(p, "test", sealer, []byte("HDR")), NewReader(p, "test", nil, 0, 0, opener), p
}

// TestChunkZeroAllocsConn: a Write of 32 KiB and the Reads that take it
// back allocate nothing once the buffers have grown.
func TestChunkZeroAllocsConn(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; run without it")
	}
	for _, c := range []struct {
		sec  vmess.Security
		opts vmess.Option
	}{{vmess.SecurityAES128GCM, 0x0d}, {vmess.SecurityChaCha20Poly1305, 0x0d}, {vmess.SecurityNone, 0x05}, {vmess.SecurityNone, 0}} {
		w, r, p := endpoints(t, c.sec, c.opts)
		payload := make([]byte, 32<<10)
		got := make([]byte, 32<<10)
		w.Write(nil)
		p.off = len(p.buf) // drop the header
		round := func() {
			if _, err := w.Write(payload); err != nil {
				panic(err)
			}
			if _, err := io.ReadFull(r, got); err != nil {
				panic(err)
			}
		}
		round()
		if allocs := testing.AllocsPerRun(100, round); allocs != 0 {
			t.Errorf("%v/%#02x: %.1f allocations per 32 KiB round", c.sec, byte(c.opts), allocs)
		}
	}
}

func TestWriterReader(t *testing.T) {
	w, r, p := endpoints(t, vmess.SecurityAES128GCM, 0x0d)
	if w.PrefixSent() {
		t.Error("prefix sent before any write")
	}
	big := bytes.Repeat([]byte("x"), 200<<10) // several carrier writes
	if n, err := w.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if !bytes.HasPrefix(p.buf, []byte("HDR")) {
		t.Fatal("the first write does not start with the prefix")
	}
	p.off = 3
	if framed, err := w.End(); !framed || err != nil {
		t.Fatal(framed, err)
	}
	if _, err := w.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after End: %v", err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
	// Zero: CloseWrite half-closes the carrier, or says it cannot.
	w, _, _ = endpoints(t, vmess.SecurityNone, 0)
	if err := CloseWrite(w, nil); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("zero without a half-closing carrier: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriterStickyError(t *testing.T) {
	r := vmess.Request{Security: vmess.SecurityAES128GCM, Options: 0x0d, Command: vmess.CommandTCP}
	s := r.Session(false)
	sealer, _ := s.RequestSealer(nil)
	w := NewWriter(failWriter{}, "test", sealer, nil)
	if _, err := w.Write([]byte("a")); err == nil {
		t.Fatal("no error")
	}
	if _, err := w.Write([]byte("b")); err == nil || !bytes.Contains([]byte(err.Error()), []byte("broken pipe")) {
		t.Errorf("second write: %v", err)
	}
}

// TestReadChunk: on a packet body each ReadChunk returns one chunk, one
// datagram; a buffer too small for it gets the start and the rest is
// dropped, not returned by the next call.
func TestReadChunk(t *testing.T) {
	r := vmess.Request{Security: vmess.SecurityAES128GCM, Options: 0x0d, Command: vmess.CommandUDP}
	r.Key[0], r.IV[0] = 1, 2
	s := r.Session(false)
	sealer, err := s.RequestSealer(mathrand.NewChaCha8([32]byte{}))
	if err != nil {
		t.Fatal(err)
	}
	opener, _ := s.RequestOpener()
	p := &pipe{}
	w, rd := NewWriter(p, "test", sealer, nil), NewReader(p, "test", nil, 0, 0, opener)
	for _, d := range []string{"first datagram", "second", "third one"} {
		if _, err := w.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.End(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for _, want := range []string{"first", "second", "third one"} {
		b := buf
		if want == "first" {
			b = buf[:5] // too small: the rest of the datagram is dropped
		}
		n, err := rd.ReadChunk(b)
		if err != nil || string(b[:n]) != want {
			t.Fatalf("ReadChunk = %q, %v; want %q", b[:n], err, want)
		}
	}
	if n, err := rd.ReadChunk(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the end chunk: %d, %v", n, err)
	}
}

// TestReadReturnsChunksAtHand: one Read returns the payload of every whole
// chunk already read, not one chunk per call (a relay would make a write
// of each), and a reader whose bytes are all returned holds no buffer.
func TestReadReturnsChunksAtHand(t *testing.T) {
	w, r, p := endpoints(t, vmess.SecurityAES128GCM, 0x0d)
	w.Write(nil)
	p.off = len(p.buf) // drop the header
	payload := bytes.Repeat([]byte("y"), 24<<10)
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<10)
	n, err := r.Read(got)
	if err != nil || n != len(payload) {
		t.Fatalf("one Read of a 24 KiB write (%d chunks) = %d bytes, %v; want all of it", (len(payload)+w.sealer.MaxPayload()-1)/w.sealer.MaxPayload(), n, err)
	}
	if r.buf != nil || r.bp != nil {
		t.Fatalf("a drained reader holds a %d-byte buffer", len(r.buf))
	}
	// A Read smaller than the chunks at hand keeps the rest for the next.
	w.Write(payload)
	small := make([]byte, 1000)
	total := 0
	for total < len(payload) {
		n, err := r.Read(small)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != len(payload) || r.buf != nil {
		t.Fatalf("read %d of %d bytes; buffer held after: %v", total, len(payload), r.buf != nil)
	}
}

// TestIdleReaderMemory: readers that have returned everything and wait
// for more hold no buffer.
func TestIdleReaderMemory(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("heap figures are meaningless under -race; make test runs this without it")
	}
	const n = 200
	readers := make([]*Reader, n)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	for i := range readers {
		w, r, p := endpoints(t, vmess.SecurityAES128GCM, 0x0d)
		w.Write(nil)
		p.off = len(p.buf)
		w.Write([]byte("hello"))
		buf := make([]byte, 16)
		if n, err := r.Read(buf); n != 5 || err != nil {
			t.Fatal(n, err)
		}
		readers[i] = r
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := float64(ms.HeapAlloc-before) / n
	t.Logf("an idle reader with its writer and session costs %.0f bytes", per)
	if per > 4<<10 {
		t.Errorf("an idle reader costs %.0f bytes of heap; want under 4 KiB (no buffer)", per)
	}
	runtime.KeepAlive(readers)
}
