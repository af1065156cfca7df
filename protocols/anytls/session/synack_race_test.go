package session

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
)

// lingeringConn returns from a Write only some time after the bytes went
// out, once delay is set: long enough for the peer's answer to be read
// before the writer goes on, as a busy scheduler does now and then.
type lingeringConn struct {
	net.Conn
	delay atomic.Int64
}

func (c *lingeringConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if d := time.Duration(c.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	return n, err
}

// TestSynAckBeforeOpenReturns: a cmdSYNACK that arrives before OpenStream
// has returned stops the stuck-session watchdog. The watchdog used to be
// armed after cmdSYN was written, so such an answer found no timer and a
// healthy session was closed as stuck 3 s later, cutting every stream on it
// (seen in make bench as downloads ending early).
func TestSynAckBeforeOpenReturns(t *testing.T) {
	cc, sc := tcpPair(t)
	lc := &lingeringConn{Conn: cc}
	c := NewClient(lc, ClientConfig{SynAckTimeout: 300 * time.Millisecond})
	s := NewServer(sc, nil, ServerConfig{Accept: serve(echoBody)})
	cerr, serr := make(chan error, 1), make(chan error, 1)
	go func() { serr <- s.Run() }()
	go func() { cerr <- c.Run() }()
	defer func() {
		c.Close()
		s.Close()
		<-cerr
		<-serr
	}()
	s1 := open(t, c)
	anytlstest.Eventually(t, 5*time.Second, "server settings", func() bool { return c.PeerVersion() == 2 })
	s1.Close()

	lc.delay.Store(int64(150 * time.Millisecond))
	s2 := open(t, c) // its SYNACK is read while OpenStream is still in Write
	lc.delay.Store(0)
	time.Sleep(600 * time.Millisecond) // twice the watchdog
	if c.IsClosed() {
		t.Fatalf("a session whose SYNACK came early was closed: %v", c.closedErr())
	}
	if _, err := s2.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(s2, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo after the watchdog's time: %q, %v", got, err)
	}
}
