package grpc

import (
	"net"
	"os"
	"sync"
	"time"
)

// deadline is one direction's deadline. Its channel is closed while the
// deadline is past. When it passes while an operation is in progress,
// abort runs, to interrupt a call that nothing else can: a blocked HTTP/2
// body read or write. An operation that starts after the deadline fails at
// once, is not counted, and so never causes an abort: a deadline that
// passes while nobody waits costs nothing.
type deadline struct {
	abort func() // may be nil; must be safe to call more than once

	mu     sync.Mutex
	gen    uint64 // counts set calls, so that a stale timer does nothing
	timer  *time.Timer
	ch     chan struct{}
	active int // operations in progress
}

func newDeadline(abort func()) *deadline {
	return &deadline{ch: make(chan struct{}), abort: abort}
}

// set arms the deadline for t; zero disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop() // a callback already running finds gen changed
		d.timer = nil
	}
	if t.IsZero() || time.Now().Before(t) {
		if isClosed(d.ch) {
			d.ch = make(chan struct{})
		}
		if !t.IsZero() {
			gen := d.gen
			d.timer = time.AfterFunc(time.Until(t), func() { d.expire(gen) })
		}
		d.mu.Unlock()
		return
	}
	d.expireLocked()
}

// expire is the timer's callback for the deadline set by call gen.
func (d *deadline) expire(gen uint64) {
	d.mu.Lock()
	if d.gen != gen {
		d.mu.Unlock()
		return
	}
	d.timer = nil
	d.expireLocked()
}

// expireLocked closes the channel and aborts the operations in progress;
// it unlocks mu before calling abort, which may take other locks.
func (d *deadline) expireLocked() {
	abort := false
	if !isClosed(d.ch) {
		close(d.ch)
		abort = d.active > 0
	}
	d.mu.Unlock()
	if abort && d.abort != nil {
		d.abort()
	}
}

// done returns a channel closed while the deadline is past.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func (d *deadline) expired() bool { return isClosed(d.done()) }

// begin starts an operation, unless the deadline has passed: then it
// reports true, and the operation must fail without calling end.
func (d *deadline) begin() (expired bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if isClosed(d.ch) {
		return true
	}
	d.active++
	return false
}

// end ends an operation begun with begin.
func (d *deadline) end() {
	d.mu.Lock()
	d.active--
	d.mu.Unlock()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// opError is the net.Conn-style error of op.
func opError(op string, local, remote net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "grpc", Source: local, Addr: remote, Err: err}
}

// timeoutError is what a call past its deadline returns.
func timeoutError(op string, local, remote net.Addr) error {
	return opError(op, local, remote, os.ErrDeadlineExceeded)
}
