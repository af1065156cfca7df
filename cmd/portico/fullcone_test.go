package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/socks"
)

// The full-cone test's network, all from the documentation ranges
// (RFC 5737):
//
//	client ns            server ns                      remote A ns
//	192.0.2.2 ──veth── 192.0.2.1   br0 198.51.100.1 ──veth── 198.51.100.2
//	                                               └─veth── 198.51.100.3
//	                                                    remote B ns
//
// The server has one address towards the remotes, as a NAT has one public
// address, and does not forward: the client's datagrams reach A and B only
// through Portico. A and B share a link, so A can tell B what it saw.
var (
	serverIP = netip.MustParseAddr("192.0.2.1")
	remoteA  = netip.MustParseAddrPort("198.51.100.2:7000")
	remoteB  = netip.MustParseAddrPort("198.51.100.3:7001")
)

// netnsTopology makes the four namespaces and their links; they are
// deleted (with their veths) at cleanup. It skips — or fails under
// PORTICO_REQUIRE_PEERS=1 — where the machine forbids namespaces.
func netnsTopology(t *testing.T) (client, server, a, b string) {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable("network namespaces: no ip command (iproute2): %v", err)
	}
	prefix := fmt.Sprintf("pc%d", os.Getpid()%100000)
	client, server, a, b = prefix+"c", prefix+"s", prefix+"a", prefix+"b"
	if out, err := exec.Command("ip", "netns", "add", client).CombinedOutput(); err != nil {
		unavailable("network namespaces are not allowed here (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		for _, ns := range []string{client, server, a, b} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{server, a, b} {
		run("ip", "netns", "add", ns)
	}
	veth := func(ns1, if1, ns2, if2 string) {
		run("ip", "link", "add", if1, "netns", ns1, "type", "veth", "peer", "name", if2, "netns", ns2)
		run("ip", "-n", ns1, "link", "set", if1, "up")
		run("ip", "-n", ns2, "link", "set", if2, "up")
	}
	veth(client, "eth0", server, "toclient")
	run("ip", "-n", client, "addr", "add", "192.0.2.2/24", "dev", "eth0")
	run("ip", "-n", server, "addr", "add", "192.0.2.1/24", "dev", "toclient")
	run("ip", "-n", server, "link", "add", "br0", "type", "bridge")
	run("ip", "-n", server, "link", "set", "br0", "up")
	run("ip", "-n", server, "addr", "add", "198.51.100.1/24", "dev", "br0")
	for _, r := range []struct{ ns, port, addr string }{{a, "toa", "198.51.100.2/24"}, {b, "tob", "198.51.100.3/24"}} {
		veth(r.ns, "eth0", server, r.port)
		run("ip", "-n", server, "link", "set", r.port, "master", "br0")
		run("ip", "-n", r.ns, "addr", "add", r.addr, "dev", "eth0")
	}
	for _, ns := range []string{client, server, a, b} {
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	return client, server, a, b
}

// inNetns runs fn on an OS thread that has joined namespace ns; sockets
// fn opens stay in ns after it returns and may be used from anywhere. The
// thread is never unlocked, so it dies with its goroutine instead of
// going back to the scheduler in the wrong namespace.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func listenUDPIn(t *testing.T, ns string, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := inNetns(ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(at))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// natResult is what one run of the RFC 5780-style checks found.
type natResult struct {
	mappedA, mappedB netip.AddrPort // the client's address as A and B saw it
	strangerReached  bool           // B, never contacted, reached the client
	strangerSource   protocols.Addr // the source the client was told
}

func (r natResult) fullCone() bool {
	return r.strangerReached && r.strangerSource == protocols.AddrFromAddrPort(remoteB) && r.mappedB == r.mappedA
}

// probeNAT runs the checks once: the client (through SOCKS5 at proxy, in
// namespace client) sends to A; A answers with the address it saw and
// tells B; B sends to that address; if the client receives it, it answers
// B, and B reports the address it saw.
func probeNAT(t *testing.T, client, a, b string, proxy string) natResult {
	t.Helper()
	var res natResult
	connA, connB := listenUDPIn(t, a, remoteA), listenUDPIn(t, b, remoteB)

	// Remote A: answer each datagram with the address it came from, and
	// tell B about it.
	sawA := make(chan netip.AddrPort, 4)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := connA.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) != "hello A" {
				continue
			}
			select {
			case sawA <- from:
			default:
			}
			connA.WriteToUDPAddrPort([]byte("seen "+from.String()), from)
			connA.WriteToUDPAddrPort([]byte("poke "+from.String()), remoteB) // over the shared link
		}
	}()
	// Remote B: on A's poke, send to the address A saw; report what the
	// client's answer came from.
	sawB := make(chan netip.AddrPort, 4)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := connB.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			switch {
			case strings.HasPrefix(msg, "poke "):
				if to, err := netip.ParseAddrPort(strings.TrimPrefix(msg, "poke ")); err == nil {
					connB.WriteToUDPAddrPort([]byte("from B"), to)
				}
			case msg == "answer B":
				select {
				case sawB <- from:
				default:
				}
			}
		}
	}()

	// The application on the client host.
	var uc *socks.UDPClient
	var ctl net.Conn
	err := inNetns(client, func() (err error) {
		ctl, err = net.DialTimeout("tcp", proxy, 5*time.Second)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		uc, err = socks.DialUDP(ctx, ctl, "", "")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	defer uc.Close()
	type dgram struct {
		msg  string
		from protocols.Addr
	}
	in := make(chan dgram, 16)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := uc.ReadPacket(buf)
			if err != nil {
				close(in)
				return
			}
			in <- dgram{string(buf[:n]), from}
		}
	}()

	// 1. Client -> A; A's answer says how the client was mapped.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	uc.WritePacket([]byte("hello A"), protocols.AddrFromAddrPort(remoteA))
