package vlesstest

import (
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
	if err := Exchange(dial(), 1<<20, 7); err != nil {
		t.Fatalf("clean exchange: %v", err)
	}
	if err := Exchange(&corrupt{Conn: dial(), at: 777_777}, 1<<20, 7); err == nil {
		t.Error("a flipped byte went unnoticed")
	}
	c := dial()
	go func() { time.Sleep(50 * time.Millisecond); c.Close() }()
	if err := Exchange(c, 1<<30, 7); err == nil {
		t.Error("a short stream went unnoticed")
	}
}
