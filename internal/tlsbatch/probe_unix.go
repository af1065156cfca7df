//go:build unix

package tlsbatch

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// nonBlockingRead returns a read of the socket under c (c itself, or what
// it wraps, through NetConn methods) that takes what the socket holds now
// and does not wait, or nil when there is no such socket.
func nonBlockingRead(c net.Conn) func(p []byte) (int, error) {
	for range 8 {
		switch s := c.(type) {
		case *net.TCPConn, *net.UnixConn:
			rc, err := s.(syscall.Conn).SyscallConn()
			if err != nil {
				return nil
			}
			return func(p []byte) (int, error) {
				var n int
				var rerr error
				if err := rc.Read(func(fd uintptr) bool {
					n, rerr = syscall.Read(int(fd), p)
					return true // one attempt: never wait for readability
				}); err != nil {
					return 0, err // closed
				}
				switch {
				case errors.Is(rerr, syscall.EAGAIN):
					return 0, errWouldBlock
				case rerr != nil:
					return 0, &net.OpError{Op: "read", Net: "tcp", Err: rerr}
				case n == 0 && len(p) > 0:
					return 0, io.EOF
				}
				return n, nil
			}
		case interface{ NetConn() net.Conn }:
			c = s.NetConn()
		default:
			return nil
		}
	}
	return nil
}