waitA:
	for {
		select {
		case d, ok := <-in:
			if !ok {
				t.Fatal("SOCKS5 association ended")
			}
			if strings.HasPrefix(d.msg, "seen ") {
				break waitA
			}
		case <-tick.C:
			uc.WritePacket([]byte("hello A"), protocols.AddrFromAddrPort(remoteA))
		case <-deadline:
			t.Fatal("no answer from remote A through the tunnel")
		}
	}
	res.mappedA = <-sawA

	// 2. B's datagram to the mapped address, which B never heard from.
	wait := time.After(3 * time.Second)
waitB:
	for {
		select {
		case d, ok := <-in:
			if !ok {
				break waitB
			}
			if d.msg == "from B" {
				res.strangerReached, res.strangerSource = true, d.from
				break waitB
			}
		case <-wait:
			break waitB
		}
	}
	if !res.strangerReached {
		return res
	}
	// 3. The client answers B; B reports the mapping it saw.
	uc.WritePacket([]byte("answer B"), res.strangerSource)
	select {
	case res.mappedB = <-sawB:
	case <-time.After(5 * time.Second):
		t.Fatal("B did not receive the client's answer")
	}
	return res
}

// TestFullConeNetns checks Portico's NAT the real way: a client host, the
// server host and two remote hosts in network namespaces, a VLESS v1
// (udp_multi) tunnel from a `portico client` to a `portico run`, and the
// RFC 5780 questions — does a remote that never heard from the client
// reach it through the address another remote saw (filtering), and does
// every remote see the same address (mapping)? With udp.nat full-cone both
// hold; with symmetric the same checks must say "not full cone", which is
// how this test shows it can fail.
func TestFullConeNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two portico processes in namespaces")
	}
	client, server, a, b := netnsTopology(t)
	for _, nat := range []string{"full-cone", "symmetric"} {
		t.Run(nat, func(t *testing.T) {
			dir := t.TempDir()
			id := uuid.NewString()
			cfg := fmt.Sprintf(`{
  "server": {"listen": "%s:443", "tls": {"source": "self-signed", "stateDir": %q}},
  "inbounds": [{"tag": "vless", "protocol": "vless", "settings": {"clients": [{"id": %q, "email": "netns"}], "decryption": "none"}}],
  "udp": {"nat": %q}
}`, serverIP, dir, id, nat)
			cfgFile := filepath.Join(dir, "server.json")
			if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			srv := startIn(t, server, "run", "-c", cfgFile, "-drain", "1s")
			srv.waitLine(t, regexp.MustCompile(`msg=serving listen=(\S+)`))
			out, err := exec.Command(porticoBin, "links", "-c", cfgFile).CombinedOutput()
			if err != nil {
				t.Fatalf("links: %v: %s", err, out)
			}
			var link string
			for _, l := range strings.Fields(string(out)) {
				if strings.HasPrefix(l, "vless://") && strings.Contains(l, "v=1") {
					link = l
				}
			}
			if link == "" {
				t.Fatalf("no VLESS v1 link in\n%s", out)
			}
			cl := startIn(t, client, "client", "-listen", "127.0.0.1:1080", link)
			proxy := cl.waitLine(t, localRe)

			res := probeNAT(t, client, a, b, proxy)
			t.Logf("%s: A saw %v; B reached the client: %v (as %v); B saw %v", nat, res.mappedA, res.strangerReached, res.strangerSource, res.mappedB)
			if res.mappedA.Addr() != netip.MustParseAddr("198.51.100.1") {
				t.Fatalf("A saw %v, want the server's address on A's link", res.mappedA)
			}
			if got, want := res.fullCone(), nat == "full-cone"; got != want {
				t.Fatalf("full cone = %v with udp.nat %s; want %v (%+v)", got, nat, want, res)
			}
		})
	}
}
