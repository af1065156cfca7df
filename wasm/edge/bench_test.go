package edge

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols/links"
)

// BenchmarkEdge compares, in one run, VLESS over WebSocket through the
// edge worker with the same path through a native Portico gateway:
//
//   - edge:   Portico client -> workerd (direct mode: WASM codec, connect()) -> target
//   - native: Portico client -> Portico gateway's VLESS WebSocket inbound -> target
//   - origin: Portico client -> workerd (origin mode) -> the same gateway -> target
//
// all on loopback, without TLS (the gateway runs tls.source "none", so
// neither side pays for TLS), with the same ?ed=2048 link form. For each
// path it moves the bulk (256 MiB, $PORTICO_EDGE_BENCH_MIB) up (client to
// a sink, at full speed: no window) and down (from a source), on 1 and on
// 4 parallel tunnels (the bulk split among them), three times, and reports the medians, the ratio
// edge/native and origin/native, and the workerd process's CPU time
// (utime+stime from /proc/PID/stat) per MiB. Then it opens 200 short
// tunnels one after another (a 1-byte echo each) through each workerd and
// reports its CPU time per tunnel and their median setup+echo time.
//
// Not part of `go test`: run it with
//
//	go test -run '^$' -bench Edge -benchtime 1x -timeout 15m ./wasm/edge
//
// The test process (client and gateway) and workerd share the machine's
// cores, so the figures are relative, not a capacity.
func BenchmarkEdge(b *testing.B) {
	workerdPath(b)
	if b.N > 1 {
		b.Skip("one measurement per run: use -benchtime 1x")
	}
	mib := 256
	if s := os.Getenv("PORTICO_EDGE_BENCH_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 4 {
			b.Fatalf("PORTICO_EDGE_BENCH_MIB=%q: want a number of MiB, at least 4", s)
		}
		mib = n
	}
	bulkSize := int64(mib) << 20
	const tunnels, reps = 200, 3
	tck := clockTicks(b)
	target := benchTarget(b)
	codecWasm(b) // built before the children of this process are listed

	// The native gateway: a VLESS WebSocket inbound without TLS.
	gcfg, err := gateway.ParseConfig([]byte(`{
  "server": {"listen": "127.0.0.1:0", "tls": {"source": "none"}},
  "inbounds": [{"tag": "vless-ws", "protocol": "vless", "settings": {"clients": [{"id": "` + testUUID + `"}], "decryption": "none"},
    "streamSettings": {"network": "ws", "wsSettings": {"path": "` + wsPath + `"}}}]
}`))
	if err != nil {
		b.Fatal(err)
	}
	g, err := gateway.New(gcfg, gateway.Options{Log: slog.New(slog.DiscardHandler), StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})

	type path struct {
		name string
		addr string // what the client dials
		pid  int    // the workerd serving it; 0 = none
	}
	before := childPIDs()
	direct := edgeWorker(b, directBindings())
	directPID := newWorkerd(b, before)
	before = childPIDs()
	origin := edgeWorker(b, map[string]string{"MODE": "origin", "ORIGIN": "http://" + g.Addr().String() + wsPath,
		"WS_PATH": wsPath, "DECOY": "static"})
	originPID := newWorkerd(b, before)
	paths := []path{{"edge", direct.Addr, directPID}, {"native", g.Addr().String(), 0}, {"origin", origin.Addr, originPID}}

	socks := map[string]string{}
	for _, p := range paths {
		l, err := links.Parse("vless://" + testUUID + "@" + p.addr + "?type=ws&security=none&encryption=none&path=" +
			strings.ReplaceAll(wsPath, "/", "%2F") + "%3Fed%3D2048#" + p.name)
		if err != nil {
			b.Fatal(err)
		}
		socks[p.name] = benchClient(b, l)
	}

	b.ResetTimer()
	report := func(v float64, unit string) {
		b.ReportMetric(v, unit)
	}
	var lines []string
	for _, dir := range []string{"up", "down"} {
		for _, streams := range []int{1, 4} {
			rate := map[string]float64{}
			for _, p := range paths {
				var mibps, cpu []float64
				for range reps {
					t0 := cpuTicks(b, p.pid)
					took := benchBulk(b, socks[p.name], target, dir, streams, bulkSize)
					t1 := cpuTicks(b, p.pid)
					mibps = append(mibps, float64(mib)/took.Seconds())
					cpu = append(cpu, float64(t1-t0)/float64(tck)*1000/float64(mib))
				}
				rate[p.name] = median(mibps)
				key := fmt.Sprintf("%s-%s-%dx", p.name, dir, streams)
				report(rate[p.name], key+"-MiB/s")
				line := fmt.Sprintf("%-6s %-4s %d tunnel(s): %6.1f MiB/s (runs %s)", p.name, dir, streams, rate[p.name], fmtRuns(mibps))
				if p.pid != 0 {
					report(median(cpu), key+"-workerd-cpu-ms/MiB")
					line += fmt.Sprintf(", workerd CPU %.2f ms/MiB", median(cpu))
				}
				lines = append(lines, line)
			}
			for _, name := range []string{"edge", "origin"} {
				r := rate[name] / rate["native"]
				report(r, fmt.Sprintf("%s/native-%s-%dx", name, dir, streams))
				lines = append(lines, fmt.Sprintf("       %s/native %s %d tunnel(s): %.2f", name, dir, streams, r))
			}
		}
	}
	for _, p := range paths {
		t0 := cpuTicks(b, p.pid)
		setup := benchShortTunnels(b, socks[p.name], target, tunnels)
		t1 := cpuTicks(b, p.pid)
		report(float64(setup.Microseconds())/1000, p.name+"-tunnel-ms")
		line := fmt.Sprintf("%-6s %d short tunnels (1-byte echo): median %.2f ms each", p.name, tunnels, float64(setup.Microseconds())/1000)
		if p.pid != 0 {
			per := float64(t1-t0) / float64(tck) * 1000 / tunnels
			report(per, p.name+"-workerd-cpu-ms/tunnel")
			line += fmt.Sprintf(", workerd CPU %.2f ms per tunnel (%d ticks of 1/%d s)", per, t1-t0, tck)
		}
		lines = append(lines, line)
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("bulk %d MiB per run, %d runs per figure (median), GOMAXPROCS %d, %d CPUs\n%s",
		mib, reps, runtime.GOMAXPROCS(0), runtime.NumCPU(), strings.Join(lines, "\n"))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtRuns(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return strings.Join(s, " ")
}

// clockTicks is CLK_TCK, the unit of /proc/PID/stat's times.
func clockTicks(tb testing.TB) int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		tb.Fatalf("getconf CLK_TCK: %q", out)
	}
	return n
}

