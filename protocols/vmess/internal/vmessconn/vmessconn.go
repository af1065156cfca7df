// Package vmessconn is the body plumbing the VMess server and client share:
// a Reader that decodes chunks read from a carrier and a Writer that encodes
// chunks onto it, with the buffers they reuse so that a chunk costs no
// allocation.
package vmessconn

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess"
)

// Reader decodes one body direction from Src. Read is safe for concurrent
// use (calls are serialised).
//
// It holds a buffer only while it holds bytes: one of the process's pooled
// large buffers (room for four of V2Ray's chunks), or one of its own for a
// longer chunk, given back as soon as every byte in it has been returned.
// An idle tunnel's reader waits for its next chunk in a few bytes of its
// own instead, then takes a buffer for the rest.
type Reader struct {
	mu         sync.Mutex
	src        io.Reader
	what       string // "request body", "response body"
	opener     *vmess.Opener
	bp         *[]byte // the pooled buffer buf is, or nil
	buf        []byte  // nil while nothing is buffered
	start, end int     // buf[start:end] is read, not consumed
	pending    []byte  // decoded payload not yet returned (in buf)
	err        error   // sticky
	wait       [waitLen]byte
}

// waitLen is what an empty Reader reads into while it waits: enough for
// any chunk's length field, so the wait ends with the chunk's size known.
const waitLen = 32

// NewReader returns a Reader of src. bp, when not nil, is a pooled buffer
// (bufpool.Large) that already holds (*bp)[start:end], bytes read with the
// header; the Reader owns it from now on. what names the direction in
// errors. The opener may be set later with SetOpener (the client reads the
// response header through the Reader first).
func NewReader(src io.Reader, what string, bp *[]byte, start, end int, o *vmess.Opener) *Reader {
	r := &Reader{src: src, what: what, opener: o}
	if bp != nil {
		r.bp, r.buf, r.start, r.end = bp, *bp, start, end
		r.releaseIfDrained()
	}
	return r
}

// SetOpener sets the body decoder; mu must be held by the caller (see Lock).
func (r *Reader) SetOpener(o *vmess.Opener) { r.opener = o }

// Lock and Unlock let a caller read a header through Buffered, Consume and
// Fill before the body starts.
func (r *Reader) Lock()   { r.mu.Lock() }
func (r *Reader) Unlock() { r.mu.Unlock() }

// Buffered is what has been read and not consumed. mu is held.
func (r *Reader) Buffered() []byte { return r.buf[r.start:r.end] }

// Consume drops the first n buffered bytes. mu is held.
func (r *Reader) Consume(n int) {
	r.start += n
	r.releaseIfDrained()
}

// releaseIfDrained gives the buffer back once every byte in it has been
// used: a waiting reader holds none.
func (r *Reader) releaseIfDrained() {
	if r.start < r.end || len(r.pending) > 0 || r.buf == nil {
		return
	}
	bufpool.Put(r.bp) // nil for a buffer of its own, which is dropped
	r.bp, r.buf, r.start, r.end = nil, nil, 0, 0
}

// Fill reads once more from the source, making room for need buffered
// bytes first. mu is held. It returns the read's error, with the bytes of
// that read already buffered.
func (r *Reader) Fill(need int) error {
	if r.buf == nil {
		// Nothing buffered: wait for the next bytes without a buffer.
		n, err := r.src.Read(r.wait[:])
		if n == 0 {
			return err
		}
		r.grow(max(need, n))
		r.end = copy(r.buf, r.wait[:n])
		return nil // use the bytes first; a conn reports its error again
	}
	if r.start == r.end {
		r.start, r.end = 0, 0
	}
	if len(r.buf)-r.start < need || r.end == len(r.buf) {
		if need > len(r.buf) {
			r.grow(need)
		} else {
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		}
	}
	if r.end == len(r.buf) { // cannot happen: Fill is called with less than need buffered
		return fmt.Errorf("vmess: %s: buffer of %d bytes is full", r.what, len(r.buf))
	}
	n, err := r.src.Read(r.buf[r.end:])
	r.end += n
	if n > 0 {
		return nil // use the bytes first; a conn reports its error again
	}
	return err
}

