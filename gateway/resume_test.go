package gateway

import (
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/portico-gw/portico/transports/rawtls"
)

// TestTLSResumption: the front door issues session tickets and a client
// built the way Portico's outbounds are resumes with one, so a new tunnel
// to the same server skips the certificate and key exchange.
func TestTLSResumption(t *testing.T) {
	_, g, _ := startServerGateway(t)
	cfg, err := rawtls.ClientConfig("", g.Pin(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true} {
		c, err := tls.Dial("tcp", g.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 tickets come after the handshake: a round trip takes them in.
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		if got := c.ConnectionState().DidResume; got != want {
			t.Fatalf("connection %d: resumed %v, want %v", i+1, got, want)
		}
		c.Close()
	}
}
