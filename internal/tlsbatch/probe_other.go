//go:build !unix

package tlsbatch

import "net"

// nonBlockingRead: no socket reads without waiting here, so Read returns
// what crypto/tls returns.
func nonBlockingRead(net.Conn) func(p []byte) (int, error) { return nil }
