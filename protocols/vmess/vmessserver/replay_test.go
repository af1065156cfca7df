package vmessserver

import (
	mathrand "math/rand/v2"
	"runtime"
	"testing"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols/vmess"
)

func key(i uint64) [16]byte {
	var k [16]byte
	for j := range 8 {
		k[j] = byte(i >> (8 * j))
	}
	k[15] = 0x5a
	return k
}

// TestExpiringSetExact: every key added is seen until its expiry and not
// after; keys never added are never seen.
func TestExpiringSetExact(t *testing.T) {
	s := newExpiringSet[[16]byte](1 << 20)
	rng := mathrand.New(mathrand.NewPCG(3, 4))
	const now0 = 1_000_000
	expiry := map[[16]byte]int64{}
	for i := range uint64(50000) {
		now := now0 + int64(i/500) // 100 s of adds
		exp := now + 1 + rng.Int64N(240)
		if added, full := s.add(key(i), exp, now); !added || full {
			t.Fatalf("add %d: %v %v", i, added, full)
		}
		expiry[key(i)] = exp
	}
	for now := int64(now0 + 100); now <= now0+400; now += 7 {
		for i := uint64(0); i < 50000; i += 97 {
			k := key(i)
			if got, want := s.contains(k, now), expiry[k] > now; got != want {
				t.Fatalf("key %d at %d: contains %v, expiry %d", i, now, got, expiry[k])
			}
		}
		if s.contains(key(1<<40), now) {
			t.Fatal("a key never added is seen")
		}
	}
	if n := s.len(); n != 0 {
		t.Errorf("%d keys left after every expiry", n)
	}
	// A key seen once is refused while live, taken again once expired.
	if added, _ := s.add(key(1), now0+1000, now0+500); !added {
		t.Fatal("re-adding an expired key")
	}
	if added, full := s.add(key(1), now0+1000, now0+600); added || full {
		t.Fatal("a live key added twice")
	}
}

// TestExpiringSetBounded: a flood of distinct keys fills the set to its
// bound and no further; room comes back as they expire; the keys in it
// stay exact.
func TestExpiringSetBounded(t *testing.T) {
	s := newExpiringSet[[16]byte](1000)
	const now = 5_000_000
	full := 0
	for i := range uint64(100000) {
		added, f := s.add(key(i), now+241, now)
		if f {
			full++
		} else if !added {
			t.Fatalf("distinct key %d refused as a replay", i)
		}
	}
	if s.len() != 1000 || full != 99000 {
		t.Fatalf("held %d, full refusals %d", s.len(), full)
	}
	if !s.contains(key(999), now+10) || s.contains(key(1000), now+10) {
		t.Error("membership wrong when full")
	}
	if added, f := s.add(key(200000), now+300, now+241); !added || f {
		t.Errorf("after expiry: added %v full %v", added, f)
	}
	if s.len() != 1 {
		t.Errorf("%d held after expiry", s.len())
	}
}

func TestExpiringSetClockJumps(t *testing.T) {
	s := newExpiringSet[[16]byte](100)
	s.add(key(1), 1000, 900)
	if !s.contains(key(1), 999) || s.contains(key(1), 1000) {
		t.Error("expiry second")
	}
	s.add(key(2), 1_000_200, 1_000_000) // far ahead: a full scan
	if s.contains(key(1), 1_000_000) || !s.contains(key(2), 1_000_000) {
		t.Error("after a jump forward")
	}
	if !s.contains(key(2), 500) { // back in time: still remembered
		t.Error("after a jump back")
	}
}

func TestLegacyTableWindow(t *testing.T) {
	id := uuid.MustParse("27848739-7e62-4138-9fd3-098a63964b6b")
	a := &account{label: "bob", alterID: 2, ids: append([][16]byte{id}, vmess.AlterIDs(id, 2+diagAlterIDs)...)}
	now := int64(1_700_000_000)
	tab := newLegacyTable([]*account{a}, now)
	ids := len(a.ids)
	maxSize := ids * (2*vmess.MaxTimeSkew + 1 + 3*tableSlack)
	for step := range 1000 {
		now++
		if step%97 == 0 {
			now += 37
		}
		for _, d := range []int64{-121, -120, -5, 0, 60, 120, 121} {
			for i, x := range a.ids {
				h := vmess.LegacyAuth(x, now+d)
				e, ok := tab.lookup(h[:], now)
				want := d >= -120 && d <= 120
				if ok != want || ok && (e.ts != now+d || int(e.id) != i) {
					t.Fatalf("at %d, id %d, offset %d: %+v %v", now, i, d, e, ok)
				}
			}
		}
		if n := tab.size(); n > maxSize {
			t.Fatalf("table holds %d entries, bound %d", n, maxSize)
		}
	}
	// A clock jump rebuilds.
	now += 100000
	h := vmess.LegacyAuth(id, now)
	if _, ok := tab.lookup(h[:], now); !ok {
		t.Error("not found after a jump forward")
	}
	now -= 50000
	h = vmess.LegacyAuth(id, now+3)
	if _, ok := tab.lookup(h[:], now); !ok {
		t.Error("not found after a jump back")
	}
	if tab.size() > maxSize {
		t.Errorf("%d entries after jumps", tab.size())
	}
}

// TestReplayFloodMemory: a flood of 1,000,000 distinct AuthIDs inside one
// window (what a holder of a user's key could send; without a key no
// AuthID decrypts and nothing reaches the filter) keeps the AuthID filter
// at its bound, maxAuthIDs keys, in well under 64 MiB of heap. Replays of
// AuthIDs it holds are still refused as replays, full or not; a new AuthID
// while it is full is refused (fail closed: ErrReplayFilterFull, the
// connection goes to the decoy) until AuthIDs expire, and never forgets a
// live one to make room.
func TestReplayFloodMemory(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("the race detector's shadow memory makes heap figures meaningless")
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	s := newExpiringSet[[16]byte](maxAuthIDs)
	const now = 1_700_000_000
	const flood = 1_000_000
	expire := int64(now + vmess.MaxTimeSkew + 1)
	var full int
	for i := range uint64(flood) {
		added, f := s.add(key(i), expire, now+int64(i%3)) // within a few seconds
		switch {
		case f:
			full++
		case !added:
			t.Fatalf("distinct AuthID %d refused as a replay", i)
		}
		if i == maxAuthIDs/2 {
			// Not full yet: a genuine replay is refused as one.
			if added, f := s.add(key(7), expire, now+2); added || f {
				t.Fatalf("a replay before the bound: added %v, full %v", added, f)
			}
		}
	}
	after := heap()
	used := int64(after) - int64(before)
	t.Logf("replay filter after %d distinct AuthIDs: %d held, %d refused as full, heap %.1f MiB", flood, s.len(), full, float64(used)/(1<<20))
	if s.len() != maxAuthIDs || full != flood-maxAuthIDs {
		t.Fatalf("held %d (bound %d), full refusals %d", s.len(), maxAuthIDs, full)
	}
	if used > 64<<20 {
		t.Fatalf("the filter holds %.1f MiB after the flood; bound 64 MiB", float64(used)/(1<<20))
	}
	// Full: a replay of a held AuthID is still a replay, not "full".
	if added, f := s.add(key(12345), expire, now+3); added || f {
		t.Errorf("a replay while full: added %v, full %v", added, f)
	}
	// Room comes back when the window passes.
	if added, f := s.add(key(flood+1), expire+300, expire); !added || f {
		t.Errorf("after expiry: added %v, full %v", added, f)
	}
	runtime.KeepAlive(s)
}
