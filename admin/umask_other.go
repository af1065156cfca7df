//go:build !unix

package admin

import "net"

// listenUnixPrivate creates the socket; Listen then sets its mode.
func listenUnixPrivate(path string) (net.Listener, error) {
	return net.Listen("unix", path)
}
