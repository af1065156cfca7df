package vlessserver_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// TestV1UDPEndToEnd: our v1 client and server over loopback TLS, through a
// handler that relays to real UDP echo servers: 100 datagrams of 1200
// bytes each way and checked, udp_multi (with and without padding) and
// classic. udp_multi opens one tunnel per remote, all with one
// association key; classic carries both remotes on one tunnel with none.
func TestV1UDPEndToEnd(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts vlessclient.Options
	}{
		{"udp_multi", vlessclient.Options{}},
		{"udp_multi padded", vlessclient.Options{PadMin: 400, PadMax: 1100}},
		{"classic", vlessclient.Options{UDPClassic: true}},
		{"classic padded", vlessclient.Options{UDPClassic: true, PadMin: 292, PadMax: 292}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTLSE2E(t, vlessserver.Options{})
			echo1, echo2 := vlesstest.UDPEcho(t), vlesstest.UDPEcho(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pc, err := e.client(t, tt.opts).DialPacket(ctx, echo1)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			for _, r := range []struct {
				dst   protocols.Addr
				count int
			}{{echo1, 100}, {echo2, 20}} {
				fc := &fromCheck{PacketConn: pc, want: r.dst}
				if err := vlesstest.PacketEcho(fc, r.dst, r.count, 1200); err != nil {
					t.Fatalf("to %v: %v", r.dst, err)
				}
				if n := fc.bad.Load(); n != 0 {
					t.Fatalf("to %v: %d replies from another source", r.dst, n)
				}
			}
			reqs := e.handler.Requests()
			wantTunnels := map[bool]int{false: 2, true: 1}[tt.opts.UDPClassic]
			if len(reqs) != wantTunnels || int(e.ln.Accepted()) != wantTunnels {
				t.Fatalf("%d tunnels, %d connections; want %d", len(reqs), e.ln.Accepted(), wantTunnels)
			}
			for i, r := range reqs {
				if r.Network != protocols.NetworkUDP || r.User != "alice@example.com" {
					t.Errorf("request %d: %+v", i, r)
				}
			}
			if tt.opts.UDPClassic {
				if reqs[0].Association != "" || reqs[0].Target != echo1 {
					t.Errorf("classic request %+v", reqs[0])
				}
				return
			}
			if reqs[0].Target != echo1 || reqs[1].Target != echo2 {
				t.Errorf("tunnel targets %v, %v; want %v, %v", reqs[0].Target, reqs[1].Target, echo1, echo2)
			}
			if a := reqs[0].Association; !strings.HasPrefix(a, "vless1\x00") || len(a) != 7+16+8 || reqs[1].Association != a {
				t.Errorf("associations %q, %q; want one key of user and id", a, reqs[1].Association)
			}
		})
	}
}

// fromCheck counts the datagrams ReadPacket says came from anywhere but
// want (vlesstest.PacketEcho checks only the bytes).
type fromCheck struct {
	tunnel.PacketConn
	want protocols.Addr
	bad  atomic.Int64
}

func (f *fromCheck) ReadPacket(b []byte) (int, protocols.Addr, error) {
	n, from, err := f.PacketConn.ReadPacket(b)
	if err == nil && from != f.want {
		f.bad.Add(1)
	}
	return n, from, err
}

// TestV1UDPAssociationsDiffer: two DialPacket calls are two associations.
func TestV1UDPAssociationsDiffer(t *testing.T) {
	e := newTLSE2E(t, vlessserver.Options{})
	echo := vlesstest.UDPEcho(t)
	c := e.client(t, vlessclient.Options{})
	for range 2 {
		pc, err := c.DialPacket(context.Background(), echo)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if err := vlesstest.PacketEcho(pc, echo, 1, 100); err != nil {
			t.Fatal(err)
		}
	}
	reqs := e.handler.Requests()
	if len(reqs) != 2 || reqs[0].Association == reqs[1].Association || reqs[0].Association == "" {
		t.Errorf("associations %q, %q; want two different keys", reqs[0].Association, reqs[1].Association)
	}
}
