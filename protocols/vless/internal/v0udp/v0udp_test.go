package v0udp

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestReadWrite: frames written are read back one per call; a payload
// longer than the buffer is cut and its rest skipped; the stream ending
// between frames is io.EOF, inside one io.ErrUnexpectedEOF.
func TestReadWrite(t *testing.T) {
	var wire bytes.Buffer
	w := Writer{W: &wire, Prefix: []byte("HDR")}
	for _, d := range []string{"one", "a longer datagram", "", "three"} {
		if err := w.WritePacket([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.HasPrefix(wire.Bytes(), []byte("HDR\x00\x03one")) {
		t.Fatalf("wire starts % x", wire.Bytes()[:8])
	}
	wire.Next(3)
	r := Reader{R: &wire}
	buf := make([]byte, 8)
	for _, want := range []string{"one", "a longer", "", "three"} {
		n, err := r.ReadPacket(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("ReadPacket = %q, %v; want %q", buf[:n], err, want)
		}
	}
	if _, err := r.ReadPacket(buf); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
	for _, cut := range [][]byte{{0}, {0, 5, 'a', 'b'}} {
		r := Reader{R: bytes.NewReader(cut)}
		if _, err := r.ReadPacket(buf); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut % x: %v", cut, err)
		}
	}
}
