package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/admin"
	"github.com/portico-gw/portico/internal/prototest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/transports/rawtls"
)

// TestOperations is an operator's day with a real `portico run -c`: users
// added and listed with `portico user`, counters read with `portico stats`,
// 50 tunnels moving checksummed data across a SIGHUP that adds and removes
// users (0 errors), a broken config refused on SIGHUP while the old one
// runs on, and `portico reload`.
func TestOperations(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	cfgFile := filepath.Join(dir, "config.json")
	alice, bob := uuid.NewString(), uuid.NewString()
	write := func(users ...[2]string) {
		var clients []string
		for _, u := range users {
			clients = append(clients, fmt.Sprintf(`{"id": %q, "email": %q}`, u[1], u[0]))
		}
		body := fmt.Sprintf(`{
  "server": {"listen": "127.0.0.1:0", "tls": {"source": "self-signed", "stateDir": %q}},
  "admin": {"listen": "unix:%s"},
  "inbounds": [{"tag": "v", "protocol": "vless", "settings": {"clients": [%s], "decryption": "none"}}]
}`, dir, sock, strings.Join(clients, ", "))
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write([2]string{"alice", alice}, [2]string{"bob", bob})
	srv := start(t, "run", "-c", cfgFile, "-drain", "1s")
	addr := srv.waitLine(t, regexp.MustCompile(`msg=serving listen=(\S+)`))
	srv.waitLine(t, regexp.MustCompile(`msg="admin API" listen=(\S+)`))

	cli := func(args ...string) (string, error) {
		out, err := exec.Command(porticoBin, append(args, "-admin", "unix:"+sock)...).CombinedOutput()
		return string(out), err
	}
	out, err := cli("user", "add", "-inbound", "v", "-email", "carol")
	if err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	var carol admin.User
	if err := json.Unmarshal([]byte(out), &carol); err != nil || carol.ID == "" {
		t.Fatalf("user add printed %q (%v)", out, err)
	}
	if out, err := cli("user", "list", "-inbound", "v"); err != nil || !strings.Contains(out, "carol") || !strings.Contains(out, "alice") {
		t.Fatalf("user list: %v\n%s", err, out)
	}

	linksOut, err := exec.Command(porticoBin, "links", "-c", cfgFile).CombinedOutput()
	m := regexp.MustCompile(`pin=([0-9a-f]{64})`).FindStringSubmatch(string(linksOut))
	if err != nil || m == nil {
		t.Fatalf("links: %v\n%s", err, linksOut)
	}
	pin := m[1]
	client := func(id string) *gatewayClient { return newGatewayClient(t, addr, pin, id) }
	echo := prototest.Echo(t)
	if err := client(carol.ID).exchange(echo, 1000); err != nil {
		t.Fatalf("carol, added by the API: %v", err)
	}

	// 50 tunnels of alice across a SIGHUP that removes bob and adds dan.
	const tunnels = 50
	var wg sync.WaitGroup
	errs := make(chan error, tunnels)
	ac := client(alice)
	for i := 0; i < tunnels; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ac.slowExchange(echo, 1<<20)
		}()
	}
	time.Sleep(300 * time.Millisecond)
	dan := uuid.NewString()
	write([2]string{"alice", alice}, [2]string{"dan", dan})
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	srv.waitLine(t, regexp.MustCompile(`msg="config (reloaded)"`))
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a tunnel across the SIGHUP: %v", err)
		}
	}
	if err := client(dan).exchange(echo, 1000); err != nil {
		t.Fatalf("dan, added by the reload: %v", err)
	}

	// A broken config: refused, logged, the running one stays.
	os.WriteFile(cfgFile, []byte(`{"inbounds": [`), 0o600)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLine(t, regexp.MustCompile(`msg="(reload failed); the running config stays"`))
	if err := client(dan).exchange(echo, 1000); err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}
	if out, err := cli("reload"); err == nil || !strings.Contains(out, "400") {
		t.Fatalf("portico reload with a broken config: %v\n%s", err, out)
	}
	write([2]string{"alice", alice})
	if out, err := cli("reload"); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("portico reload: %v\n%s", err, out)
	}

	out, err = cli("stats", "-json")
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	var st admin.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats printed %q: %v", out, err)
	}
	if a := st.Users["alice"]; a.Total != tunnels || a.Up != tunnels<<20 || a.Down != tunnels<<20 {
		t.Fatalf("alice's counters %+v; want %d tunnels, %d bytes each way", a, tunnels, tunnels<<20)
	}
}

// gatewayClient dials the test's server as one VLESS user.
type gatewayClient struct{ c *vlessclient.Client }

func newGatewayClient(t *testing.T, addr, pin, id string) *gatewayClient {
	t.Helper()
	tlsCfg, err := rawtls.ClientConfig("", pin, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(id), Carrier: &rawtls.Dialer{Address: addr, TLS: tlsCfg}})
	if err != nil {
		t.Fatal(err)
	}
	return &gatewayClient{c}
}

// exchange moves size checksummed bytes through the echo at dst.
func (g *gatewayClient) exchange(dst protocols.Addr, size int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := g.c.DialStream(ctx, dst)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return prototest.Exchange(conn, size, uint64(size))
}

// slowExchange is exchange in 4 KiB writes with pauses (about a second
// for 1 MiB), so that the tunnel is mid-stream when the test acts.
func (g *gatewayClient) slowExchange(dst protocols.Addr, size int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := g.c.DialStream(ctx, dst)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	n := 0
	return prototest.ExchangeWith(conn, size, 4<<10, func(p []byte) {
		for i := range p {
			p[i] = byte(n + i)
		}
		n += len(p)
		if n%(128<<10) == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	})
}
