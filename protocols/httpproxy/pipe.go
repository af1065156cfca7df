package httpproxy

import (
	"fmt"
	"net"
	"time"
)

// halfConn is one end of an in-memory connection that, unlike [net.Pipe],
// can be half-closed: it reads from one synchronous pipe and writes to
// another, so CloseWrite ends only the direction it writes. The forwarding
// path needs this: a response delimited by the end of the connection only
// ends when the router can tell the proxy "no more bytes" while still
// accepting the request bytes, or the other way round.
type halfConn struct {
	r net.Conn // read-only end of the pipe from the peer
	w net.Conn // write-only end of the pipe to the peer
}

// halfPipe returns the two ends of an in-memory, half-closable connection.
func halfPipe() (*halfConn, *halfConn) {
	aToB1, aToB2 := net.Pipe()
	bToA1, bToA2 := net.Pipe()
	return &halfConn{r: bToA1, w: aToB1}, &halfConn{r: aToB2, w: bToA2}
}

func (c *halfConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *halfConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite makes the peer's reads return io.EOF; reads go on.
func (c *halfConn) CloseWrite() error { return c.w.Close() }

// CloseRead makes the peer's writes fail; writes go on.
func (c *halfConn) CloseRead() error { return c.r.Close() }

func (c *halfConn) Close() error {
	rerr := c.r.Close()
	werr := c.w.Close()
	if rerr != nil {
		return fmt.Errorf("httpproxy: close pipe: %w", rerr)
	}
	if werr != nil {
		return fmt.Errorf("httpproxy: close pipe: %w", werr)
	}
	return nil
}

func (c *halfConn) LocalAddr() net.Addr  { return c.r.LocalAddr() }
func (c *halfConn) RemoteAddr() net.Addr { return c.r.RemoteAddr() }

func (c *halfConn) SetDeadline(t time.Time) error {
	_ = c.r.SetReadDeadline(t)
	return c.w.SetWriteDeadline(t)
}
func (c *halfConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *halfConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }
