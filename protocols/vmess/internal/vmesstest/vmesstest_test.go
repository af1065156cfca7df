package vmesstest

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// corrupt flips one byte of what it reads, at offset at.
type corrupt struct {
	net.Conn
	at, off int64
}

func (c *corrupt) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.at >= c.off && c.at < c.off+int64(n) {
		p[c.at-c.off] ^= 0x40
	}
	c.off += int64(n)
	return n, err
}

// TestExchangeCanFail proves the checksum catches a single flipped byte
// and a short stream.
func TestExchangeCanFail(t *testing.T) {
	echo := Echo(t)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", echo.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}
	if err := Exchange(dial(), 3<<20, 7); err != nil {
		t.Fatalf("clean exchange: %v", err)
	}
	if err := Exchange(&corrupt{Conn: dial(), at: 2_777_777}, 3<<20, 7); err == nil {
		t.Error("a flipped byte went unnoticed")
	}
	c := dial()
	go func() { time.Sleep(50 * time.Millisecond); c.Close() }()
	if err := Exchange(c, 1<<30, 7); err == nil {
		t.Error("a short stream went unnoticed")
	}
}

// TestPatternPieces: no two 32 KiB pieces of the stream are equal, and the
// stream does not depend on how it is read.
func TestPatternPieces(t *testing.T) {
	a, b := NewPattern(1), NewPattern(1)
	x := make([]byte, 3<<20)
	a.Next(x[:1000])
	for off := 1000; off < len(x); off += piece {
		a.Next(x[off:min(off+piece, len(x))])
	}
	y := make([]byte, len(x))
	for off, step := 0, 1; off < len(y); off, step = off+step, step%9000+3 {
		b.Next(y[off:min(off+step, len(y))])
	}
	if !bytes.Equal(x, y) {
		t.Fatal("the stream depends on the read sizes")
	}
	seen := map[string]bool{}
	for off := 0; off+piece <= len(x); off += piece {
		k := string(x[off : off+piece])
		if seen[k] {
			t.Fatalf("piece at %d repeats", off)
		}
		seen[k] = true
	}
}
