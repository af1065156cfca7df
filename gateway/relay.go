package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/internal/readwait"
)

// relayBufSize is the bulk copy chunk: 32 KiB holds two full TLS records,
// so a bulk copy costs one read and one write per pair of records.
// smallBufSize is what a direction that cannot wait without a buffer holds
// while it waits: an idle tunnel should not pin 64 KiB of buffers (there
// may be thousands of them). Both come from the process's one pool.
const (
	relayBufSize = bufpool.LargeChunk
	smallBufSize = bufpool.SmallSize
)

// getBuf returns a large pooled buffer cut to relayBufSize.
func getBuf() *[]byte {
	b := bufpool.Large()
	*b = (*b)[:relayBufSize]
	return b
}
func putBuf(b *[]byte)      { bufpool.Put(b) }
func getSmallBuf() *[]byte  { return bufpool.Small() }
func putSmallBuf(b *[]byte) { bufpool.Put(b) }

// Counter receives byte counts as they are copied. It must be safe for
// concurrent use and cheap: it is called once per chunk.
type Counter interface {
	Add(up, down int64)
}

// RelayOptions tunes one relay. The zero value means no idle timeout and no
// counting.
type RelayOptions struct {
	// Idle closes both sides when no byte has moved in either direction for
	// this long. Zero disables it.
	Idle time.Duration
	// Counter, when set, receives every chunk's size: up is client -> target.
	Counter Counter
	// HalfCloseGrace is how long the other direction may go on after one
	// direction ended on a conn that cannot half-close. Zero means 2 s.
	HalfCloseGrace time.Duration
}

// RelayResult is what a finished relay moved.
type RelayResult struct {
	Up, Down int64 // bytes client -> target and target -> client
	Err      error // the first error that was not a normal end of stream
	IdledOut bool  // the idle timeout ended the relay
}

// Relay copies client -> target and target -> client until both directions
// end, carrying a half-close across (when one side stops sending, the other
// side's write half is closed) and closing both conns at the end. A conn
// that cannot half-close (a WebSocket before its peer's close, a gRPC
// server stream) leaves the other direction HalfCloseGrace to finish, as
// V2Ray's uplink-only and downlink-only timeouts do. It returns when both
// directions are done or ctx is cancelled.
func Relay(ctx context.Context, client, target net.Conn, opts RelayOptions) RelayResult {
	r := relay{client: client, target: target, counter: opts.Counter, grace: opts.HalfCloseGrace}
	if r.grace == 0 {
		r.grace = 2 * time.Second
	}
	if opts.Idle > 0 {
		r.idle = opts.Idle
		r.touch()
		r.timer = time.AfterFunc(opts.Idle, r.checkIdle)
	}
	stop := context.AfterFunc(ctx, r.closeBoth)

	done := make(chan struct{})
	go func() {
		r.down.Store(r.copy(client, target, false))
		close(done)
	}()
	r.up.Store(r.copy(target, client, true))
	<-done

	stop()
	if r.timer != nil {
		r.timer.Stop()
	}
	if t := r.graceTimer.Load(); t != nil {
		t.Stop()
	}
	r.closeBoth()
	res := RelayResult{Up: r.up.Load(), Down: r.down.Load(), IdledOut: r.idledOut.Load()}
	if e := r.firstErr.Load(); e != nil {
		res.Err = *e
	}
	if res.Err == nil && ctx.Err() != nil {
		res.Err = ctx.Err()
	}
	return res
}

type relay struct {
	client, target net.Conn
	counter        Counter
	idle           time.Duration
	timer          *time.Timer
	lastActive     atomic.Int64 // unix nanos of the last chunk either way
	up, down       atomic.Int64
	idledOut       atomic.Bool
	firstErr       atomic.Pointer[error]
	closeOnce      sync.Once
	grace          time.Duration
	graceTimer     atomic.Pointer[time.Timer]
}

func (r *relay) touch() { r.lastActive.Store(time.Now().UnixNano()) }

// checkIdle runs on the timer: one timer per relay, re-armed for the time
// left rather than reset on every chunk, so the hot path only stores a time.
func (r *relay) checkIdle() {
	since := time.Duration(time.Now().UnixNano() - r.lastActive.Load())
	if since >= r.idle {
		r.idledOut.Store(true)
		r.closeBoth()
		return
	}
	r.timer.Reset(r.idle - since)
}

func (r *relay) closeBoth() {
	r.closeOnce.Do(func() {
		r.client.Close()
		r.target.Close()
	})
}

// copy moves src to dst with pooled buffers and returns the bytes moved.
// io.Copy is avoided on purpose: ReaderFrom/WriterTo paths of wrapped conns
// allocate their own buffer per call and hide the per-chunk counting.
//
// A direction spends most of its life waiting, so what it holds while it
// waits is what an idle tunnel costs. A source that can be waited on
// without a read (a TCP socket, or a wrapper of one: readwait) is waited
// on holding no buffer, and a large one is taken for the read that
// follows. Any other source (TLS, a protocol's stream) waits on a small
// buffer, and a read that fills it takes a large one for the reads after
// it. Either way the large buffer stays while bulk flows, until a read
// comes back shorter than the small buffer, when it goes back to the pool
// before the next, possibly long, wait.
func (r *relay) copy(dst, src net.Conn, up bool) int64 {
	wait := readwait.For(src)
	var sp *[]byte
	if wait == nil {
		sp = getSmallBuf()
		defer putSmallBuf(sp)
	}
	var bp *[]byte
	defer func() {
		if bp != nil {
			putBuf(bp)
		}
	}()
	var total int64
	for {
		if bp == nil && wait != nil {
			_ = wait() // an error is the Read's to report, at once
			bp = getBuf()
		}
		var buf []byte
		if bp != nil {
			buf = *bp
		} else {
			buf = *sp
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if r.idle > 0 {
				r.touch()
			}
			wn, werr := dst.Write(buf[:n])
			total += int64(wn)
			if r.counter != nil {
				if up {
					r.counter.Add(int64(wn), 0)
				} else {
					r.counter.Add(0, int64(wn))
				}
			}
			if werr != nil {
				r.fail(werr)
				return total
			}
		}
		switch { // after the write: buf may be the large buffer
		case bp == nil && n == len(buf):
			bp = getBuf() // the small buffer filled: bulk is flowing
		case bp != nil && n < smallBufSize:
			putBuf(bp) // drained: wait without it
			bp = nil
		}
		if rerr != nil {
			if rerr != io.EOF {
				r.fail(rerr)
				return total
			}
			// Normal end of this direction: pass the half-close on. Where
			// that is impossible, the other direction gets a grace period.
			if !closeWrite(dst) {
				r.graceTimer.Store(time.AfterFunc(r.grace, r.closeBoth))
			}
			return total
		}
	}
}

func (r *relay) fail(err error) {
	if isClosedErr(err) {
		// One side closing makes the other side's pending I/O fail; only the
		// first real cause is worth reporting.
		err = nil
	}
	if err != nil {
		r.firstErr.CompareAndSwap(nil, &err)
	}
	r.closeBoth()
}

// closeWrite half-closes c if it supports it and reports whether it did.
func closeWrite(c net.Conn) bool {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite() == nil
	}
	return false
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrDeadlineExceeded)
}
