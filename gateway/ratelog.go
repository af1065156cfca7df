package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// limitLogInterval is how often a limit that keeps being hit is logged.
const limitLogInterval = 10 * time.Second

// rateLog lets one log line through per interval, whatever the rate of the
// events behind it, and counts the events it held back so that the next
// line can say how many there were. A flood of limit hits (a scanner, a
// slowloris, a client opening connections without end) thus costs one line
// per interval, not one per event. The zero value is ready to use; methods
// are safe for concurrent use.
type rateLog struct {
	last       atomic.Int64 // unix nanos of the last line let through; 0: none yet
	suppressed atomic.Int64 // events held back since the last line
	total      atomic.Int64 // every event
	now        func() time.Time
}

// hit records one event and reports whether a line may be logged for it
// now, at most one per interval, and if so how many events were held back
// since the previous line.
func (r *rateLog) hit(interval time.Duration) (ok bool, suppressed int64) {
	r.total.Add(1)
	now := time.Now
	if r.now != nil {
		now = r.now
	}
	t := now().UnixNano()
	last := r.last.Load()
	if last != 0 && t-last < int64(interval) || !r.last.CompareAndSwap(last, t) {
		r.suppressed.Add(1)
		return false, 0
	}
	return true, r.suppressed.Swap(0)
}

// log records one event and, when hit lets it through, logs msg at level
// with args, plus "suppressed" (events held back since the previous line)
// and "total" (events so far).
func (r *rateLog) log(l *slog.Logger, level slog.Level, interval time.Duration, msg string, args ...any) {
	ok, suppressed := r.hit(interval)
	if !ok {
		return
	}
	l.Log(context.Background(), level, msg, append(args, "suppressed", suppressed, "total", r.total.Load())...)
}
