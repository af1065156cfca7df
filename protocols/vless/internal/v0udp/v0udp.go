// Package v0udp reads and writes the length-framed datagrams of a VLESS
// version 0 UDP tunnel (vless.AppendPacket's layout) on a stream; the VLESS
// server and client share it.
package v0udp

import (
	"fmt"
	"io"
	"sync"

	"github.com/portico-gw/portico/protocols/vless"
)

// Reader reads frames from R, one per Read call. It is not safe for
// concurrent use.
type Reader struct {
	R   io.Reader
	hdr [vless.PacketHeaderLen]byte
}

// ReadPacket reads one frame and copies its payload into b; a longer
// payload is cut to len(b) and the rest read and dropped, as a UDP socket
// would. The stream ending between frames gives io.EOF; inside one, an
// error wrapping io.ErrUnexpectedEOF.
func (r *Reader) ReadPacket(b []byte) (int, error) {
	if _, err := io.ReadFull(r.R, r.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, fmt.Errorf("vless: UDP frame length cut short: %w", err)
		}
		return 0, err
	}
	n, _ := vless.PacketLen(r.hdr[:])
	m := min(n, len(b))
	if _, err := io.ReadFull(r.R, b[:m]); err != nil {
		return 0, fmt.Errorf("vless: UDP frame of %d bytes cut short: %w", n, eofIsUnexpected(err))
	}
	if n > m {
		if _, err := io.CopyN(io.Discard, r.R, int64(n-m)); err != nil {
			return 0, fmt.Errorf("vless: UDP frame of %d bytes cut short: %w", n, eofIsUnexpected(err))
		}
	}
	return m, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Writer writes one frame per WritePacket onto W, prefixed on the first by
// Prefix (a request header, or nil), in one W.Write each. It is safe for
// concurrent use.
type Writer struct {
	W      io.Writer
	Prefix []byte

	mu  sync.Mutex
	buf []byte
}

// WritePacket frames b and writes it.
func (w *Writer) WritePacket(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	out, err := vless.AppendPacket(append(w.buf[:0], w.Prefix...), b)
	if err != nil {
		return err
	}
	w.buf, w.Prefix = out, nil
	if _, err := w.W.Write(out); err != nil {
		return fmt.Errorf("vless: UDP: %w", err)
	}
	return nil
}
