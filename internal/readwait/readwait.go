// Package readwait lets a relay wait until a connection has something to
// read without lending it a buffer for the wait. An idle tunnel spends its
// life waiting, and a gateway may hold thousands of them: a buffer pinned
// per waiting direction is most of what an idle tunnel costs.
package readwait

import (
	"net"
	"syscall"
)

// Waiter is a connection that knows how to wait for its own readability:
// a wrapper passes the question on to the conn it wraps, answering at once
// when it holds bytes of its own.
type Waiter interface {
	// ReadWaiter returns a function that blocks until a Read would return
	// without blocking (bytes, the end of the stream or an error are
	// waiting), or nil when the connection cannot tell. The function may
	// return early; an error it returns is the next Read's to report too.
	ReadWaiter() func() error
}

// For returns a function that blocks until a Read of c would not block, or
// nil when c cannot be waited on without reading it. Only one goroutine may
// read c and wait on it at a time.
func For(c net.Conn) func() error {
	switch c := c.(type) {
	case Waiter:
		return c.ReadWaiter()
	case *net.TCPConn:
		return socketWaiter(c)
	case *net.UnixConn:
		return socketWaiter(c)
	}
	return nil
}

func socketWaiter(c syscall.Conn) func() error {
	rc, err := c.SyscallConn()
	if err != nil || !pollSupported {
		return nil
	}
	return func() error { return rc.Read(readable) }
}

// SocketReadable reports, without waiting, whether the socket under c has
// something for a read (bytes, the end of the stream or an error): c
// itself, or what c is layered on, through NetConn methods (a TLS conn). ok
// is false when there is no socket to ask. It knows nothing of bytes a
// layer above the socket holds (crypto/tls may hold a record it read).
func SocketReadable(c net.Conn) (ready, ok bool) {
	rc := Socket(c)
	if rc == nil || !pollSupported {
		return false, false
	}
	var r bool
	if err := rc.Control(func(fd uintptr) { r = readable(fd) }); err != nil {
		return true, true // closed: a read says so at once
	}
	return r, true
}

// Socket returns the raw socket under c: c itself when it is a TCP or Unix
// socket, or what c is layered on, through NetConn methods (a TLS conn, a
// connection-limit wrapper); nil when there is none.
func Socket(c net.Conn) syscall.RawConn {
	for range 8 {
		switch s := c.(type) {
		case *net.TCPConn, *net.UnixConn:
			rc, err := s.(syscall.Conn).SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case interface{ NetConn() net.Conn }:
			c = s.NetConn()
		default:
			return nil
		}
	}
	return nil
}
