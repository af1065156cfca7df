//go:build unix

package admin

import (
	"net"
	"sync"
	"syscall"
)

var umaskMu sync.Mutex

// listenUnixPrivate creates the socket under umask 0177, so it is never
// reachable by others, not even between its creation and the chmod. The
// umask is process-wide: for that instant, files other goroutines create
// get stricter modes, never looser ones.
func listenUnixPrivate(path string) (net.Listener, error) {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}
