package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Stats counts traffic per user (by name: the email, shared by every
// inbound the user is on) and per inbound, and tunnels per protocol and
// transport. The relay adds bytes through a TunnelCounter with two atomic
// adds per chunk; everything else is touched once per tunnel.
type Stats struct {
	users    sync.Map // string -> *TrafficCounter
	inbounds sync.Map // string -> *TrafficCounter
	kinds    sync.Map // TunnelKind -> *TrafficCounter
	udp      atomic.Int64
}

// NewStats returns empty counters.
func NewStats() *Stats { return &Stats{} }

// TunnelKind is a protocol over a transport, for metrics.
type TunnelKind struct{ Protocol, Transport string }

// TrafficCounter counts one user's, inbound's or kind's traffic. It
// implements Counter.
type TrafficCounter struct {
	up, down atomic.Int64
	active   atomic.Int64 // tunnels open now
	total    atomic.Int64 // tunnels opened
	lastSeen atomic.Int64 // unix nanos of the last tunnel start or end; 0 = never
	refused  atomic.Int64 // connections refused for quota or expiry
}

// UserCounter is the older name of TrafficCounter.
type UserCounter = TrafficCounter

// Add implements Counter.
func (c *TrafficCounter) Add(up, down int64) {
	if up != 0 {
		c.up.Add(up)
	}
	if down != 0 {
		c.down.Add(down)
	}
}

// Load returns the bytes so far.
func (c *TrafficCounter) Load() (up, down int64) { return c.up.Load(), c.down.Load() }

// Refused counts one connection refused for quota or expiry.
func (c *TrafficCounter) Refused() { c.refused.Add(1) }

// CounterValues is a snapshot of a TrafficCounter.
type CounterValues struct {
	Up       int64      `json:"up"`
	Down     int64      `json:"down"`
	Active   int64      `json:"active"`
	Total    int64      `json:"total"`
	LastSeen *time.Time `json:"lastSeen,omitempty"`
	Refused  int64      `json:"refused,omitempty"`
}

func (c *TrafficCounter) values() CounterValues {
	v := CounterValues{Up: c.up.Load(), Down: c.down.Load(), Active: c.active.Load(), Total: c.total.Load(), Refused: c.refused.Load()}
	if ns := c.lastSeen.Load(); ns != 0 {
		t := time.Unix(0, ns).UTC()
		v.LastSeen = &t
	}
	return v
}

// reset zeroes the cumulative values (not the tunnels open now) and returns
// what they were.
func (c *TrafficCounter) reset() CounterValues {
	v := c.values()
	v.Up, v.Down = c.up.Swap(0), c.down.Swap(0)
	v.Total, v.Refused = c.total.Swap(0), c.refused.Swap(0)
	return v
}

func counterIn(m *sync.Map, key any) *TrafficCounter {
	if c, ok := m.Load(key); ok {
		return c.(*TrafficCounter)
	}
	c, _ := m.LoadOrStore(key, &TrafficCounter{})
	return c.(*TrafficCounter)
}

// User returns the counter of a user, creating it on first use.
func (s *Stats) User(name string) *TrafficCounter { return counterIn(&s.users, name) }

// Inbound returns the counter of an inbound, creating it on first use.
func (s *Stats) Inbound(tag string) *TrafficCounter { return counterIn(&s.inbounds, tag) }

// Kind returns the counter of a protocol over a transport.
func (s *Stats) Kind(k TunnelKind) *TrafficCounter { return counterIn(&s.kinds, k) }

// UDPAssociations is the number of UDP associations relayed now.
func (s *Stats) UDPAssociations() int64 { return s.udp.Load() }

// TunnelCounter is one tunnel's view of the counters: the relay adds to
// its user and its inbound.
type TunnelCounter struct {
	user, inbound, kind *TrafficCounter
	udp                 *atomic.Int64
}

// Add implements Counter.
func (t *TunnelCounter) Add(up, down int64) {
	t.user.Add(up, down)
	t.inbound.Add(up, down)
	t.kind.Add(up, down) // never reset: the metrics' byte totals
}

// open counts a tunnel starting; close must follow.
func (s *Stats) open(req *tunnel.Request) *TunnelCounter {
	t := &TunnelCounter{user: s.User(req.User), inbound: s.Inbound(req.Inbound),
		kind: s.Kind(TunnelKind{req.Protocol, transportName(req.Transport)})}
	now := time.Now().UnixNano()
	for _, c := range []*TrafficCounter{t.user, t.inbound, t.kind} {
		c.active.Add(1)
		c.total.Add(1)
		c.lastSeen.Store(now)
	}
	if req.Network == protocols.NetworkUDP {
		t.udp = &s.udp
		t.udp.Add(1)
	}
	return t
}

func (t *TunnelCounter) close() {
	now := time.Now().UnixNano()
	for _, c := range []*TrafficCounter{t.user, t.inbound, t.kind} {
		c.active.Add(-1)
		c.lastSeen.Store(now)
	}
	if t.udp != nil {
		t.udp.Add(-1)
	}
}

func transportName(t string) string {
	if t == "" || t == "tls" {
		return "tcp"
	}
	return t
}

// StatsSnapshot is every user's and inbound's counters.
type StatsSnapshot struct {
	Users    map[string]CounterValues `json:"users"`
	Inbounds map[string]CounterValues `json:"inbounds"`
}

// Snapshot returns the counters now.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{Users: map[string]CounterValues{}, Inbounds: map[string]CounterValues{}}
	s.users.Range(func(k, v any) bool { snap.Users[k.(string)] = v.(*TrafficCounter).values(); return true })
	s.inbounds.Range(func(k, v any) bool { snap.Inbounds[k.(string)] = v.(*TrafficCounter).values(); return true })
	return snap
}

