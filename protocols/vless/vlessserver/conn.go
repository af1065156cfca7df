package vlessserver

import (
	"net"
	"sync"
	"sync/atomic"
)

// responseHeader is the v0 response with no addons: version 0, length 0.
var responseHeader = [2]byte{0, 0}

// conn is the tunnel stream handed to the Handler. Reads first return the
// payload that arrived with the request header; the response header goes
// out with the first Write, in the same carrier write (one TLS record), or
// alone when the handler closes before writing.
type conn struct {
	net.Conn
	pending []byte // payload read with the header; touched by Read only

	mu   sync.Mutex  // held while the response header is being written
	sent atomic.Bool // the response header is written (or will be by the holder of mu)
}

type closeWriter interface{ CloseWrite() error }

// halfConn is conn for carriers that can half-close.
type halfConn struct{ *conn }

func newConn(c net.Conn, pending []byte) net.Conn {
	sc := &conn{Conn: c}
	if len(pending) > 0 {
		sc.pending = pending
	}
	if _, ok := c.(closeWriter); ok {
		return halfConn{sc}
	}
	return sc
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	if c.sent.Load() {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	if c.sent.Load() {
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	b := make([]byte, 0, len(responseHeader)+len(p))
	b = append(append(b, responseHeader[:]...), p...)
	n, err := c.Conn.Write(b)
	c.sent.Store(true)
	c.mu.Unlock()
	return max(n-len(responseHeader), 0), err
}

// flushHeader writes the response header alone if nothing was written yet.
// With wait false it gives up when a Write holds the lock (that Write sends
// the header), so Close never blocks behind a stuck Write.
func (c *conn) flushHeader(wait bool) {
	if c.sent.Load() {
		return
	}
	if wait {
		c.mu.Lock()
	} else if !c.mu.TryLock() {
		return
	}
	if !c.sent.Load() {
		c.Conn.Write(responseHeader[:]) // best effort: the tunnel is ending
		c.sent.Store(true)
	}
	c.mu.Unlock()
}

// Close sends the response header if no Write did, then closes the carrier.
// It does not wait for a Write in progress.
func (c *conn) Close() error {
	c.flushHeader(false)
	return c.Conn.Close()
}

// CloseWrite sends the response header if no Write did, then half-closes
// the carrier.
func (c halfConn) CloseWrite() error {
	c.flushHeader(true)
	return c.Conn.(closeWriter).CloseWrite()
}
