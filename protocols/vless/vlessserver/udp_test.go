package vlessserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
)

// TestUDPEndToEnd: our client's UDP tunnel, over TCP and TLS, carries 100
// datagrams of 1200 bytes through our server and a relaying handler to a
// UDP echo and back; the handler sees a UDP request for the echo; another
// destination is refused with tunnel.ErrOtherDestination.
func TestUDPEndToEnd(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			e := newE2E(t, withTLS)
			echo := vlesstest.UDPEcho(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pc, err := e.client(t, alice).DialPacket(ctx, echo)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if err := pc.WritePacket([]byte("x"), e.echo); !errors.Is(err, tunnel.ErrOtherDestination) {
				t.Fatalf("write elsewhere: %v", err)
			}
			if err := vlesstest.PacketEcho(pc, echo, 100, 1200); err != nil {
				t.Fatal(err)
			}
			pc.Close()
			select {
			case err := <-e.errs:
				if err != nil {
					t.Logf("ServeConn: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("server did not end after the client closed")
			}
			reqs := e.handler.Requests()
			if len(reqs) != 1 || reqs[0].Network != protocols.NetworkUDP || reqs[0].Target != echo || reqs[0].User != "alice@example.com" {
				t.Fatalf("requests %+v", reqs)
			}
		})
	}
}
