package gateway

import (
	"container/list"
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Default bounds on UDP associations.
const (
	DefaultMaxAssociations          = 4096
	DefaultMaxAssociationsPerClient = 256
)

// associations bounds the UDP associations a router relays at once, overall
// and per client IP. At a bound the oldest association (of that client, or
// overall) is ended to make room, as a NAT reuses its oldest mapping: a
// client that opens associations without end costs bounded memory and
// cannot crowd others out beyond its share.
type associations struct {
	max, perClient int

	mu       sync.Mutex
	all      *list.List // *association, oldest first
	byClient map[netip.Addr]int

	evicted atomic.Int64
	warns   rateLog // eviction warnings
}

type association struct {
	client netip.Addr
	cancel context.CancelFunc
}

func newAssociations(max, perClient int) *associations {
	if max <= 0 {
		max = DefaultMaxAssociations
	}
	if perClient <= 0 {
		perClient = DefaultMaxAssociationsPerClient
	}
	return &associations{max: max, perClient: perClient, all: list.New(), byClient: map[netip.Addr]int{}}
}

// add registers an association of client that cancel ends, ending older
// ones first if a bound is reached, and returns the function that
// unregisters it. It reports how many it ended.
func (a *associations) add(client netip.Addr, cancel context.CancelFunc) (remove func(), ended int) {
	a.mu.Lock()
	var victims []*association
	if a.byClient[client] >= a.perClient {
		for e := a.all.Front(); e != nil; e = e.Next() {
			if v := e.Value.(*association); v.client == client {
				victims = append(victims, a.unlink(e))
				break
			}
		}
	}
	if a.all.Len() >= a.max {
		victims = append(victims, a.unlink(a.all.Front()))
	}
	as := &association{client: client, cancel: cancel}
	e := a.all.PushBack(as)
	a.byClient[client]++
	a.mu.Unlock()
	for _, v := range victims {
		v.cancel()
	}
	a.evicted.Add(int64(len(victims)))
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			if e.Value != nil {
				a.unlink(e)
			}
			a.mu.Unlock()
		})
	}, len(victims)
}

// unlink removes e (a.mu held) and returns its association.
func (a *associations) unlink(e *list.Element) *association {
	v := e.Value.(*association)
	a.all.Remove(e)
	e.Value = nil
	if a.byClient[v.client]--; a.byClient[v.client] <= 0 {
		delete(a.byClient, v.client)
	}
	return v
}

// len is the number of associations registered now.
func (a *associations) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.all.Len()
}

// warnNow reports whether an eviction warning may be logged now: at most one
// per interval, whatever the rate of evictions.
func (a *associations) warnNow(interval time.Duration) bool {
	ok, _ := a.warns.hit(interval)
	return ok
}
