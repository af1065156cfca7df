package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Soak figures (issue #9): tunnels held at once, rounds, and the range of
// bytes each tunnel moves each way.
const (
	soakTunnels = 2000
	soakRounds  = 3
	soakMinSize = 64 << 10
	soakMaxSize = 1 << 20
	// soakRoundLimit bounds one round; soakGoroutineSlack is how far above
	// the baseline the goroutine count may stay once everything is closed:
	// runtime and net/http helpers started lazily on first use (the
	// finalizer and cleanup goroutines, a timer for idle HTTP/2 pings, the
	// DNS-less resolver is not used) that are not per tunnel. A leak of
	// even one goroutine per tunnel would be thousands.
	soakRoundLimit     = 2 * time.Minute
	soakGoroutineSlack = 10
)

// TestSoak holds 2,000 tunnels at once, spread over every protocol and
// transport of the embedded default, each moving 64 KiB to 1 MiB of
// checksummed data each way through an echo, for three rounds; it reports
// tunnels/s, bytes, errors (must be 0), peak RSS and the goroutines before
// and after (back to the baseline). Run it with `make soak`.
func TestSoak(t *testing.T) {
	if os.Getenv("PORTICO_SOAK") != "1" {
		t.Skip("set PORTICO_SOAK=1 or run make soak")
	}
	raiseNoFile(t, 64<<10)
	echo := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	st, g, logs := startServerGateway(t)
	ls, err := ServerLinks(st.DefaultConfig(g.Addr().String()), "127.0.0.1", g.Pin())
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 20 {
		t.Fatalf("%d links, want 20", len(ls))
	}
	runtime.GC()
	cold := runtime.NumGoroutine()

	type client struct {
		name string
		d    tunnel.Dialer
	}
	var clients []client
	closeClients := func() {
		for _, c := range clients {
			if cl, ok := c.d.(interface{ Close() error }); ok {
				cl.Close()
			}
		}
		clients = nil
	}
	defer closeClients()
	for _, l := range ls {
		cfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		outs, def, err := buildOutbounds(cfg.Outbounds)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, client{l.Name, outs[def]})
	}

	// Warm up: one tunnel per link, so that the clients' shared carriers
	// (a QUIC connection, HTTP/2 connections for gRPC) and the server's
	// side of them exist before the baseline is taken. They are per
	// client, not per tunnel.
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := c.d.DialStream(ctx, echo)
		cancel()
		if err != nil {
			t.Fatalf("warm-up %s: %v", c.name, err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := faultExchangeEnd(conn, 64<<10); err != nil {
			t.Fatalf("warm-up %s: %v", c.name, err)
		}
	}
	baseline := settledGoroutines(g, 0)
	warmUp, _ := g.Router().Stats().User("default").Load()

	var (
		totalBytes atomic.Int64 // each way
		tunnels    atomic.Int64
		errCount   atomic.Int64
		errMu      sync.Mutex
		errSamples = map[string][]string{} // by link
		peakActive int64
	)
	start := time.Now()
	for round := 0; round < soakRounds; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), soakRoundLimit)
		var (
			opened  sync.WaitGroup // every tunnel has moved its first chunk (or failed)
			barrier = make(chan struct{})
			wg      sync.WaitGroup
		)
		roundStart := time.Now()
		for i := 0; i < soakTunnels; i++ {
			c := clients[i%len(clients)]
			seed := uint64(round)<<32 | uint64(i)
			size := soakMinSize + int(mrand.New(mrand.NewPCG(seed, 1)).Int64N(soakMaxSize-soakMinSize+1))
			opened.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := soakTunnel(ctx, c.d, echo, seed, size, opened.Done, barrier)
				totalBytes.Add(n)
				if err != nil {
					errCount.Add(1)
					errMu.Lock()
					if len(errSamples[c.name]) < 3 {
						errSamples[c.name] = append(errSamples[c.name], err.Error())
					}
					errMu.Unlock()
					return
				}
				tunnels.Add(1)
			}()
		}
		// Hold every tunnel open at once before the bulk data moves.
		openedCh := make(chan struct{})
		go func() { opened.Wait(); close(openedCh) }()
		select {
		case <-openedCh:
		case <-ctx.Done():
		}
		active := g.Router().Active()
		peakActive = max(peakActive, active)
		t.Logf("round %d: %d tunnels open at once on the server after %v", round+1, active, time.Since(roundStart).Round(time.Millisecond))
		close(barrier)
		wg.Wait()
		cancel()
		t.Logf("round %d: done in %v, errors so far %d", round+1, time.Since(roundStart).Round(time.Millisecond), errCount.Load())
		if errCount.Load() > 0 {
			break
		}
	}
	elapsed := time.Since(start)

	// Every tunnel is closed. AnyTLS clients keep the sessions their
	// streams ran on idle in their pools (up to 60 s, checked every 30 s,
	// as the spec's clients do): close those pools, and the goroutines
	// return to the warm baseline.
	pooled := settledGoroutines(g, baseline+soakGoroutineSlack)
	for _, c := range clients {
		if strings.HasPrefix(c.name, "portico-anytls") {
			c.d.(interface{ Close() error }).Close()
		}
	}
	after := settledGoroutines(g, baseline+soakGoroutineSlack)
	var stacks []byte
	if after > baseline+soakGoroutineSlack {
		stacks = make([]byte, 8<<20)
		stacks = stacks[:runtime.Stack(stacks, true)]
	}
	rss := peakRSS(t)
	up, down := g.Router().Stats().User("default").Load()
	up, down = up-warmUp, down-warmUp
	closeClients()
	afterClients := settledGoroutines(g, cold+soakGoroutineSlack)
	t.Logf("goroutines: %d with the server alone; %d with every client's carrier warm (baseline); "+
		"%d once the soak's tunnels closed (AnyTLS pools holding idle sessions); %d after closing the AnyTLS pools; %d after closing every client",
		cold, baseline, pooled, after, afterClients)
	rate := float64(tunnels.Load()) / elapsed.Seconds()
	t.Logf("soak: %d tunnels (%d at once x %d rounds) in %v: %.0f tunnels/s, %d bytes each way (%.1f MiB/s each way), "+
		"server counted %d up %d down, errors %d, peak RSS %d MiB, goroutines %d before, %d after close",
		tunnels.Load(), soakTunnels, soakRounds, elapsed.Round(time.Millisecond), rate, totalBytes.Load(),
		float64(totalBytes.Load())/elapsed.Seconds()/(1<<20), up, down, errCount.Load(), rss>>20, baseline, after)
	t.Logf("| tunnels | at once | tunnels/s | bytes each way | errors | peak RSS | goroutines before / after close |")
	t.Logf("| %d | %d (peak on server %d) | %.0f | %d (%.2f GiB) | %d | %d MiB | %d / %d |",
		tunnels.Load(), soakTunnels, peakActive, rate, totalBytes.Load(), float64(totalBytes.Load())/(1<<30),
		errCount.Load(), rss>>20, baseline, after)

	if n := errCount.Load(); n != 0 {
		var b strings.Builder
		for name, errs := range errSamples {
			fmt.Fprintf(&b, "\n  %s: %s", name, strings.Join(errs, "; "))
		}
		t.Errorf("%d tunnels failed; samples:%s", n, b.String())
	}
	if peakActive != soakTunnels {
		t.Errorf("the server held at most %d tunnels at once, want %d", peakActive, soakTunnels)
	}
	if up != totalBytes.Load() || down != totalBytes.Load() {
		t.Errorf("the server counted %d bytes up and %d down, the clients moved %d each way", up, down, totalBytes.Load())
	}
	if after > baseline+soakGoroutineSlack {
		t.Errorf("%d goroutines after close, baseline %d (+%d allowed):\n%s", after, baseline, soakGoroutineSlack, stacks)
	}
	if n := strings.Count(logs.String(), "err="); n != 0 {
		t.Errorf("%d server log lines with an error", n)
	}
}

