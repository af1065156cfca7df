//go:build unix

package tlsbatch

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/portico-gw/portico/internal/readwait"
)

// nonBlockingRead returns a read of the socket under c (readwait.Socket)
// that takes what the socket holds now and does not wait, or nil when
// there is no such socket.
func nonBlockingRead(c net.Conn) func(p []byte) (int, error) {
	rc := readwait.Socket(c)
	if rc == nil {
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
}
