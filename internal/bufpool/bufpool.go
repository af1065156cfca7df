// Package bufpool is the process's one pool of byte buffers, in two sizes:
// small ones for what waits or carries a datagram, large ones for bulk
// copies and whole messages. Buffers are handed out as *[]byte so that Get
// and Put allocate nothing; a buffer goes back to the pool of its size
// only, whoever returns it.
package bufpool

import "sync"

const (
	// SmallSize is a small buffer: a datagram, or a direction's wait.
	SmallSize = 2 << 10
	// LargeSize is a large buffer: room for a bulk copy of 32 KiB (the
	// relay's chunk: exactly two full TLS records; a few bytes more would
	// make every such write three records, the last one tiny) with a
	// protocol's framing around it.
	LargeSize = LargeChunk + 1<<10
	// LargeChunk is the payload a large buffer carries with room to
	// spare for framing.
	LargeChunk = 32 << 10
)

var (
	small = sync.Pool{New: func() any { b := make([]byte, SmallSize); return &b }}
	large = sync.Pool{New: func() any { b := make([]byte, LargeSize); return &b }}
)

// Small returns a buffer of SmallSize bytes.
func Small() *[]byte { return small.Get().(*[]byte) }

// Large returns a buffer of LargeSize bytes.
func Large() *[]byte { return large.Get().(*[]byte) }

// Put returns b to the pool of its size. A buffer of another capacity (or
// nil) is dropped.
func Put(b *[]byte) {
	if b == nil {
		return
	}
	*b = (*b)[:cap(*b)]
	switch cap(*b) {
	case SmallSize:
		small.Put(b)
	case LargeSize:
		large.Put(b)
	}
}
