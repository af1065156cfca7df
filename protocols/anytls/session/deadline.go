package session

import (
	"sync"
	"time"
)

// deadline is a settable point in time that waiters see as a channel,
// closed once the time has passed. Moving it later re-opens the channel;
// moving it into the past closes it at once, waking current waiters.
type deadline struct {
	mu    sync.Mutex
	ch    chan struct{}
	timer *time.Timer
	gen   uint64 // bumped by set, so a stale timer closes nothing
}

func (d *deadline) set(at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	expired := isClosed(d.ch)
	switch wait := time.Until(at); {
	case at.IsZero():
		if expired {
			d.ch = make(chan struct{})
		}
	case wait <= 0:
		if !expired {
			close(d.ch)
		}
	default:
		if expired {
			d.ch = make(chan struct{})
		}
		gen, ch := d.gen, d.ch
		d.timer = time.AfterFunc(wait, func() {
			d.mu.Lock()
			if d.gen == gen {
				close(ch)
			}
			d.mu.Unlock()
		})
	}
}

// wait returns the channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.gen++
	d.mu.Unlock()
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
