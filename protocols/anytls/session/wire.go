package session

import (
	"io"
)

// wireLookahead is what a header read takes from the connection at most:
// a frame header is 7 bytes, and what comes with it (a small frame's data,
// the next header) is used before the connection is read again.
const wireLookahead = 64

// wireReader reads a session's frames from its connection. It holds no
// buffer of its own beyond a few bytes of lookahead: headers are read into
// those, and data goes straight from the connection into where it is kept
// (a stream's receive chunks), so an idle session pins nothing (a bufio
// reader's 32 KiB per session was most of what an idle AnyTLS tunnel cost).
type wireReader struct {
	src  io.Reader
	la   [wireLookahead]byte
	r, w int // la[r:w] is read, not used
}

// readFull fills p: bytes read ahead first, then reads of the
// connection. A small p (a header) reads ahead; a large one is read into
// directly.
func (w *wireReader) readFull(p []byte) (int, error) {
	n := copy(p, w.la[w.r:w.w])
	w.r += n
	if w.r == w.w {
		w.r, w.w = 0, 0
	}
	for n < len(p) {
		if len(p)-n < wireLookahead/2 {
			// A header or a short frame: read ahead, taking what comes.
			m, err := w.src.Read(w.la[w.w:])
			w.w += m
			k := copy(p[n:], w.la[w.r:w.w])
			w.r += k
			n += k
			if w.r == w.w {
				w.r, w.w = 0, 0
			}
			if err != nil && n < len(p) {
				return n, unexpected(err, n)
			}
			continue
		}
		m, err := w.src.Read(p[n:])
		n += m
		if err != nil && n < len(p) {
			return n, unexpected(err, n)
		}
	}
	return n, nil
}

// discard drops n bytes.
func (w *wireReader) discard(n int) error {
	var scratch [512]byte
	for n > 0 {
		k, err := w.readFull(scratch[:min(n, len(scratch))])
		n -= k
		if err != nil {
			return err
		}
	}
	return nil
}

// unexpected is io.ReadFull's error rule: EOF after some bytes is
// ErrUnexpectedEOF.
func unexpected(err error, n int) error {
	if err == io.EOF && n > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}
