package quic

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/connlimit"
)

// TestManyTunnelsOnOneConnection opens more tunnels at once than quic-go's
// default stream limit (100) on one client, all held open together.
func TestManyTunnelsOnOneConnection(t *testing.T) {
	f := start(t)
	d := f.dialer("/t")
	defer d.Close()
	const n = 300
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range n {
		c, err := d.DialConn(ctx)
		if err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("tunnel %d: write: %v", i, err)
		}
		conns = append(conns, c)
	}
	// Every tunnel is still open: each echoes its byte now.
	buf := make([]byte, 1)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("tunnel %d of %d held open: read %v, %v", i, n, buf, err)
		}
	}
}

// TestConnectionLimits: past MaxConnections a new QUIC connection gets no
// tunnel and is counted; when one closes, its slot is free again.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max, perIP int
		want       connlimit.Refusal
	}{
		{"maxConnections", 2, 0, connlimit.RefusedMax},
		{"maxConnectionsPerIP", 0, 2, connlimit.RefusedPerIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slots := connlimit.New(tc.max, tc.perIP)
			var refused atomic.Int64
			var mu sync.Mutex
			var reasons []connlimit.Refusal
			f := startWith(t, func(s *Server) {
				s.Limits = slots
				s.Refused = func(why connlimit.Refusal, _ net.Addr) {
					refused.Add(1)
					mu.Lock()
					reasons = append(reasons, why)
					mu.Unlock()
				}
			})
			tunnel := func(d *Dialer) error {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				c, err := d.DialConn(ctx)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := c.Write([]byte("x")); err != nil {
					return err
				}
				b := make([]byte, 1)
				_, err = c.Read(b)
				return err
			}
			var held []*Dialer
			for i := range 2 {
				d := f.dialer("/t")
				held = append(held, d)
				if err := tunnel(d); err != nil {
					t.Fatalf("connection %d within the limit: %v", i, err)
				}
			}
			if st := slots.Stats(); st.Open != 2 {
				t.Fatalf("open = %d, want 2", st.Open)
			}
			third := f.dialer("/t")
			defer third.Close()
			if err := tunnel(third); err == nil {
				t.Fatal("a third connection got a tunnel past the limit")
			}
			st := slots.Stats()
			if st.RefusedMax+st.RefusedPerIP == 0 || refused.Load() == 0 {
				t.Fatalf("refusal not counted: %+v, told %d", st, refused.Load())
			}
			mu.Lock()
			if reasons[0] != tc.want {
				t.Errorf("refused by %v, want %v", reasons[0], tc.want)
			}
			mu.Unlock()
			held[0].Close()
			deadline := time.Now().Add(5 * time.Second)
			for slots.Stats().Open != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("the closed connection's slot was not given back: %+v", slots.Stats())
				}
				time.Sleep(10 * time.Millisecond)
			}
			again := f.dialer("/t")
			defer again.Close()
			if err := tunnel(again); err != nil {
				t.Fatalf("a connection after a slot was freed: %v", err)
			}
			held[1].Close()
		})
	}
}

// TestMoreTunnelsThanOneConnectionCarries: with the server allowing 40
// streams a connection, 130 tunnels held open together all get through (on
// four connections), where one connection would leave the 41st waiting;
// once they close, the burst's extra connections are closed too.
func TestMoreTunnelsThanOneConnectionCarries(t *testing.T) {
	const limit, n = 40, 130
	f := startWith(t, func(s *Server) { s.MaxStreams = limit })
	d := f.dialer("/t")
	d.MaxStreams = limit
	// No session tickets, so no 0-RTT: the connections after the first
	// would otherwise trip quic-go's own race under -race (the 0-RTT tests in quic_test.go skip under -race for it).
	d.TLS.ClientSessionCache = noTickets{}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := d.DialConn(ctx)
		if err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	buf := make([]byte, 1)
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("tunnel %d: write: %v", i, err)
		}
		if _, err := c.Read(buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("tunnel %d of %d held open: read %v, %v", i, n, buf, err)
		}
	}
	quics := map[net.Addr]bool{}
	for _, c := range conns {
		quics[c.LocalAddr()] = true
	}
	if len(quics) != 4 {
		t.Errorf("%d tunnels at %d a connection went over %d connections, want 4", n, limit, len(quics))
	}
	for _, c := range conns {
		c.Close()
	}
	d.mu.Lock()
	left := len(d.conns)
	d.mu.Unlock()
	if left != 1 {
		t.Errorf("%d connections left open after every tunnel closed, want 1", left)
	}
	// And the one left carries the next tunnel.
	c, err := d.DialConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err != nil || buf[0] != 'z' {
		t.Fatalf("a tunnel after the burst: %v %q", err, buf)
	}
}

// noTickets is a session cache that keeps nothing.
type noTickets struct{}

func (noTickets) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (noTickets) Put(string, *tls.ClientSessionState)        {}

// TestCloseDuringDial: while a new connection's handshake hangs (the
// server silent), a tunnel on an existing connection closes at once; it
// used to wait for the handshake's end, the Dialer's lock held through it.
func TestCloseDuringDial(t *testing.T) {
	f := startWith(t, func(s *Server) { s.MaxStreams = 1 })
	d := f.dialer("/t")
	d.MaxStreams = 1
	d.TLS.ClientSessionCache = noTickets{}
	defer d.Close()
	first, err := d.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	echo(t, first, 10)
	// The next connection goes to a socket that never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	d.Address = silent.LocalAddr().String()
	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := d.DialConn(ctx)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	time.Sleep(200 * time.Millisecond) // the dial is under way
	start := time.Now()
	first.Close()
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v while another tunnel's connection was dialing", el)
	}
	if err := <-dialed; err == nil {
		t.Error("a dial to a silent socket succeeded")
	}
}