// grow gives the Reader a buffer of at least need bytes holding what it
// buffered: a pooled one when that is enough, else one of its own.
func (r *Reader) grow(need int) {
	var bp *[]byte
	var nb []byte
	if need <= bufpool.LargeSize {
		bp = bufpool.Large()
		nb = *bp
	} else {
		nb = make([]byte, need+bufpool.LargeSize/2)
	}
	r.end = copy(nb, r.buf[r.start:r.end])
	r.start = 0
	bufpool.Put(r.bp)
	r.bp, r.buf = bp, nb
}

// Read returns decoded payload: as much as the chunks already read hold,
// up to len(p); it waits for more only when it has nothing to return. The
// end-of-stream chunk gives io.EOF, and so does the carrier ending between
// two chunks (as in V2Ray; the carrier, TLS, tells a clean close from a
// cut one) or ending an unframed stream; a carrier that ends inside a
// chunk gives an error wrapping io.ErrUnexpectedEOF; a chunk that fails
// authentication gives an error wrapping vmess.ErrChunk. Those are sticky
// (and come after the payload before them); a timeout is not.
func (r *Reader) Read(p []byte) (int, error) { return r.read(p, false) }

// ReadChunk is Read for a packet body (VMess UDP): it returns the payload
// of one chunk, one datagram, cut to len(p) with the rest dropped. p must
// not be empty.
func (r *Reader) ReadChunk(p []byte) (int, error) { return r.read(p, true) }

func (r *Reader) read(p []byte, whole bool) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	done := 0
	for {
		if len(r.pending) > 0 {
			n := copy(p[done:], r.pending)
			r.pending = r.pending[n:]
			done += n
			if whole {
				r.pending = nil
			}
			r.releaseIfDrained()
			if whole || done == len(p) {
				return done, nil
			}
		}
		if r.err != nil {
			if done > 0 {
				return done, nil
			}
			return 0, r.err
		}
		payload, n, err := r.opener.Open(r.buf[r.start:r.end])
		switch {
		case err == nil:
			r.start += n
			r.pending = payload
			continue
		case err == io.EOF:
			r.start += n
			r.err = io.EOF
			r.releaseIfDrained()
			continue
		case err != protocols.ErrNeedMore:
			r.err = fmt.Errorf("vmess: %s: %w", r.what, err)
			continue
		}
		if done > 0 && (r.start == r.end || len(p)-done < r.opener.Need()) {
			// What the chunks at hand held: at a chunk's boundary the next
			// may be a while. A chunk the carrier cut is read on (its rest
			// is on its way: a chunk is written whole), so that a relay
			// gets a carrier write's worth in one read.
			return done, nil
		}
		rerr := r.Fill(r.opener.Need())
		if rerr == nil {
			continue
		}
		var ne net.Error
		switch {
		case errors.As(rerr, &ne) && ne.Timeout():
			return 0, rerr // not sticky: a later Read, with a new deadline, goes on
		case rerr == io.EOF && (!r.opener.Framed() || r.start == r.end):
			// The end of an unframed stream; or a framed one cut between
			// chunks, which V2Ray also reads as the end (its server sends
			// no end chunk when the target closes without a byte).
			r.err = io.EOF
		case rerr == io.EOF:
			r.err = fmt.Errorf("vmess: %s: the peer closed the connection in the middle of a chunk (%d bytes of it): %w", r.what, r.end-r.start, io.ErrUnexpectedEOF)
		default:
			r.err = rerr
		}
		r.releaseIfDrained()
	}
}