// cpuTicks is utime+stime of process pid (0: none, 0 ticks).
func cpuTicks(tb testing.TB, pid int) int64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after "(comm)": state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(raw), ')')
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return u + s
}

// childPIDs lists this process's children (/proc/self/task/*/children).
func childPIDs() map[int]bool {
	out := map[int]bool{}
	files, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

// newWorkerd is the workerd child started since before.
func newWorkerd(tb testing.TB, before map[int]bool) int {
	tb.Helper()
	for pid := range childPIDs() {
		if before[pid] {
			continue
		}
		if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); strings.TrimSpace(string(comm)) == "workerd" {
			return pid
		}
	}
	tb.Fatal("cannot find the workerd process in /proc/self/task/*/children")
	return 0
}

// benchClient runs Portico's client for l (as startClient) and returns its
// SOCKS address.
func benchClient(tb testing.TB, l links.Link) string {
	tb.Helper()
	cfg, _, err := gateway.ClientConfigFromLink(l, "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g, err := gateway.New(cfg, gateway.Options{Log: slog.New(slog.DiscardHandler), StateDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		g.Shutdown(ctx)
	})
	return g.LocalAddrs()[0].String()
}

// benchTarget is the loopback target of the tunnels. A tunnel's first
// byte says what it wants: 'U' + 8-byte length: a sink that reads that many
// bytes and answers 'K' at the end; 'D' + length: a source that writes that
// many bytes; 'E': echo one byte.
func benchTarget(tb testing.TB) string {
	ln := nettest.Listen(tb)
	block := make([]byte, 64<<10)
	rand.Read(block)
	nettest.Serve(tb, ln, func(c net.Conn, _ func(net.Conn) func()) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		var op [9]byte
		if _, err := io.ReadFull(c, op[:1]); err != nil {
			return
		}
		if op[0] == 'E' {
			c.Write(op[:1])
			return
		}
		if _, err := io.ReadFull(c, op[1:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(op[1:]))
		switch op[0] {
		case 'U':
			if _, err := io.CopyN(io.Discard, c, n); err != nil {
				return
			}
			c.Write([]byte{'K'})
			io.Copy(io.Discard, c) // until the client closes
		case 'D':
			for n > 0 {
				m, err := c.Write(block[:min(int64(len(block)), n)])
				if err != nil {
					return
				}
				n -= int64(m)
			}
			io.Copy(io.Discard, c)
		}
	})
	return ln.Addr().String()
}

