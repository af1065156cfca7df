// Package v1io is the net-side plumbing VLESS v1's server and client share:
// a carrier's buffered [Reader] that lives as long as the carrier (so the
// bytes read past one message are the next message's), the keep-alive
// chunk reader [Deframer], and the chunk writer [Framer]. The wire layout is
// package vless's; this package only moves bytes. Nothing here locks: the
// stream types above it own the concurrency rules.
package v1io

import (
	"errors"
	"fmt"
	"io"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
)

// ErrTooLong is returned by [ReadMsg] when a message does not fit the
// reader's buffer (which cannot happen with the sizes in use).
var ErrTooLong = errors.New("vless: message longer than the read buffer")

// Reader is a buffered reader over a carrier. It is not safe for
// concurrent use.
type Reader struct {
	src  io.Reader
	buf  []byte
	r, w int
}

// NewReader returns a Reader over src with a buffer of size bytes.
func NewReader(src io.Reader, size int) *Reader {
	return &Reader{src: src, buf: make([]byte, size)}
}

// Buffered returns the bytes read and not yet consumed; it aliases the
// buffer until the next call that reads.
func (b *Reader) Buffered() []byte { return b.buf[b.r:b.w] }

// Discard consumes n buffered bytes.
func (b *Reader) Discard(n int) {
	b.r += n
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
}

// Fill reads once from the source into the free end of the buffer, moving
// the buffered bytes to the front first when that makes room.
func (b *Reader) Fill() (int, error) {
	if b.r > 0 && b.w == len(b.buf) {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(b.buf) {
		return 0, ErrTooLong
	}
	n, err := b.src.Read(b.buf[b.w:])
	b.w += n
	return n, err
}

// Read returns buffered bytes first, then reads the source directly into p.
// fillAtMost is Fill reading at most max bytes.
func (b *Reader) fillAtMost(max int) (int, error) {
	if b.r > 0 && b.w+max > len(b.buf) {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(b.buf) {
		return 0, ErrTooLong
	}
	n, err := b.src.Read(b.buf[b.w:min(len(b.buf), b.w+max)])
	b.w += n
	if n > 0 {
		return n, nil
	}
	return n, err
}

func (b *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r < b.w {
		n := copy(p, b.buf[b.r:b.w])
		b.Discard(n)
		return n, nil
	}
	return b.src.Read(p)
}

// Skip consumes n bytes, buffered or not. io.EOF before the last one is
// io.ErrUnexpectedEOF.
func (b *Reader) Skip(n int) error {
	for n > 0 {
		if b.r == b.w {
			if _, err := b.Fill(); err != nil && b.r == b.w {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		m := min(n, b.w-b.r)
		b.Discard(m)
		n -= m
	}
	return nil
}

// ReadMsg reads until parse accepts the buffered bytes, consumes what it
// used and returns the value. parse returns protocols.ErrNeedMore for a
// valid prefix. A read error is returned as is, even io.EOF; Buffered tells
// whether any byte of the message had arrived.
func ReadMsg[T any](b *Reader, parse func([]byte) (T, int, error)) (T, error) {
	for {
		if b.r < b.w {
			v, n, err := parse(b.buf[b.r:b.w])
			if err == nil {
				b.Discard(n)
				return v, nil
			}
			if err != protocols.ErrNeedMore {
				var zero T
				return zero, err
			}
		}
		if _, err := b.Fill(); err != nil {
			var zero T
			return zero, err
		}
	}
}

// Deframer reads the payload of one keep-alive stream from a Reader:
// chunk data until the end marker, then io.EOF. It is not safe for
// concurrent use.
type Deframer struct {
	R     *Reader
	left  int  // data bytes left in the current chunk
	ended bool // the end marker was read
}

// Ended reports whether the end marker has been read.
func (d *Deframer) Ended() bool { return d.ended }

// Reset prepares d for the next stream on the same Reader.
func (d *Deframer) Reset() { d.left, d.ended = 0, false }

// Read returns chunk data. The source ending before the end marker gives an
// error wrapping io.ErrUnexpectedEOF.
func (d *Deframer) Read(p []byte) (int, error) {
	if d.ended {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	for d.left == 0 {
		size, err := d.readChunkHeader()
		if err != nil {
			return 0, cut(err)
		}
		if size == 0 {
			d.ended = true
			return 0, io.EOF
		}
		d.left = size
	}
	// Within a chunk the rest is on its way (the peer wrote the chunk
	// whole), so reading on until p or the chunk is full cannot wait for
	// long: a relay gets a chunk in one read, not a record at a time.
	want := min(len(p), d.left)
	n, err := d.R.Read(p[:want])
	for err == nil && n < want {
		var m int
		m, err = d.R.Read(p[n:want])
		if m == 0 && err == nil {
			break
		}
		n += m
	}
	d.left -= n
	if err != nil {
		err = cut(err)
	}
	return n, err
}

// readChunkHeader reads the next chunk's length, taking no more from the
// carrier than the length field: the data is read straight into the
// caller's buffer.
func (d *Deframer) readChunkHeader() (int, error) {
	for {
		size, _, err := vless.ParseChunkHeader(d.R.Buffered())
		if err == nil {
			d.R.Discard(vless.ChunkHeaderLen)
			return size, nil
		}
		if _, err := d.R.fillAtMost(vless.ChunkHeaderLen - len(d.R.Buffered())); err != nil {
			return 0, err
		}
	}
}

func cut(err error) error {
	if err == io.EOF {
		return fmt.Errorf("vless: stream cut before its end marker: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// Framer writes keep-alive chunks, one carrier write per chunk (the
// first one prefixed). It keeps its buffer between writes. It is not safe
// for concurrent use.
type Framer struct {
	W io.Writer
}

// Write sends prefix (which may be empty) and then p, each carrier write
// one chunk of at most bufpool.LargeChunk bytes (the relay's chunk: one
// per Write), built in a pooled buffer, prefix in the first. It returns how
// many bytes of p were written.
func (f *Framer) Write(prefix, p []byte) (int, error) {
	bp := bufpool.Large()
	defer bufpool.Put(bp)
	done := 0
	for len(p) > 0 || len(prefix) > 0 {
		var b []byte
		n := 0
		if room := bufpool.LargeSize - len(prefix) - vless.ChunkHeaderLen; room <= 0 {
			b = prefix // alone: far longer than any header with its padding
		} else {
			n = min(len(p), bufpool.LargeChunk, room)
			b = append((*bp)[:0], prefix...)
			if n > 0 {
				b = vless.AppendChunkHeader(b, n)
				b = append(b, p[:n]...)
			}
		}
		if _, err := f.W.Write(b); err != nil {
			return done, err
		}
		done += n
		p, prefix = p[n:], nil
	}
	return done, nil
}

// End sends prefix and the end marker in one carrier write.
func (f *Framer) End(prefix []byte) error {
	bp := bufpool.Large()
	defer bufpool.Put(bp)
	b := vless.AppendChunkEnd(append((*bp)[:0], prefix...))
	_, err := f.W.Write(b)
	return err
}

// WriteRaw sends prefix and p in one carrier write (p alone when prefix is
// empty) and returns how many bytes of p were written.
func WriteRaw(w io.Writer, prefix, p []byte) (int, error) {
	if len(prefix) == 0 {
		return w.Write(p)
	}
	b := make([]byte, 0, len(prefix)+len(p))
	b = append(append(b, prefix...), p...)
	n, err := w.Write(b)
	return max(n-len(prefix), 0), err
}
