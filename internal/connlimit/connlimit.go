// Package connlimit counts the connections a listener holds open, overall
// and per client IP, against limits. The front door's TCP listener, the
// HTTP/3 (QUIC) listener and the client's local proxy listeners each keep
// one Slots; a connection past a limit is refused at accept, before any
// handshake work is spent on it.
package connlimit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/portico-gw/portico/internal/readwait"
)

// Slots counts open connections against Max and PerIP (0: unlimited).
// The zero value is not usable; use New.
type Slots struct {
	max, perIP int

	mu   sync.Mutex
	n    int
	byIP map[netip.Addr]int

	refusedMax, refusedPerIP atomic.Int64
}

// New returns Slots with the given limits, or nil when both are 0: a nil
// *Slots admits everything and counts nothing.
func New(max, perIP int) *Slots {
	if max <= 0 && perIP <= 0 {
		return nil
	}
	return &Slots{max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

// Refusal names the limit that refused a connection.
type Refusal int

const (
	Admitted Refusal = iota
	RefusedMax
	RefusedPerIP
)

// Take reserves a slot for a connection from ip. It returns the function
// that gives the slot back (idempotent, safe from any goroutine), or nil
// and which limit refused. Refusals are counted.
func (s *Slots) Take(ip netip.Addr) (release func(), why Refusal) {
	if s == nil {
		return func() {}, Admitted
	}
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.n >= s.max {
		s.refusedMax.Add(1)
		return nil, RefusedMax
	}
	if s.perIP > 0 && s.byIP[ip] >= s.perIP {
		s.refusedPerIP.Add(1)
		return nil, RefusedPerIP
	}
	s.n++
	s.byIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.n--
			if s.byIP[ip]--; s.byIP[ip] <= 0 {
				delete(s.byIP, ip)
			}
		})
	}, Admitted
}

// WouldRefuse reports which limit would refuse a connection from ip now,
// without taking a slot or counting: a cheap check before work that cannot
// hold a slot yet (a QUIC Initial before the connection exists).
func (s *Slots) WouldRefuse(ip netip.Addr) Refusal {
	if s == nil {
		return Admitted
	}
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.max > 0 && s.n >= s.max:
		return RefusedMax
	case s.perIP > 0 && s.byIP[ip] >= s.perIP:
		return RefusedPerIP
	}
	return Admitted
}

// CountRefusal counts a refusal decided by WouldRefuse.
func (s *Slots) CountRefusal(why Refusal) {
	if s == nil {
		return
	}
	switch why {
	case RefusedMax:
		s.refusedMax.Add(1)
	case RefusedPerIP:
		s.refusedPerIP.Add(1)
	}
}

// Stats is what a Slots has seen.
type Stats struct {
	Open         int   // slots taken now
	RefusedMax   int64 // refused because Max connections were open
	RefusedPerIP int64 // refused because PerIP connections from that IP were open
}

// Stats returns the current counts; a nil Slots reports zeros.
func (s *Slots) Stats() Stats {
	if s == nil {
		return Stats{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Open: s.n, RefusedMax: s.refusedMax.Load(), RefusedPerIP: s.refusedPerIP.Load()}
}

// Limit returns the configured value of the limit that produced why.
func (s *Slots) Limit(why Refusal) (name string, value int) {
	if why == RefusedPerIP {
		return "maxConnectionsPerIP", s.perIP
	}
	return "maxConnections", s.max
}

// Conn gives its connection's slot back when it is closed.
type Conn struct {
	net.Conn
	release func()
}

// Wrap returns c holding the slot release gives back on Close.
func Wrap(c net.Conn, release func()) *Conn { return &Conn{Conn: c, release: release} }

// Close gives the slot back and closes the connection.
func (c *Conn) Close() error {
	c.release()
	return c.Conn.Close()
}

// NetConn is the connection wrapped, for those that look through to its
// socket (readwait.SocketReadable, tlsbatch's reads that do not wait).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// ReadWaiter implements [readwait.Waiter] for the connection it wraps.
func (c *Conn) ReadWaiter() func() error { return readwait.For(c.Conn) }

// CloseWrite passes a half-close on when the connection has one.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// AddrOf is the IP of a net.Addr (TCP or UDP), or the zero Addr.
func AddrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
