package vmessserver

import (
	"encoding/binary"
	"sync"

	"github.com/portico-gw/portico/protocols/vmess"
)

// The legacy (MD5) time-hash table, V2Ray proxy/vmess/validator.go: for
// every id of every user and every second within MaxTimeSkew of now, the
// 16 bytes vmess.LegacyAuth(id, second). A legacy request opens with one of
// them. The table is kept whether or not legacy clients are allowed, so
// that a refused one can be told exactly why.
//
// Each user contributes its main id, its alterId alter ids and
// diagAlterIDs more, which only serve to recognise a client configured with
// a larger alterId than the server's user and say so (an alterId mismatch),
// instead of "unknown user". A client with alterId n picks one of its n
// alter ids per connection, so a mismatch shows within a few connections.
//
// Entries are keyed by the first 8 bytes of the hash (a hit is confirmed by
// recomputing the hash), about 30 bytes each: (1 + alterId + 4) × 251 × 30
// bytes per user, 38 KB for alterId 0, 550 KB for alterId 64.
const (
	diagAlterIDs = 4
	// tableSlack is how far past now+MaxTimeSkew the table reaches, so
	// that it is extended every tableSlack seconds rather than every second.
	tableSlack = 10
)

type legacyEntry struct {
	acct int32 // index in userTable.accounts
	id   int32 // 0 the main id, i > 0 alter id i-1
	ts   int64
}

type legacyTable struct {
	mu       sync.RWMutex
	accounts []*account
	m        map[uint64]legacyEntry
	from, to int64 // seconds covered, inclusive; to < from when empty
}

func newLegacyTable(accounts []*account, now int64) *legacyTable {
	t := &legacyTable{accounts: accounts}
	t.rebuild(now)
	return t
}

func (t *legacyTable) rebuild(now int64) {
	n := 0
	for _, a := range t.accounts {
		n += len(a.ids)
	}
	t.m = make(map[uint64]legacyEntry, n*(2*vmess.MaxTimeSkew+tableSlack+1))
	t.from, t.to = now-vmess.MaxTimeSkew, now-vmess.MaxTimeSkew-1
	t.extend(now + vmess.MaxTimeSkew + tableSlack)
}

// extend adds every second after t.to up to end. t.mu is held.
func (t *legacyTable) extend(end int64) {
	for ts := t.to + 1; ts <= end; ts++ {
		for ai, a := range t.accounts {
			for ii, id := range a.ids {
				h := vmess.LegacyAuth(id, ts)
				t.m[binary.BigEndian.Uint64(h[:8])] = legacyEntry{acct: int32(ai), id: int32(ii), ts: ts}
			}
		}
	}
	t.to = max(t.to, end)
}

// expire drops every second before start. t.mu is held.
func (t *legacyTable) expire(start int64) {
	for ts := t.from; ts < start && ts <= t.to; ts++ {
		for _, a := range t.accounts {
			for _, id := range a.ids {
				h := vmess.LegacyAuth(id, ts)
				k := binary.BigEndian.Uint64(h[:8])
				if e, ok := t.m[k]; ok && e.ts == ts {
					delete(t.m, k)
				}
			}
		}
	}
	t.from = max(t.from, start)
}

// refresh moves the window to cover now ± MaxTimeSkew.
func (t *legacyTable) refresh(now int64) {
	lo, hi := now-vmess.MaxTimeSkew, now+vmess.MaxTimeSkew
	t.mu.RLock()
	ok := t.from <= lo && hi <= t.to && lo-t.from <= 2*tableSlack
	t.mu.RUnlock()
	if ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.from <= lo && hi <= t.to && lo-t.from <= 2*tableSlack:
		// another caller did it
	case lo < t.from || lo > t.to: // the clock jumped
		t.rebuild(now)
	default:
		t.extend(hi + tableSlack)
		t.expire(lo)
	}
}

// lookup finds the user, id and second of a legacy auth, if it is in the
// window around now.
func (t *legacyTable) lookup(auth []byte, now int64) (legacyEntry, bool) {
	if len(t.accounts) == 0 || len(auth) < 16 {
		return legacyEntry{}, false
	}
	t.refresh(now)
	t.mu.RLock()
	e, ok := t.m[binary.BigEndian.Uint64(auth[:8])]
	t.mu.RUnlock()
	if !ok || e.ts < now-vmess.MaxTimeSkew || e.ts > now+vmess.MaxTimeSkew {
		return legacyEntry{}, false
	}
	if h := vmess.LegacyAuth(t.accounts[e.acct].ids[e.id], e.ts); string(h[:]) != string(auth[:16]) {
		return legacyEntry{}, false // an 8-byte prefix collision
	}
	return e, true
}

// size is the number of entries, for tests.
func (t *legacyTable) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}
