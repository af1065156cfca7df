// Package nettest has the small loopback servers the tests of several
// packages need, so that each test does not grow its own.
package nettest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve accepts connections on ln and runs handle on each in its own
// goroutine, closing the connection when handle returns. Cleanup closes the
// listener and every open connection and waits for every goroutine, so
// leak checks stay clean. Track registers another connection (one a
// handler dials, say) to be closed at cleanup; call its untrack when done.
func Serve(t testing.TB, ln net.Listener, handle func(c net.Conn, track func(net.Conn) (untrack func()))) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	track := func(c net.Conn) func() {
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		return func() {
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}
	}
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
			untrack := track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { untrack(); c.Close() }()
				handle(c, track)
			}()
		}
	}()
}

// Listen listens on a free 127.0.0.1 TCP port.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Echo starts a TCP echo server on 127.0.0.1 and returns its address. Each
// connection is echoed until the client half-closes; the server then
// half-closes too (so the client reads EOF after the last echoed byte) and
// waits for the client to close. Cleanup closes everything and waits for
// every goroutine, so leak checks stay clean.
func Echo(t testing.TB) *net.TCPAddr {
	t.Helper()
	ln := Listen(t)
	Serve(t, ln, func(c net.Conn, _ func(net.Conn) func()) {
		io.Copy(c, c)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			io.Copy(io.Discard, c)
		}
	})
	return ln.Addr().(*net.TCPAddr)
}
