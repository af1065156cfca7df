package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// UnixPrefix marks a unix socket address: "unix:/run/portico/admin.sock".
const UnixPrefix = "unix:"

// IsUnix reports whether addr names a unix socket ("unix:/path").
func IsUnix(addr string) bool { return strings.HasPrefix(addr, UnixPrefix) }

// Listen opens the admin listener. addr is a loopback TCP address
// ("127.0.0.1:9090", "[::1]:9090", "localhost:9090") or a unix socket
// ("unix:/run/portico/admin.sock"). Any other TCP address is refused: the
// API is for the machine's operator only.
//
// A unix socket is created with mode 0600. A stale socket file left by a
// process that died is removed first; a socket that still answers, or a
// path that is not a socket, is refused. Closing the listener removes the
// socket file. Serve a unix listener's handler with Options.Unix set.
func Listen(addr string) (net.Listener, error) {
	if IsUnix(addr) {
		return listenUnix(strings.TrimPrefix(addr, UnixPrefix))
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %q: not host:port or unix:/path", addr)
	}
	if !isLoopback(host) {
		return nil, fmt.Errorf("admin: listen %s: not a loopback address; the admin API listens on 127.0.0.1:PORT, [::1]:PORT or unix:/path only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ln, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("admin: listen unix: empty path (want unix:/path/to/admin.sock)")
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("admin: listen %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin: listen %s: another process is serving on this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin: removing the stale socket: %w", err)
		}
	}
	ln, err := listenUnixPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ln, nil
}
