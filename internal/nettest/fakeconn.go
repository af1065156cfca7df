package nettest

import (
	"io"
	"net"
	"sync"
	"time"
)

// FakeConn is a scripted net.Conn: Read returns Segments one by one, then
// ReadErr (io.EOF when nil); every Write call is recorded. It has no
// CloseWrite; Half adds one. If BlockWrites is set, Write waits until it is
// closed or the conn is.
type FakeConn struct {
	mu          sync.Mutex
	Segments    [][]byte
	ReadErr     error
	BlockWrites chan struct{}
	writes      [][]byte
	closed      bool
	closedWrite bool
	closing     chan struct{}
}

// NewFake returns a FakeConn that reads segs, then EOF.
func NewFake(segs ...[]byte) *FakeConn {
	return &FakeConn{Segments: segs, closing: make(chan struct{})}
}

func (f *FakeConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	for len(f.Segments) > 0 && len(f.Segments[0]) == 0 {
		f.Segments = f.Segments[1:]
	}
	if len(f.Segments) == 0 {
		if f.ReadErr != nil {
			return 0, f.ReadErr
		}
		return 0, io.EOF
	}
	n := copy(p, f.Segments[0])
	f.Segments[0] = f.Segments[0][n:]
	return n, nil
}

func (f *FakeConn) Write(p []byte) (int, error) {
	if f.BlockWrites != nil {
		select {
		case <-f.BlockWrites:
		case <-f.closing:
			return 0, net.ErrClosed
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.closedWrite {
		return 0, net.ErrClosed
	}
	f.writes = append(f.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (f *FakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return net.ErrClosed
	}
	f.closed = true
	close(f.closing)
	return nil
}

// Writes returns a copy of every Write call's bytes, in order.
func (f *FakeConn) Writes() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.writes...)
}

// Closed reports whether Close was called.
func (f *FakeConn) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// ClosedWrite reports whether CloseWrite was called (through Half).
func (f *FakeConn) ClosedWrite() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closedWrite
}

func (f *FakeConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}
}

func (f *FakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
}

func (f *FakeConn) SetDeadline(t time.Time) error      { return nil }
func (f *FakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (f *FakeConn) SetWriteDeadline(t time.Time) error { return nil }

// Half returns f with a CloseWrite method.
func (f *FakeConn) Half() net.Conn { return fakeHalf{f} }

type fakeHalf struct{ *FakeConn }

func (h fakeHalf) CloseWrite() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closedWrite = true
	return nil
}
