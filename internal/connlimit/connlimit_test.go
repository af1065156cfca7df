package connlimit

import (
	"net"
	"net/netip"
	"testing"

	"github.com/portico-gw/portico/internal/readwait"
)

func TestSlots(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	s := New(3, 2)
	r1, _ := s.Take(a)
	r2, _ := s.Take(a)
	if r, why := s.Take(a); r != nil || why != RefusedPerIP {
		t.Fatalf("third from one IP: %v, want RefusedPerIP", why)
	}
	// The IPv4-mapped form is the same client.
	if r, why := s.Take(netip.MustParseAddr("::ffff:192.0.2.1")); r != nil || why != RefusedPerIP {
		t.Fatalf("mapped form of a full IP: %v, want RefusedPerIP", why)
	}
	r3, why := s.Take(b)
	if r3 == nil {
		t.Fatalf("another IP below the overall limit: %v", why)
	}
	if why := s.WouldRefuse(b); why != RefusedMax {
		t.Fatalf("WouldRefuse at the overall limit: %v", why)
	}
	if _, why := s.Take(b); why != RefusedMax {
		t.Fatalf("past the overall limit: %v, want RefusedMax", why)
	}
	r1()
	r1() // idempotent
	if st := s.Stats(); st.Open != 2 || st.RefusedPerIP != 2 || st.RefusedMax != 1 {
		t.Fatalf("stats %+v", st)
	}
	if r, why := s.Take(a); r == nil {
		t.Fatalf("a freed slot: %v", why)
	}
	r2()
	r3()
	if name, max := s.Limit(RefusedPerIP); name != "maxConnectionsPerIP" || max != 2 {
		t.Fatalf("Limit = %s %d", name, max)
	}
}

func TestNilSlotsAdmitAll(t *testing.T) {
	s := New(0, 0)
	if s != nil {
		t.Fatal("New(0, 0) is not nil")
	}
	for range 10 {
		if r, _ := s.Take(netip.Addr{}); r == nil {
			t.Fatal("a nil Slots refused")
		}
	}
	if s.WouldRefuse(netip.Addr{}) != Admitted || s.Stats() != (Stats{}) {
		t.Fatal("a nil Slots counts")
	}
}

func TestAddrOf(t *testing.T) {
	for _, tc := range []struct {
		in   net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.7"), Port: 1}, "198.51.100.7"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, "2001:db8::1"},
		{nil, "invalid IP"},
	} {
		if got := AddrOf(tc.in).String(); got != tc.want {
			t.Errorf("AddrOf(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// A wrapped TCP connection can still be waited on without a buffer, as the
// relay does for idle tunnels, and its wait ends when bytes arrive.
func TestWrappedConnReadWaiter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	w := Wrap(s, func() {})
	defer w.Close()
	wait := readwait.For(w)
	if wait == nil {
		t.Skip("no bufferless wait on this system")
	}
	c.Write([]byte("x"))
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Read(make([]byte, 2)); n != 1 || err != nil {
		t.Fatalf("Read after the wait = %d, %v", n, err)
	}
}
