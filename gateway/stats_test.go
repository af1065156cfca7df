package gateway

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

func TestStatsCounts(t *testing.T) {
	s := NewStats()
	req := tunnel.Request{Protocol: "vless", User: "alice", Inbound: "in1", Transport: "ws", Network: protocols.NetworkTCP}
	t1 := s.open(&req)
	t1.Add(100, 0)
	t1.Add(0, 250)
	udp := req
	udp.Network, udp.Inbound = protocols.NetworkUDP, "in2"
	t2 := s.open(&udp)
	t2.Add(7, 9)
	if n := s.UDPAssociations(); n != 1 {
		t.Fatalf("%d UDP associations, want 1", n)
	}
	snap := s.Snapshot()
	a := snap.Users["alice"]
	if a.Up != 107 || a.Down != 259 || a.Active != 2 || a.Total != 2 || a.LastSeen == nil {
		t.Fatalf("alice: %+v", a)
	}
	if in := snap.Inbounds["in1"]; in.Up != 100 || in.Down != 250 || in.Active != 1 {
		t.Fatalf("in1: %+v", in)
	}
	if k := s.Kind(TunnelKind{"vless", "ws"}).values(); k.Active != 2 || k.Total != 2 {
		t.Fatalf("vless/ws: %+v", k)
	}
	t1.close()
	t2.close()
	if a := s.Snapshot().Users["alice"]; a.Active != 0 || a.Total != 2 || s.UDPAssociations() != 0 {
		t.Fatalf("after close: %+v, udp %d", a, s.UDPAssociations())
	}

	s.User("alice").Refused()
	before := s.Reset("alice")
	if b := before.Users["alice"]; b.Up != 107 || b.Down != 259 || b.Refused != 1 || len(before.Inbounds) != 0 {
		t.Fatalf("reset returned %+v", before)
	}
	if a := s.Snapshot().Users["alice"]; a.Up != 0 || a.Down != 0 || a.Total != 0 || a.LastSeen == nil {
		t.Fatalf("after reset: %+v (last seen is kept)", a)
	}
	if in := s.Snapshot().Inbounds["in1"]; in.Up != 100 {
		t.Fatalf("a user's reset touched an inbound: %+v", in)
	}
	s.Reset("")
	if in := s.Snapshot().Inbounds["in1"]; in.Up != 0 {
		t.Fatalf("after full reset: %+v", in)
	}
}

// TestStatsSaveLoad: saved counters come back, added to what a restarted
// gateway has counted so far; a failed save leaves the old file whole.
func TestStatsSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	s := NewStats()
	req := tunnel.Request{User: "bob", Inbound: "in", Network: protocols.NetworkTCP}
	tc := s.open(&req)
	tc.Add(1000, 2000)
	tc.close()
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stats file: %v %v", fi, err)
	}

	restarted := NewStats()
	restarted.User("bob").Add(1, 1)
	if err := restarted.Load(path); err != nil {
		t.Fatal(err)
	}
	if b := restarted.Snapshot().Users["bob"]; b.Up != 1001 || b.Down != 2001 || b.Total != 1 || b.LastSeen == nil {
		t.Fatalf("loaded %+v", b)
	}
	if in := restarted.Snapshot().Inbounds["in"]; in.Up != 1000 {
		t.Fatalf("inbound loaded %+v", in)
	}
	if err := NewStats().Load(filepath.Join(dir, "none.json")); err != nil {
		t.Fatalf("a missing file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o600)
	if err := NewStats().Load(filepath.Join(dir, "bad.json")); err == nil {
		t.Fatal("a broken file loaded")
	}

	// Saving into a directory that cannot take the file fails and leaves
	// nothing behind.
	ro := filepath.Join(dir, "gone", "stats.json")
	if err := s.Save(ro); err == nil {
		t.Fatal("saved into a missing directory")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "stats.json" && e.Name() != "bad.json" {
			t.Fatalf("left %s behind", e.Name())
		}
	}
}
