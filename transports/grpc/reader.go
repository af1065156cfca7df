package grpc

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/portico-gw/portico/internal/bufpool"
)

// maxChunk is the most data one written message carries: a longer Write
// is sent as several messages. It is a pooled large buffer less the
// message's own framing, so that a relay chunk with a protocol's framing
// around it (VMess's chunk lengths and tags, AnyTLS's frame header: what
// the buffer's room past bufpool.LargeChunk is for) goes as one message,
// not as a full one and another of a few bytes, each a round through
// HTTP/2's goroutines. It stays far under any peer's receive limit (gRPC's
// default is 4 MiB).
const maxChunk = bufpool.LargeSize - maxHunkHeader

var _ [bufpool.LargeSize - maxChunk - maxHunkHeader]struct{} // a message fits a pooled buffer

// A message that fits one of the process's pooled large buffers is read
// into one; a larger one gets a buffer of its own.
const pooledMessage = bufpool.LargeSize

// frameReader yields the data of the gRPC messages read from r. A message
// is read whole (into a pooled buffer that is returned as soon as its data
// has been consumed, so an idle stream holds none), then parsed.
type frameReader struct {
	r     io.Reader
	limit int // the largest message accepted

	hdr  [frameHeaderLen]byte
	buf  *[]byte  // the pooled buffer holding segs, or nil
	segs [][]byte // the data of the current message
	i    int      // segs[i:] is not returned yet
	err  error    // sticky
}

// Read returns data bytes across message boundaries. At the end of the
// stream, between messages, it returns io.EOF; a stream cut inside a
// message is io.ErrUnexpectedEOF.
func (f *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for f.i == len(f.segs) {
		f.release()
		if f.err != nil {
			return 0, f.err
		}
		if err := f.next(); err != nil {
			f.err = err
			f.release()
			return 0, err
		}
	}
	n := copy(p, f.segs[f.i])
	if f.segs[f.i] = f.segs[f.i][n:]; len(f.segs[f.i]) == 0 {
		f.i++
		if f.i == len(f.segs) {
			f.release()
		}
	}
	return n, nil
}

// next reads one message and parses its data into segs.
func (f *frameReader) next() error {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w (in a message header): %w", errTruncated, err)
		}
		return err // io.EOF: the clean end
	}
	l, err := parseFrameHeader(f.hdr[:], f.limit)
	if err != nil {
		return err
	}
	var msg []byte
	if l <= pooledMessage {
		f.buf = bufpool.Large()
		msg = (*f.buf)[:l]
		_, err = io.ReadFull(f.r, msg)
	} else {
		msg, err = readLarge(f.r, l)
	}
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w (in a %d-byte message, %d bytes read): %w", errTruncated, l, len(msg), io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("grpc: reading a %d-byte message: %w", l, err)
	}
	f.segs, err = appendHunkData(f.segs[:0], msg)
	return err
}

// largeMessageStep is the first buffer of a message longer than a pooled
// buffer. The buffer then doubles as the message's bytes arrive, never
// past its length: what a message costs follows what the peer has sent,
// not what its header claims. Allocating the claimed length at once let
// 5 bytes claiming the limit (4 MiB) take 4 MiB, on each of an HTTP/2
// connection's streams (1,000 on the gateway's site server): 4 GiB for
// a few kilobytes sent.
const largeMessageStep = 64 << 10

// readLarge reads a message of l bytes from r, growing its buffer as the
// bytes come. It returns what it read, with io.EOF when r ended before any
// byte of the message, io.ErrUnexpectedEOF when it ended after some.
func readLarge(r io.Reader, l int) ([]byte, error) {
	msg := make([]byte, 0, min(l, largeMessageStep))
	for len(msg) < l {
		if len(msg) == cap(msg) {
			msg = slices.Grow(msg, min(l-len(msg), len(msg)))
		}
		n, err := io.ReadFull(r, msg[len(msg):min(l, cap(msg))])
		msg = msg[:len(msg)+n]
		if err != nil {
			if err == io.EOF && len(msg) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return msg, err
		}
	}
	return msg, nil
}

func (f *frameReader) release() {
	if f.buf != nil {
		bufpool.Put(f.buf)
		f.buf = nil
	}
	clear(f.segs) // drop references to the buffer
	f.segs, f.i = f.segs[:0], 0
}

// protocolError reports whether err is the peer breaking the framing, and
// the gRPC status code that says so.
func protocolError(err error) (code int, ok bool) {
	switch {
	case errors.Is(err, errTooLarge):
		return codeResourceExhausted, true
	case errors.Is(err, errCompressed):
		return codeUnimplemented, true
	case errors.Is(err, errBadFlag), errors.Is(err, errMalformedHunk), errors.Is(err, errUnsupportedTag), errors.Is(err, errTruncated):
		return codeInternal, true
	}
	return 0, false
}

// gRPC status codes (google.golang.org/grpc/codes) used here.
const (
	codeOK                = 0
	codeUnknown           = 2
	codeResourceExhausted = 8
	codeUnimplemented     = 12
	codeInternal          = 13
)
