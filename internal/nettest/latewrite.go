package nettest

import (
	"errors"
	"io"
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

// WriteCloseWhileReading stages the race on conn, a tunnel over carrier:
// one goroutine Writes payload and half-closes conn (its first carrier
// write held), a Read to EOF starts while it is held, then the carrier is
// released. It returns the write's (or half-close's) error, what the read
// got and its error.
func WriteCloseWhileReading(conn net.Conn, carrier *LateWriteConn, payload []byte) (writeErr error, got []byte, readErr error) {
	wrote := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		wrote <- err
	}()
	time.Sleep(50 * time.Millisecond) // the Write holds the header, held at the carrier
	read := make(chan error, 1)
	go func() {
		var err error
		got, err = io.ReadAll(conn)
		read <- err
	}()
	time.Sleep(50 * time.Millisecond) // the Read waits for the header to go
	carrier.Release()
	writeErr = <-wrote
	readErr = <-read
	return writeErr, got, readErr
}