// benchBulk moves size bytes in direction dir ("up" or "down") over
// streams tunnels at once (the size split among them) through the SOCKS
// proxy, and returns the time from the first dial to the last byte.
func benchBulk(tb testing.TB, socks, target, dir string, streams int, size int64) time.Duration {
	tb.Helper()
	d, err := proxy.SOCKS5("tcp", socks, nil, proxy.Direct)
	if err != nil {
		tb.Fatal(err)
	}
	block := make([]byte, 64<<10)
	rand.Read(block)
	errs := make(chan error, streams)
	start := time.Now()
	for i := range streams {
		n := size / int64(streams)
		if i == 0 {
			n += size % int64(streams)
		}
		go func() {
			errs <- func() error {
				c, err := d.Dial("tcp", target)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				op := [9]byte{'U'}
				if dir == "down" {
					op[0] = 'D'
				}
				binary.BigEndian.PutUint64(op[1:], uint64(n))
				if _, err := c.Write(op[:]); err != nil {
					return err
				}
				if dir == "down" {
					if got, err := io.CopyN(io.Discard, c, n); err != nil {
						return fmt.Errorf("down: %d of %d bytes: %w", got, n, err)
					}
					return nil
				}
				for left := n; left > 0; {
					m, err := c.Write(block[:min(int64(len(block)), left)])
					if err != nil {
						return fmt.Errorf("up: %d of %d bytes: %w", n-left, n, err)
					}
					left -= int64(m)
				}
				var ack [1]byte
				if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 'K' {
					return fmt.Errorf("up: no acknowledgement of %d bytes: %q, %v", n, ack, err)
				}
				return nil
			}()
		}()
	}
	var all []error
	for range streams {
		all = append(all, <-errs)
	}
	took := time.Since(start)
	if err := errors.Join(all...); err != nil {
		tb.Fatal(err)
	}
	return took
}

// benchShortTunnels opens n tunnels one after another, each echoing one
// byte, and returns the median time from dial to echo.
func benchShortTunnels(tb testing.TB, socks, target string, n int) time.Duration {
	tb.Helper()
	d, err := proxy.SOCKS5("tcp", socks, nil, proxy.Direct)
	if err != nil {
		tb.Fatal(err)
	}
	var took []float64
	for i := range n {
		start := time.Now()
		c, err := d.Dial("tcp", target)
		if err != nil {
			tb.Fatalf("tunnel %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		if _, err := c.Write([]byte{'E'}); err != nil {
			tb.Fatalf("tunnel %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'E' {
			tb.Fatalf("tunnel %d: echo %q, %v", i, b, err)
		}
		took = append(took, float64(time.Since(start)))
		c.Close()
	}
	return time.Duration(median(took))
}
