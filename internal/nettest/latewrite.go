package nettest

import (
	"errors"
	"net"
	"sync"
	"time"
)

// ErrWriteAfterCloseWrite is what a LateWriteConn's writes get after
// CloseWrite, as crypto/tls's do ("tls: protocol is shutdown").
var ErrWriteAfterCloseWrite = errors.New("nettest: write after CloseWrite")

// LateWriteConn wraps a conn that can half-close to stage one race: a
// writer's first Write is held until Release, and an empty Write (a
// "send the header if nobody has" that finds it sent) waits until
// CloseWrite, then fails as a TLS conn does after CloseWrite. A caller that
// writes nothing once the header has gone never sees either.
type LateWriteConn struct {
	net.Conn // has CloseWrite
	gate     chan struct{}
	closedW  chan struct{}
	first    sync.Once
	once     sync.Once
}

// NewLateWriteConn wraps c, which must have a CloseWrite method.
func NewLateWriteConn(c net.Conn) *LateWriteConn {
	return &LateWriteConn{Conn: c, gate: make(chan struct{}), closedW: make(chan struct{})}
}

// Release lets the first Write through.
func (c *LateWriteConn) Release() { close(c.gate) }

func (c *LateWriteConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		select {
		case <-c.closedW:
		case <-time.After(2 * time.Second):
		}
	}
	c.first.Do(func() { <-c.gate })
	select {
	case <-c.closedW:
		return 0, ErrWriteAfterCloseWrite
	default:
	}
	return c.Conn.Write(p)
}

// CloseWrite half-closes the wrapped conn; every later Write fails.
func (c *LateWriteConn) CloseWrite() error {
	c.once.Do(func() { close(c.closedW) })
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}
