package vmessserver

import (
	"sync"
)

// expiringSet is an exact set of keys, each remembered until its own expiry
// second, with a bound on how many it holds. It has no false positives (a
// key is reported seen only if it was added and has not expired) and no
// false negatives while it is not full; when full it refuses new keys
// rather than forget live ones. Memory is at most max entries; expired keys
// are swept by the clock the callers pass in, second by second, through a
// ring of per-second buckets, so a sweep costs only what expires.
//
// V2Ray uses a cuckoo filter here, which is probabilistic: it refuses a
// small share of genuine handshakes as replays (PEERS.md). This set cannot.
type expiringSet[K comparable] struct {
	mu    sync.Mutex
	m     map[K]int64 // key -> expiry second
	ring  [ringSize][]K
	swept int64 // every second up to and including swept is swept
	max   int
}

// ringSize bounds how far in the future an expiry may be, in seconds.
const ringSize = 512

func newExpiringSet[K comparable](max int) *expiringSet[K] {
	return &expiringSet[K]{m: make(map[K]int64), max: max}
}

// sweep forgets every key whose expiry second is now or earlier. s.mu is held.
func (s *expiringSet[K]) sweep(now int64) {
	if s.swept == 0 || now-s.swept >= ringSize || now < s.swept-ringSize {
		// First use, a long pause or a clock jump: scan everything.
		for k, exp := range s.m {
			if exp <= now {
				delete(s.m, k)
			}
		}
		for i := range s.ring {
			s.ring[i] = s.ring[i][:0]
		}
		for k, exp := range s.m {
			s.ring[exp%ringSize] = append(s.ring[exp%ringSize], k)
		}
		s.swept = now
		return
	}
	for sec := s.swept + 1; sec <= now; sec++ {
		b := &s.ring[sec%ringSize]
		keep := (*b)[:0]
		for _, k := range *b {
			switch exp, ok := s.m[k]; {
			case !ok:
			case exp <= now:
				delete(s.m, k)
			default:
				keep = append(keep, k) // a later second that shares the bucket
			}
		}
		clear((*b)[len(keep):])
		*b = keep
	}
	s.swept = max(s.swept, now)
}

// contains reports whether k is in the set at time now.
func (s *expiringSet[K]) contains(k K, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	exp, ok := s.m[k]
	return ok && exp > now
}

// add inserts k until expire (a second after now, less than ringSize
// seconds ahead). It reports false if k is already there (a replay), and
// full if the set holds max keys.
func (s *expiringSet[K]) add(k K, expire, now int64) (added, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	if exp, ok := s.m[k]; ok && exp > now {
		return false, false
	}
	if len(s.m) >= s.max {
		return false, true
	}
	expire = min(max(expire, now+1), now+ringSize-1)
	s.m[k] = expire
	s.ring[expire%ringSize] = append(s.ring[expire%ringSize], k)
	return true, false
}

// len is the number of keys held (expired ones included until swept).
func (s *expiringSet[K]) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