// Writer encodes one body direction onto Dst. Write and CloseWrite are
// safe for concurrent use (calls are serialised).
type Writer struct {
	mu     sync.Mutex
	dst    io.Writer
	what   string
	sealer *vmess.Sealer
	prefix []byte // sent before the first chunk, in the same carrier write: the header
	ended  bool
	err    error // sticky: the stream is broken after a failed write
}

// NewWriter returns a Writer onto dst that sends prefix (a header, or
// nil) with its first write.
func NewWriter(dst io.Writer, what string, s *vmess.Sealer, prefix []byte) *Writer {
	return &Writer{dst: dst, what: what, sealer: s, prefix: prefix}
}

// Write seals p and writes it, prefixed on the first call by the header,
// in as few carrier writes as fit in one of the process's pooled large
// buffers each (a buffer taken for the call: an idle writer holds none). An
// empty p sends the header alone if it has not gone yet.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(p)
}

// writeLocked is Write with mu held.
func (w *Writer) writeLocked(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.ended {
		return 0, fmt.Errorf("vmess: %s: write after CloseWrite: %w", w.what, net.ErrClosed)
	}
	bp := bufpool.Large()
	defer bufpool.Put(bp)
	done := 0
	for {
		n := w.fit(len(p) - done)
		if n == 0 && w.prefix == nil {
			return done, nil
		}
		b := append((*bp)[:0], w.prefix...)
		b = w.sealer.Seal(b, p[done:done+n])
		w.prefix = nil
		if _, err := w.dst.Write(b); err != nil {
			w.err = fmt.Errorf("vmess: %s: %w", w.what, err)
			return done, w.err
		}
		done += n
		if done == len(p) {
			return done, nil
		}
	}
}

// fit is the most of m payload bytes that, sealed after the prefix still
// to go, fit in a pooled large buffer.
func (w *Writer) fit(m int) int {
	room := bufpool.LargeSize - len(w.prefix)
	n := min(m, room)
	for n > 0 && w.sealer.SealedLen(n) > room {
		n -= max(1, w.sealer.SealedLen(n)-room)
	}
	return n
}

// SendPrefix writes the header alone if no Write has. It does nothing
// once the header has gone, after End too: a reader may ask for it late,
// when the writing side has finished and half-closed.
func (w *Writer) SendPrefix() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.prefix == nil {
		return nil
	}
	_, err := w.writeLocked(nil)
	return err
}

// PrefixSent reports whether the header has gone.
func (w *Writer) PrefixSent() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.prefix == nil
}

// End writes the end of the stream: the header if it has not gone, and
// the end-of-stream chunk (nothing for an unframed stream, whose end is the
// carrier's). It reports whether the stream is framed. Later calls do
// nothing.
func (w *Writer) End() (framed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	framed = w.sealer.Framed()
	if w.ended || w.err != nil {
		return framed, w.err
	}
	w.ended = true
	bp := bufpool.Large()
	defer bufpool.Put(bp)
	b := append((*bp)[:0], w.prefix...)
	b = w.sealer.SealEnd(b)
	w.prefix = nil
	if len(b) == 0 {
		return framed, nil
	}
	if _, err := w.dst.Write(b); err != nil {
		w.err = fmt.Errorf("vmess: %s: end of stream: %w", w.what, err)
		return framed, w.err
	}
	return framed, nil
}

// CloseWriter is a carrier that can half-close.
type CloseWriter interface{ CloseWrite() error }

// CloseWrite ends w's stream and, when it is unframed (zero: the carrier's
// end is the stream's end), half-closes carrier, or reports
// errors.ErrUnsupported when the carrier cannot.
func CloseWrite(w *Writer, carrier net.Conn) error {
	framed, err := w.End()
	if err != nil || framed {
		return err
	}
	if cw, ok := carrier.(CloseWriter); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("vmess: security zero ends its stream only by half-closing the carrier, which this one cannot: %w", errors.ErrUnsupported)
}
