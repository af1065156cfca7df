package readwait

import (
	"syscall"
	"unsafe"
)

const pollSupported = true

// pollFd is struct pollfd of poll(2).
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const (
	pollIn    = 0x1
	pollRdHup = 0x2000
)

// readable reports whether the socket fd has bytes, the end of the stream
// or an error to read, asking ppoll(2) without waiting. It does not read:
// a pending error (a reset) stays for the Read to return, where a peeking
// recv would consume it. When readable reports false, syscall.RawConn.Read
// parks the goroutine in the runtime's poller until the socket is readable
// and asks again.
func readable(fd uintptr) bool {
	p := pollFd{fd: int32(fd), events: pollIn | pollRdHup}
	var zero syscall.Timespec
	for {
		n, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return true // let the Read find out what is wrong
		}
		return n > 0 && p.revents != 0
	}
}
