// Package nettest has the small loopback servers the tests of several
// packages need, so that each test does not grow its own.
package nettest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Echo starts a TCP echo server on 127.0.0.1 and returns its address. Each
// connection is echoed until the client half-closes; the server then
// half-closes too (so the client reads EOF after the last echoed byte) and
// waits for the client to close. Cleanup closes everything and waits for
// every goroutine, so leak checks stay clean.
func Echo(t testing.TB) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}
