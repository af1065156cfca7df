package vmessserver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmesstest"
	"github.com/portico-gw/portico/protocols/vmess/vmessclient"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// TestUDPEndToEnd: our client's UDP tunnel carries 100 datagrams of 1200
// bytes through our server (TLS) and a relaying handler to a UDP echo and
// back, for every chunked security, AEAD and legacy; another destination is
// refused with tunnel.ErrOtherDestination; security zero is refused.
func TestUDPEndToEnd(t *testing.T) {
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
	echo := vmesstest.UDPEcho(t)
	carrier := vmesstest.Dialer{Addr: ln.Addr().String(), TLS: cert.ClientTLS()}
	for _, sec := range []string{"aes-128-gcm", "chacha20-poly1305", "none", "auto"} {
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
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				pc, err := c.DialPacket(ctx, echo)
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				if err := pc.WritePacket([]byte("x"), vmesstest.Echo(t)); !errors.Is(err, tunnel.ErrOtherDestination) {
					t.Fatalf("write elsewhere: %v", err)
				}
				if err := vmesstest.PacketEcho(pc, echo, 100, 1200); err != nil {
					t.Fatalf("%v\nServeConn: %s", err, vmesstest.Drain(errs))
				}
			})
		}
	}
	c, err := vmessclient.New(vmessclient.Options{ID: aead, Security: "zero", Carrier: carrier})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DialPacket(context.Background(), echo); !errors.Is(err, vmessclient.ErrUDP) {
		t.Fatalf("zero: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(handler.Requests()) < 8 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, r := range handler.Requests() {
		if r.Target != echo || r.Network != protocols.NetworkUDP || r.Inbound != "e2e" {
			t.Errorf("request %+v", r)
		}
	}
	if n := len(handler.Requests()); n != 8 {
		t.Errorf("%d requests, want 8", n)
	}
}
