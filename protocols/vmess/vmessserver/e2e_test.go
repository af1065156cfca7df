package vmessserver_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmesstest"
	"github.com/portico-gw/portico/protocols/vmess/vmessclient"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// TestEndToEnd runs our client against our server over TLS on loopback,
// for every security, VMessAEAD and legacy, and moves 4 MiB each way
// through an echo server with SHA-256 checks.
func TestEndToEnd(t *testing.T) {
	aead, legacy := uuid.New(), uuid.New()
	srv, err := vmessserver.New(vmessserver.Options{
		Users:       []vmessserver.User{{ID: aead, Email: "aead@e2e"}, {ID: legacy, AlterID: 4, Email: "legacy@e2e"}},
		AllowLegacy: true, Inbound: "e2e", Transport: "tls",
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := vmesstest.SelfSigned(t)
	handler := new(vmesstest.RelayHandler)
	errs := vmesstest.Serve(t, ln, cert.ServerTLS(), srv, handler)
	echo := vmesstest.Echo(t)
	carrier := vmesstest.Dialer{Addr: ln.Addr().String(), TLS: cert.ClientTLS()}
	for _, sec := range []string{"aes-128-gcm", "chacha20-poly1305", "none", "zero", "auto"} {
		for _, alter := range []int{0, 4} {
			t.Run(fmt.Sprintf("%s/alterId=%d", sec, alter), func(t *testing.T) {
				id := aead
				if alter > 0 {
					id = legacy
				}
				c, err := vmessclient.New(vmessclient.Options{ID: id, AlterID: alter, Security: sec, Carrier: carrier})
				if err != nil {
					t.Fatal(err)
				}
				conn, err := c.DialStream(context.Background(), echo)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				if err := vmesstest.Exchange(conn, 4<<20, uint64(alter)); err != nil {
					t.Fatalf("%v\nServeConn: %s", err, vmesstest.Drain(errs))
				}
				// Half-close: the server passes it to the echo server, whose
				// half-close comes back as our EOF.
				if err := vmesstest.CloseWrite(conn); err != nil {
					t.Fatal(err)
				}
				if n, err := conn.Read(make([]byte, 10)); n != 0 || err == nil {
					t.Fatalf("after the echo: %d, %v; want EOF", n, err)
				}
			})
		}
	}
	for _, r := range handler.Requests() {
		if r.Target != echo || r.Network != protocols.NetworkTCP || r.Inbound != "e2e" || r.Transport != "tls" ||
			(r.User != "aead@e2e" && r.User != "legacy@e2e") || !r.Source.Addr().IsLoopback() {
			t.Errorf("request %+v", r)
		}
	}
	if n := len(handler.Requests()); n != 10 {
		t.Errorf("%d requests, want 10", n)
	}
}
