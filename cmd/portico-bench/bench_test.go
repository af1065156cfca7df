package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchSmall runs the built tool as `make bench` does, with tiny sizes
// and three rows, and checks that results.json has every row with positive
// figures and that no child process outlives the run.
func TestBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs portico")
	}
	dir := t.TempDir()
	porticoBin, benchBin := filepath.Join(dir, "portico"), filepath.Join(dir, "portico-bench")
	for _, b := range [][2]string{{porticoBin, "../portico"}, {benchBin, "."}} {
		build := exec.Command("go", "build", "-o", b[0], b[1])
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	out := filepath.Join(dir, "out")
	rows := []string{"floor", "direct", "vless/tcp", "vmess/tcp"}
	cmd := exec.Command(benchBin, "-portico", porticoBin, "-out", out, "-bulk", "1MiB", "-repeat", "1",
		"-tunnels", "20", "-conc-tunnels", "40", "-concurrency", "8", "-idle", "20",
		"-rows", strings.Join(rows, ","), "-timeout", "60s")
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("portico-bench: %v\n%s", err, b)
	}
	t.Logf("portico-bench ran in %v", time.Since(start).Round(time.Millisecond))

	js, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatal(err)
	}
	if res.Partial || res.Error != "" {
		t.Fatalf("partial = %v, error = %q", res.Partial, res.Error)
	}
	if res.Settings.Rounds != 1 {
		t.Fatalf("rounds = %d, want the 1 of -repeat", res.Settings.Rounds)
	}
	if len(res.Rows) != len(rows) {
		t.Fatalf("%d rows, want %v", len(res.Rows), rows)
	}
	for i, r := range res.Rows {
		if r.Name != rows[i] || !r.Available || r.Error != "" {
			t.Fatalf("row %d = %q available=%v error=%q, want %q", i, r.Name, r.Available, r.Error, rows[i])
		}
		for _, k := range bulkKeys {
			if f := r.Bulk[k]; f == nil || f.Median <= 0 {
				t.Errorf("%s: bulk %s = %+v", r.Name, k, f)
			}
		}
		for _, tf := range []*tunnelFigure{r.Seq, r.Conc} {
			if tf == nil || tf.PerSec.Median <= 0 || tf.P50ms.Median <= 0 || tf.P99ms.Median < tf.P50ms.Median {
				t.Errorf("%s: tunnels %+v", r.Name, tf)
			}
		}
		if r.Idle == nil || r.Idle.Tunnels != 20 {
			t.Fatalf("%s: idle %+v", r.Name, r.Idle)
		}
		if (r.Kind == "portico" && (r.Idle.ClientRSSKiB <= 0 || r.Idle.ServerRSSKiB <= 0)) ||
			(r.Kind == "floor" && (r.Idle.ClientRSSKiB <= 0 || r.Idle.ServerRSSKiB <= 0)) {
			t.Errorf("%s: idle RSS %+v", r.Name, r.Idle)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil || !strings.Contains(string(md), "| vless/tcp |") || !strings.Contains(string(md), "Machine: ") {
		t.Fatalf("results.md (%v):\n%s", err, md)
	}

	// the setup server, the floor's two halves, then a server and a
	// client for each of the two protocol rows, all alive at once
	if len(res.Pids) < 7 {
		t.Fatalf("pids %v: want at least 7 children", res.Pids)
	}
	for _, pid := range res.Pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d still exists after the run (kill 0: %v)", pid, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "128MiB": 128 << 20, "64KiB": 64 << 10, "1MB": 1e6, "4096": 4096} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1MiB", "0"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) did not fail", in)
		}
	}
}

func TestMedian(t *testing.T) {
	var f figure
	for _, v := range []float64{5, 1, 3} {
		f.add(v)
	}
	if f.Median != 3 {
		t.Fatalf("median of 5, 1, 3 = %v", f.Median)
	}
	f.add(10)
	if f.Median != 4 {
		t.Fatalf("median of 5, 1, 3, 10 = %v", f.Median)
	}
}

func TestRoundFits(t *testing.T) {
	for _, c := range []struct {
		left, longest time.Duration
		want          bool
	}{
		{left: 5 * time.Minute, longest: 2 * time.Minute, want: true},
		{left: 2*time.Minute + 22*time.Second, longest: 2 * time.Minute, want: true},
		{left: 2*time.Minute + 21*time.Second, longest: 2 * time.Minute, want: false}, // 10 % and the reserve do not fit
		{left: 2 * time.Minute, longest: 2 * time.Minute, want: false},
		{left: 9 * time.Second, longest: 0, want: false}, // less than the reserve for writing results
		{left: -time.Second, longest: time.Second, want: false},
	} {
		if got := roundFits(c.left, c.longest); got != c.want {
			t.Errorf("roundFits(left %v, longest %v) = %v, want %v", c.left, c.longest, got, c.want)
		}
	}
}

func TestMarkdownSaysRoundsRun(t *testing.T) {
	res := &results{Settings: settings{BulkBytes: 1 << 20, Repeat: 3, Rounds: 2, TimeoutSecond: 540}}
	md := markdown(res)
	if !strings.Contains(md, "Each figure is the median of 2 runs") ||
		!strings.Contains(md, "not the 3 of -repeat: round 3 would not have ended within -timeout, 540 s") {
		t.Fatalf("results.md does not say that 2 of 3 rounds ran:\n%s", md)
	}
	res.Partial = true // cut by -timeout inside round 2: that, not a skipped round, is what it says
	if md := markdown(res); strings.Contains(md, "-repeat") || !strings.Contains(md, "PARTIAL") {
		t.Fatalf("results.md of a run cut short:\n%s", md)
	}
	res.Partial = false
	res.Settings.Rounds = 3
	if md := markdown(res); !strings.Contains(md, "median of 3 runs") || strings.Contains(md, "-repeat") {
		t.Fatalf("results.md of a whole run:\n%s", md)
	}
}

// TestBadFlags: a flag that cannot make a run is refused in one line
// before anything starts (no output directory, no children).
func TestBadFlags(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-timeout", "0"}, "-timeout 0s: must be positive"},
		{[]string{"-timeout", "-5s"}, "-timeout -5s: must be positive"},
		{[]string{"-repeat", "0"}, "must be positive"},
		{[]string{"-bulk", "lots"}, `-bulk: bad size "lots"`},
		{[]string{"-phases", "idle,speed"}, `unknown measurement "speed"`},
		{[]string{"-rows", "[x"}, "syntax error in pattern"},
	} {
		err := benchMain(append([]string{"-out", out}, c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused run made its output directory (%v)", err)
	}
}
