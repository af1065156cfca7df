package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/admin"
	"github.com/portico-gw/portico/internal/prototest"
)

// TestReloadKeepsTunnels: 50 tunnels of an untouched user move
// checksummed data across a reload that adds a user and removes another:
// none of them fails; the added user connects, the removed one gets the
// site; a config that does not load, or that changes what needs a
// restart, is refused and the running one stays.
func TestReloadKeepsTunnels(t *testing.T) {
	alice, bob, carol := uuid.NewString(), uuid.NewString(), uuid.NewString()
	s := startOps(t, map[string]string{"alice": alice, "bob": bob}, false, false)
	echo := prototest.Echo(t)
	ac := s.vless(t, alice)

	const tunnels, size = 50, 2 << 20
	var wg sync.WaitGroup
	errs := make(chan error, tunnels)
	started := make(chan struct{}, tunnels)
	for i := 0; i < tunnels; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, err := ac.DialStream(ctx, echo)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			started <- struct{}{}
			// 2 MiB in 4 KiB writes with pauses: about a second each.
			var n int
			err = prototest.ExchangeWith(conn, size, 4<<10, func(p []byte) {
				for i := range p {
					p[i] = byte(seed) + byte(n+i)
				}
				n += len(p)
				if n%(256<<10) == 0 {
					time.Sleep(100 * time.Millisecond)
				}
			})
			errs <- err
		}(uint64(i))
	}
	for i := 0; i < tunnels; i++ {
		select {
		case <-started:
		case err := <-errs:
			t.Fatalf("a tunnel failed before the reload: %v", err)
		}
	}
	if n := s.g.Router().Active(); n < tunnels/2 {
		t.Fatalf("only %d tunnels open at the reload", n)
	}
	writeOpsConfig(t, s, map[string]string{"alice": alice, "carol": carol}, false, false)
	if err := s.g.Reload(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			t.Errorf("tunnel: %v", err)
		}
	}
	t.Logf("%d tunnels across the reload, %d errors", tunnels, failed)
	if !strings.Contains(s.logs.String(), `msg="config reloaded"`) {
		t.Fatalf("no reload line:\n%s", s.logs.String())
	}
	if _, err := moveBytes(s.vless(t, carol), sizedTarget(t, 10, 10), 10); err != nil {
		t.Fatalf("the added user: %v", err)
	}
	unknown := s.probeAnswer(t, uuid.NewString())
	if got := s.probeAnswer(t, bob); got != unknown {
		t.Fatalf("the removed user got %q; an unknown key gets %q", got, unknown)
	}

	// A broken file, then a change that needs a restart: both refused, the
	// running config stays.
	os.WriteFile(s.cfg, []byte(`{"server": {`), 0o600)
	err := s.g.Reload()
	var ce *admin.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("broken config: %v; want a ConfigError", err)
	}
	writeOpsConfig(t, s, map[string]string{"alice": alice}, false, false)
	b, _ := os.ReadFile(s.cfg)
	os.WriteFile(s.cfg, []byte(strings.Replace(string(b), `"127.0.0.1:0"`, `"127.0.0.1:1"`, 1)), 0o600)
	if err := s.g.Reload(); !errors.As(err, &ce) || !strings.Contains(err.Error(), "server.listen changed") {
		t.Fatalf("listen change: %v", err)
	}
	if _, err := moveBytes(s.vless(t, carol), sizedTarget(t, 10, 10), 10); err != nil {
		t.Fatalf("after refused reloads the running config should still admit carol: %v", err)
	}
}

// TestReloadClosesRemovedUsers: with policy.closeRemovedUsers, a reload
// that removes a user ends its open tunnel; another user's runs on.
func TestReloadClosesRemovedUsers(t *testing.T) {
	alice, bob := uuid.NewString(), uuid.NewString()
	s := startOps(t, map[string]string{"alice": alice, "bob": bob}, false, true)
	echo := prototest.Echo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(id string) interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		Close() error
	} {
		c, err := s.vless(t, id).DialStream(ctx, echo)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := open(alice), open(bob)
	defer a.Close()
	defer b.Close()
	writeOpsConfig(t, s, map[string]string{"alice": alice}, false, true)
	if err := s.g.Reload(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, err := b.Read(buf); err == nil {
		t.Fatalf("the removed user's tunnel still reads (%d bytes)", n)
	}
	a.Write([]byte("pong"))
	if _, err := a.Read(buf); err != nil || string(buf) != "pong" {
		t.Fatalf("alice's tunnel after the reload: %q, %v", buf, err)
	}
	if !strings.Contains(s.logs.String(), "tunnels_of_removed_users_closed=1") {
		t.Fatalf("log:\n%s", s.logs.String())
	}
}

// TestReloadChangesRoutes: a reload that adds a WebSocket inbound and
// moves VMess to another tag serves the new route at once; the site stays
// on every other path.
func TestReloadChangesRoutes(t *testing.T) {
	alice := uuid.NewString()
	s := startOps(t, map[string]string{"alice": alice}, false, false)
	b, _ := os.ReadFile(s.cfg)
	withWS := strings.Replace(string(b), `"inbounds": [`, `"inbounds": [
    {"tag": "v-ws", "protocol": "vless", "settings": {"clients": [{"id": "`+alice+`", "email": "alice"}], "decryption": "none"},
     "streamSettings": {"network": "ws", "wsSettings": {"path": "/fresh"}}},`, 1)
	if err := os.WriteFile(s.cfg, []byte(withWS), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.g.Reload(); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := ServerLinks(cfg, "127.0.0.1", s.g.Pin())
	if err != nil {
		t.Fatal(err)
	}
	echo := prototest.Echo(t)
	found := false
	for _, l := range ls {
		if l.Transport != "ws" {
			continue
		}
		found = true
		l.Port = uint16(s.g.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port())
		ccfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		outs, def, err := buildOutbounds(ccfg.Outbounds)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := outs[def].DialStream(ctx, echo)
		if err != nil {
			t.Fatal(err)
		}
		if err := prototest.Exchange(conn, 64<<10, 1); err != nil {
			t.Fatalf("over the route added by the reload: %v", err)
		}
		conn.Close()
	}
	if !found {
		t.Fatalf("no ws link among %+v", ls)
	}
}

// TestReloadSwapsCertificate: a reload that points server.tls at other
// files serves the new certificate on the next handshake; a tunnel opened
// before keeps flowing.
func TestReloadSwapsCertificate(t *testing.T) {
	alice := uuid.NewString()
	s := startOps(t, map[string]string{"alice": alice}, false, false)
	served := func() []byte {
		c, err := tls.Dial("tcp", s.g.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	before := served()
	echo := prototest.Echo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open, err := s.vless(t, alice).DialStream(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	certFile, keyFile := selfSignedFiles(t)
	b, _ := os.ReadFile(s.cfg)
	swapped := strings.Replace(string(b), `"source": "self-signed", "stateDir"`,
		`"source": "files", "certFile": "`+certFile+`", "keyFile": "`+keyFile+`", "stateDir"`, 1)
	if err := os.WriteFile(s.cfg, []byte(swapped), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.g.Reload(); err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(pemBytes)
	if after := served(); bytes.Equal(after, before) || !bytes.Equal(after, block.Bytes) {
		t.Fatal("the reload did not put the new certificate in front")
	}
	if err := prototest.Exchange(open, 256<<10, 3); err != nil {
		t.Fatalf("a tunnel opened before the reload: %v", err)
	}
	if s.g.Pin() != "" {
		t.Fatalf("pin %q after swapping to files; links should carry none", s.g.Pin())
	}
}
