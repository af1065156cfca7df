package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess/vmessclient"
	"github.com/portico-gw/portico/transports/rawtls"
)

// recordingDialer keeps the first plaintext write of each connection it
// dials: a VMess client's handshake.
type recordingDialer struct {
	inner *rawtls.Dialer
	mu    sync.Mutex
	first [][]byte
}

func (d *recordingDialer) DialConn(ctx context.Context) (net.Conn, error) {
	c, err := d.inner.DialConn(ctx)
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, d: d}, nil
}

type recordingConn struct {
	net.Conn
	d    *recordingDialer
	once sync.Once
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.once.Do(func() {
		c.d.mu.Lock()
		c.d.first = append(c.d.first, append([]byte(nil), p...))
		c.d.mu.Unlock()
	})
	return c.Conn.Write(p)
}

// TestVMessReplayGetsTheDecoy: a captured VMess AEAD handshake sent again
// is refused: the prober gets the site's answer and the log says replay.
func TestVMessReplayGetsTheDecoy(t *testing.T) {
	g, _, logs := startDefault(t, nil)
	st := g.cfg.Inbounds[1].settings.(*VMessInbound)
	tlsCfg, _ := rawtls.ClientConfig("", g.Pin(), false, nil)
	rec := &recordingDialer{inner: &rawtls.Dialer{Address: g.Addr().String(), TLS: tlsCfg}}
	client, err := vmessclient.New(vmessclient.Options{ID: uuid.MustParse(st.Clients[0].ID), Security: "aes-128-gcm", Carrier: rec})
	if err != nil {
		t.Fatal(err)
	}
	echo := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	conn, err := client.DialStream(context.Background(), echo)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("genuine"))
	if b := make([]byte, 7); func() error { _, err := io.ReadFull(conn, b); return err }() != nil || string(b) != "genuine" {
		t.Fatal("the genuine handshake did not work")
	}
	conn.Close()

	rec.mu.Lock()
	captured := rec.first[0]
	rec.mu.Unlock()
	c, err := rec.inner.DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(captured)
	c.(interface{ CloseWrite() error }).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, _ := io.ReadAll(c)
	if !bytes.HasPrefix(answer, []byte("HTTP/1.1 400 Bad Request")) {
		t.Fatalf("replayed handshake answered %q", answer)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(logs.String(), "replay") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "replay") {
		t.Fatalf("log does not say replay:\n%s", logs)
	}
	if n := g.failures.replay.Load(); n != 1 {
		t.Fatalf("portico_handshake_failures_total{reason=replay} would be %d; want 1", n)
	}
}