// Reset zeroes one user's counters (user != "") or everyone's and every
// inbound's, and returns the values before.
func (s *Stats) Reset(user string) StatsSnapshot {
	snap := StatsSnapshot{Users: map[string]CounterValues{}, Inbounds: map[string]CounterValues{}}
	if user != "" {
		if c, ok := s.users.Load(user); ok {
			snap.Users[user] = c.(*TrafficCounter).reset()
		}
		return snap
	}
	s.users.Range(func(k, v any) bool { snap.Users[k.(string)] = v.(*TrafficCounter).reset(); return true })
	s.inbounds.Range(func(k, v any) bool { snap.Inbounds[k.(string)] = v.(*TrafficCounter).reset(); return true })
	return snap
}

// statsFileVersion marks the layout of the saved counters.
const statsFileVersion = 1

type statsFile struct {
	Version int `json:"version"`
	StatsSnapshot
}

// Save writes the cumulative counters to path atomically (a temporary file
// in the same directory, synced, then renamed), so that a crash or a full
// disk leaves the previous file whole.
func (s *Stats) Save(path string) error {
	b, err := json.Marshal(statsFile{Version: statsFileVersion, StatsSnapshot: s.Snapshot()})
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return replaceFile(path, b, 0o600)
}

// Load adds the counters saved at path to s (bytes, tunnel and refusal
// totals, last seen); a missing file is no error.
func (s *Stats) Load(path string) error {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	var f statsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("stats: %s: %w", path, err)
	}
	if f.Version != statsFileVersion {
		return fmt.Errorf("stats: %s: version %d, want %d", path, f.Version, statsFileVersion)
	}
	restore := func(c *TrafficCounter, v CounterValues) {
		c.up.Add(v.Up)
		c.down.Add(v.Down)
		c.total.Add(v.Total)
		c.refused.Add(v.Refused)
		if v.LastSeen != nil {
			c.lastSeen.CompareAndSwap(0, v.LastSeen.UnixNano())
		}
	}
	for k, v := range f.Users {
		restore(s.User(k), v)
	}
	for k, v := range f.Inbounds {
		restore(s.Inbound(k), v)
	}
	return nil
}

// replaceFile replaces path with data: a temporary file beside it,
// synced, then renamed over it. On failure the temporary file is removed
// and path is untouched.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