// soakTunnel opens one tunnel to echo, moves a first 4 KiB chunk and its
// echo, calls opened, waits for barrier, then moves size bytes each way
// (a random 64 KiB block per tunnel, each chunk stamped with its index)
// and checks them by SHA-256. It returns the bytes moved each way.
func soakTunnel(ctx context.Context, d tunnel.Dialer, echo protocols.Addr, seed uint64, size int,
	opened func(), barrier <-chan struct{}) (int64, error) {
	openedOnce := sync.OnceFunc(opened)
	defer openedOnce()
	conn, err := d.DialStream(ctx, echo)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	block := make([]byte, 64<<10)
	mrand.NewChaCha8([32]byte(binary.LittleEndian.AppendUint64(make([]byte, 24), seed))).Read(block)
	const first = 4 << 10
	if _, err := conn.Write(block[:first]); err != nil {
		return 0, fmt.Errorf("first chunk: write: %w", err)
	}
	back := make([]byte, len(block))
	if _, err := io.ReadFull(conn, back[:first]); err != nil {
		return 0, fmt.Errorf("first chunk: read: %w", err)
	}
	if !bytes.Equal(back[:first], block[:first]) {
		return 0, errors.New("first chunk: echo differs")
	}
	moved := int64(first)
	openedOnce()
	select {
	case <-barrier:
	case <-ctx.Done():
		return moved, fmt.Errorf("waiting for the other tunnels: %w", ctx.Err())
	}

	sent, got := sha256.New(), sha256.New()
	werr := make(chan error, 1)
	go func() {
		for i, left := uint64(0), size; left > 0; i++ {
			n := min(left, len(block))
			binary.LittleEndian.PutUint64(block, i)
			sent.Write(block[:n])
			if _, err := conn.Write(block[:n]); err != nil {
				werr <- fmt.Errorf("write: %w", err)
				return
			}
			left -= n
		}
		werr <- nil
	}()
	n, rerr := io.CopyN(got, conn, int64(size))
	if rerr != nil {
		conn.Close()
	}
	if err := <-werr; err != nil {
		return moved, err
	}
	if rerr != nil {
		return moved + n, fmt.Errorf("read back after %d of %d bytes: %w", n, size, rerr)
	}
	moved += n
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return moved, fmt.Errorf("SHA-256 of the %d bytes echoed differs", size)
	}
	if err := faultEnd(conn); err != nil {
		return moved, err
	}
	return moved, nil
}

// settledGoroutines waits (10 s at most) for the server to have no tunnel
// and the goroutine count to be at most want, and returns the count.
func settledGoroutines(g *Gateway, want int) int {
	for deadline := time.Now().Add(10 * time.Second); g.Router().Active() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); n > want && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(50 * time.Millisecond)
		runtime.GC()
	}
	return n
}

// raiseNoFile lifts the soft limit on open files to want (or the hard
// limit): each tunnel holds four descriptors in this one process.
func raiseNoFile(t *testing.T, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raise RLIMIT_NOFILE to %d: %v", lim.Cur, err)
	}
	if lim.Cur < 5*soakTunnels {
		t.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d the soak needs", lim.Max, 5*soakTunnels)
	}
}

// peakRSS is VmHWM of this process.
func peakRSS(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Logf("peak RSS: %v", err)
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}
