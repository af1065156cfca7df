package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portico-gw/portico/protocols/links"
)

// rowSpec is one row of the tables.
type rowSpec struct {
	Name      string // "floor", "direct", "vless/tcp", "v2ray vmess/ws", …
	Kind      string // "floor", "floor-nohop", "direct", "portico", "v2ray"
	Protocol  string // "vless", "vless-v1", "vmess", "anytls"
	Transport string // "tcp" (raw TLS), "ws", "httpupgrade", "grpc", "quic"
}

// figure is a median and the runs it came from.
type figure struct {
	Median float64   `json:"median"`
	Runs   []float64 `json:"runs"`
}

func (f *figure) add(v float64) {
	f.Runs = append(f.Runs, v)
	s := slices.Clone(f.Runs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		f.Median = s[len(s)/2]
	} else {
		f.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
}

// tunnelFigure is a tunnels/s test's medians over the runs.
type tunnelFigure struct {
	Tunnels  int    `json:"tunnels_per_run"`
	PerSec   figure `json:"per_s"`
	P50ms    figure `json:"p50_ms"`
	P99ms    figure `json:"p99_ms"`
	CPUus    figure `json:"cpu_us_per_tunnel"` // CPU of the row's processes together per tunnel
	Failures int    `json:"failures"`          // over all runs
}

func (t *tunnelFigure) add(r tunnelResult) {
	if r.CPUus > 0 {
		t.CPUus.add(r.CPUus)
	}
	t.PerSec.add(r.PerSec)
	t.P50ms.add(r.P50ms)
	t.P99ms.add(r.P99ms)
	t.Failures += r.Failures
}

// idleResult is the memory of n idle tunnels.
type idleResult struct {
	Tunnels      int    `json:"tunnels"`
	Failed       int    `json:"failed"`
	ClientRSSKiB int64  `json:"client_rss_kib,omitempty"` // 0: no client process (floor, direct)
	ServerRSSKiB int64  `json:"server_rss_kib,omitempty"` // 0: no server process (direct)
	Note         string `json:"note,omitempty"`           // why fewer than asked are open
}

// rowResult is everything measured for one row.
type rowResult struct {
	Name       string             `json:"name"`
	Kind       string             `json:"kind"`
	Protocol   string             `json:"protocol,omitempty"`
	Transport  string             `json:"transport,omitempty"`
	Available  bool               `json:"available"`
	Error      string             `json:"error,omitempty"`
	Bulk       map[string]*figure `json:"bulk_mb_s,omitempty"`          // down1, down4, up1, up4: MB/s (10^6 bytes/s)
	BulkCPU    map[string]*figure `json:"bulk_cpu_ms_per_mb,omitempty"` // CPU of the row's processes together per MB moved
	BulkFailed int                `json:"bulk_failed,omitempty"`        // failed bulk runs (each figure is the median of the others)
	Seq        *tunnelFigure      `json:"tunnels_sequential,omitempty"`
	Conc       *tunnelFigure      `json:"tunnels_concurrent,omitempty"`
	Idle       *idleResult        `json:"idle,omitempty"`
	Seconds    float64            `json:"seconds"`
}

// machine describes where the run happened.
type machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	Portico   string `json:"portico_go_version,omitempty"`
	Revision  string `json:"portico_revision,omitempty"` // from the binary's build info
	V2Ray     string `json:"v2ray_version,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Date      string `json:"date"`
}

// results is results.json.
type results struct {
	Machine  machine      `json:"machine"`
	Settings settings     `json:"settings"`
	Partial  bool         `json:"partial"`
	Error    string       `json:"error,omitempty"`
	Seconds  float64      `json:"seconds"`
	Rows     []*rowResult `json:"rows"`
	Pids     []int        `json:"pids"` // every child process the run started (all killed at the end)
}

type settings struct {
	BulkBytes     int64 `json:"bulk_bytes"`
	Repeat        int   `json:"repeat"`
	Rounds        int   `json:"rounds"` // rounds run: fewer than Repeat when the next would not have ended before -timeout
	SeqTunnels    int   `json:"sequential_tunnels"`
	ConcTunnels   int   `json:"concurrent_tunnels"`
	Concurrency   int   `json:"concurrency"`
	IdleTunnels   int   `json:"idle_tunnels"`
	TimeoutSecond int   `json:"timeout_s"`
}

var porticoProtocols = []string{"vless", "vless-v1", "vmess", "anytls"}
var porticoTransports = []string{"tcp", "ws", "httpupgrade", "grpc", "quic"}

// allRows lists every row in table order.
func allRows() []rowSpec {
	rows := []rowSpec{{Name: "floor", Kind: "floor"}, {Name: "floor-nohop", Kind: "floor-nohop"}, {Name: "direct", Kind: "direct"}}
	for _, p := range porticoProtocols {
		for _, t := range porticoTransports {
			if p == "vless-v1" && t != "tcp" {
				continue
			}
			rows = append(rows, rowSpec{Name: p + "/" + t, Kind: "portico", Protocol: p, Transport: t})
		}
	}
	for _, p := range []string{"vless", "vmess"} {
		for _, t := range []string{"tcp", "ws"} {
			rows = append(rows, rowSpec{Name: "v2ray " + p + "/" + t, Kind: "v2ray", Protocol: p, Transport: t})
		}
	}
	return rows
}

func selectRows(patterns []string) []rowSpec {
	all := allRows()
	if len(patterns) == 0 {
		return all
	}
	var out []rowSpec
	for _, r := range all {
		for _, p := range patterns {
			if ok, _ := path.Match(p, r.Name); ok || p == r.Name {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// run is the whole bench: it always kills its children and writes what it
// has, also when ctx ends early.
func run(ctx context.Context, o options) (err error) {
	begin := time.Now()
	if err := os.MkdirAll(filepath.Join(o.out, "logs"), 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "portico-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cs := newChildren()
	res := &results{
		Machine: describeMachine(o),
		Settings: settings{BulkBytes: o.bulk, Repeat: o.repeat, SeqTunnels: o.seq, ConcTunnels: o.concTotal,
			Concurrency: o.concurrency, IdleTunnels: o.idle, TimeoutSecond: int(o.timeout.Seconds())},
	}
	defer func() {
		cs.killAll()
		res.Pids = cs.pids()
		res.Seconds = time.Since(begin).Seconds()
		if ctx.Err() != nil {
			res.Partial = true
			if err == nil {
				err = fmt.Errorf("stopped early (%v); partial results written", context.Cause(ctx))
			}
		}
		if err != nil {
			res.Error = err.Error()
		}
		if werr := writeResults(o.out, res); werr != nil && err == nil {
			err = werr
		}
		fmt.Fprintf(os.Stderr, "portico-bench: %.0f s; results in %s\n", res.Seconds, o.out)
	}()

	specs := selectRows(o.rows)
	if len(specs) == 0 {
		return errors.New("-rows matches no row")
	}
	for _, s := range specs {
		res.Rows = append(res.Rows, &rowResult{Name: s.Name, Kind: s.Kind, Protocol: s.Protocol, Transport: s.Transport})
	}

	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sinkLn.Close()
	go sink(sinkLn)
	sinkAddr := sinkLn.Addr().String()

	env := &benchEnv{o: o, cs: cs, work: work, sinkAddr: sinkAddr, logDir: filepath.Join(o.out, "logs")}
	needPortico := slices.ContainsFunc(specs, func(s rowSpec) bool { return s.Kind == "portico" })
	if needPortico {
		if err := env.porticoLinks(ctx); err != nil {
			return fmt.Errorf("portico: %w", err)
		}
	}
	// Every row's processes start once and stay for the whole run. First,
	// on each row's fresh processes, the idle tunnels; then the rounds: one
	// run of every other measurement for every row per round, so that a
	// slow spell of this shared machine falls on every row alike instead of
	// on the few measured during it.
	setups := make([]*rowSetup, len(specs))
	for i, s := range specs {
		if ctx.Err() != nil {
			break
		}
		r := res.Rows[i]
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "portico-bench: %-22s start", s.Name)
		st, rerr := env.setupRow(ctx, s)
		if rerr == nil {
			r.Available = true
			setups[i] = st
			rerr = warmUp(ctx, st.dial)
			if rerr == nil && o.phases["idle"] {
				fmt.Fprint(os.Stderr, ", idle")
				rerr = measureIdle(ctx, o, st.dial, st.clientPID(), st.serverPID(), r)
			}
		}
		r.Seconds += time.Since(t0).Seconds()
		env.rowFailed(ctx, st, r, rerr)
		if rerr != nil {
			setups[i] = nil
		}
		fmt.Fprintf(os.Stderr, " %5.1f s %s\n", time.Since(t0).Seconds(), r.Error)
		if err := writeResults(o.out, res); err != nil { // progress, in case of a crash
			return err
		}
	}
	deadline, _ := ctx.Deadline()
	var longestRound time.Duration
	for round := 1; round <= o.repeat && (o.phases["tunnels"] || o.phases["bulk"]); round++ {
		if round > 1 && !roundFits(time.Until(deadline), longestRound) {
			fmt.Fprintf(os.Stderr, "portico-bench: rounds %d-%d skipped: the longest round took %.0f s and %.0f s of -timeout are left\n",
				round, o.repeat, longestRound.Seconds(), time.Until(deadline).Seconds())
			break
		}
		roundStart := time.Now()
		res.Settings.Rounds = round
		for i, s := range specs {
			st := setups[i]
			if st == nil || ctx.Err() != nil {
				continue
			}
			r := res.Rows[i]
			t0 := time.Now()
			fmt.Fprintf(os.Stderr, "portico-bench: round %d/%d %-22s", round, o.repeat, s.Name)
			var rerr error
			if o.phases["tunnels"] {
				rerr = measureTunnels(ctx, o, st, r)
			}
			if rerr == nil && o.phases["bulk"] {
				rerr = measureBulk(ctx, o, st, r)
			}
			r.Seconds += time.Since(t0).Seconds()
			env.rowFailed(ctx, st, r, rerr)
			if rerr != nil && !errors.Is(rerr, errBulkRun) {
				setups[i] = nil
			}
			fmt.Fprintf(os.Stderr, " %5.1f s %s\n", time.Since(t0).Seconds(), r.Error)
			if err := writeResults(o.out, res); err != nil {
				return err
			}
		}
		longestRound = max(longestRound, time.Since(roundStart))
	}
	for _, st := range setups {
		if st != nil {
			cs.kill(st.client)
			cs.kill(st.server)
		}
	}
	return nil
}

// roundEndReserve is the time kept, after the last round, for stopping
// the children and writing the results.
const roundEndReserve = 10 * time.Second

// roundFits says whether another round, taking up to a tenth longer than
// the longest so far (rounds vary with the machine's load), ends with
// roundEndReserve to spare in the time left: a run that would overrun its
// -timeout takes the medians of fewer rounds rather than lose the rows a
// cut-off round has not reached.
func roundFits(left, longest time.Duration) bool {
	return left >= longest+longest/10+roundEndReserve
}

// rowFailed records err on r; unless it is a failed bulk run (the row goes
// on), the row's processes are stopped.
func (e *benchEnv) rowFailed(ctx context.Context, st *rowSetup, r *rowResult, err error) {
	switch {
	case err == nil:
		return
	case errors.Is(err, errNA):
		r.Error = "n/a: " + strings.TrimPrefix(err.Error(), "n/a: ")
	case ctx.Err() != nil:
		r.Error = "stopped early: " + err.Error()
	case r.Error == "":
		r.Error = err.Error()
	}
	if st != nil && !errors.Is(err, errBulkRun) {
		e.cs.kill(st.client)
		e.cs.kill(st.server)
	}
}

// benchEnv is what the rows share.
type benchEnv struct {
	o        options
	cs       *children
	work     string
	logDir   string
	sinkAddr string
	state    string            // portico -state dir
	links    map[string]string // row name -> link
	v2cert   [2]string
}

// porticoLinks starts the embedded default once to create its state, and
// reads every share link with `portico links -state DIR`.
func (e *benchEnv) porticoLinks(ctx context.Context) error {
	if _, err := os.Stat(e.o.portico); err != nil {
		return err
	}
	e.state = filepath.Join(e.work, "portico-state")
	port, err := freePort()
	if err != nil {
		return err
	}
	srv, err := e.startPorticoServer(ctx, "portico-setup", port)
	if err != nil {
		return err
	}
	defer e.cs.kill(srv)
	out, err := exec.CommandContext(ctx, e.o.portico, "links", "-state", e.state).Output()
	if err != nil {
		return fmt.Errorf("portico links: %w", err)
	}
	e.links = map[string]string{}
	for _, l := range strings.Fields(string(out)) {
		parsed, err := links.Parse(l)
		if err != nil {
			return err
		}
		proto := parsed.Protocol
		if parsed.Version == 1 {
			proto += "-v1"
		}
		tr := parsed.Transport
		if tr == "" {
			tr = "tcp"
		}
		e.links[proto+"/"+tr] = l
	}
	return nil
}

// startPorticoServer starts `portico run` on the state's embedded default,
// listening on port (every row has its own, since rows' processes live at
// once).
func (e *benchEnv) startPorticoServer(ctx context.Context, label string, port int) (*child, error) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	srv, err := e.cs.start(e.logDir, label, e.o.portico, "run", "-state", e.state, "-listen", addr, "-log-level", e.o.logLevel)
	if err != nil {
		return nil, err
	}
	if err := waitListening(ctx, srv, addr); err != nil {
		e.cs.kill(srv)
		return nil, err
	}
	return srv, nil
}

// rowSetup is a row's processes (either may be nil) and how to open a
// tunnel through them.
type rowSetup struct {
	dial           dialFunc
	client, server *child
}

func (st *rowSetup) clientPID() int { return st.client.pidOrZero() }

// cpu is the CPU the row's processes have used so far, together.
func (st *rowSetup) cpu() time.Duration { return st.client.cpuTime() + st.server.cpuTime() }

// hasProcs reports whether the row has processes whose CPU counts
// (direct has none).
func (st *rowSetup) hasProcs() bool { return st.client != nil || st.server != nil }
func (st *rowSetup) serverPID() int { return st.server.pidOrZero() }

// setupRow starts row s's processes. On an error, whatever it started is
// stopped again.
func (e *benchEnv) setupRow(ctx context.Context, s rowSpec) (_ *rowSetup, err error) {
	var (
		dial           dialFunc
		client, server *child
	)
	defer func() {
		if err != nil {
			e.cs.kill(client)
			e.cs.kill(server)
		}
	}()
	switch s.Kind {
	case "direct":
		dial = directDialer(e.sinkAddr)
	case "floor", "floor-nohop":
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		if server, err = e.cs.start(e.logDir, s.Name+"-tlsrelay", self, "tlsrelay", "-listen", addr, "-to", e.sinkAddr); err != nil {
			return nil, err
		}
		if err := waitListening(ctx, server, addr); err != nil {
			return nil, err
		}
		dial = floorDialer(addr)
		if s.Kind == "floor" {
			cport, err := freePort()
			if err != nil {
				return nil, err
			}
			caddr := "127.0.0.1:" + strconv.Itoa(cport)
			if client, err = e.cs.start(e.logDir, s.Name+"-tlsclient", self, "tlsrelay", "-client", "-listen", caddr, "-to", addr); err != nil {
				return nil, err
			}
			if err := waitListening(ctx, client, caddr); err != nil {
				return nil, err
			}
			dial = directDialer(caddr) // plain TCP to the client half, which dials TLS
		}
	case "portico":
		link, ok := e.links[s.Name]
		if !ok {
			return nil, fmt.Errorf("%w: the embedded default has no %s link", errNA, s.Name)
		}
		sport, err := freePort()
		if err != nil {
			return nil, err
		}
		if link, err = linkWithPort(link, sport); err != nil {
			return nil, err
		}
		if server, err = e.startPorticoServer(ctx, s.Name+"-server", sport); err != nil {
			return nil, err
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if client, err = e.cs.start(e.logDir, s.Name+"-client", e.o.portico, "client", "-listen", addr, "-log-level", e.o.logLevel, link); err != nil {
			return nil, err
		}
		if err := waitListening(ctx, client, addr); err != nil {
			return nil, err
		}
		dial = socksDialer(addr, e.sinkAddr)
	case "v2ray":
		if _, err := os.Stat(e.o.v2ray); err != nil {
			return nil, fmt.Errorf("%w: %v", errNA, err)
		}
		var (
			addr string
			err  error
		)
		if client, server, addr, err = e.startV2Ray(ctx, s); err != nil {
			return nil, err
		}
		dial = socksDialer(addr, e.sinkAddr)
	}
	return &rowSetup{dial: dial, client: client, server: server}, nil
}

// linkWithPort is link with its server port replaced.
func linkWithPort(link string, port int) (string, error) {
	l, err := links.Parse(link)
	if err != nil {
		return "", err
	}
	l.Port = uint16(port)
	return l.String(), nil
}

// warmUp opens one tunnel, so that a lazily dialled connection or a
// session is in place as a user would have it.
func warmUp(ctx context.Context, dial dialFunc) error {
	c, _, err := echoTunnel(ctx, dial, 10*time.Second)
	if err != nil {
		return fmt.Errorf("first tunnel: %w", err)
	}
	c.Close()
	return nil
}

// measureIdle holds o.idle tunnels open and reads both processes' RSS.
func measureIdle(ctx context.Context, o options, dial dialFunc, clientPID, serverPID int, r *rowResult) error {
	conns, failed, err := holdIdle(ctx, dial, o.idle)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	note := ""
	if err != nil { // a row that cannot hold them all is still measured
		note = err.Error()
	}
	select { // let both sides settle: buffers freed after the echo
	case <-time.After(o.settle):
	case <-ctx.Done():
	}
	r.Idle = &idleResult{Tunnels: len(conns), Failed: failed, Note: note}
	if clientPID != 0 {
		r.Idle.ClientRSSKiB, _ = rssKiB(clientPID)
	}
	if serverPID != 0 {
		r.Idle.ServerRSSKiB, _ = rssKiB(serverPID)
	}
	closeAll(conns)
	return ctx.Err()
}

// measureTunnels runs the tunnels/s tests once, adding to r's figures
// the rate and the CPU that the row's processes spent per tunnel.
func measureTunnels(ctx context.Context, o options, st *rowSetup, r *rowResult) error {
	if r.Seq == nil {
		r.Seq = &tunnelFigure{Tunnels: o.seq}
		r.Conc = &tunnelFigure{Tunnels: o.concTotal}
	}
	for _, run := range []struct {
		fig         *tunnelFigure
		n, parallel int
		what        string
	}{{r.Seq, o.seq, 1, "sequential"}, {r.Conc, o.concTotal, o.concurrency, "concurrent"}} {
		cpu0 := st.cpu()
		t, err := tunnels(ctx, st.dial, run.n, run.parallel)
		if err != nil {
			return fmt.Errorf("%s tunnels: %w", run.what, err)
		}
		if cpu := st.cpu() - cpu0; st.hasProcs() && run.n > t.Failures {
			t.CPUus = cpu.Seconds() * 1e6 / float64(run.n-t.Failures)
		}
		run.fig.add(t)
	}
	return nil
}

// errBulkRun marks a failed bulk run: it is recorded, and the row's other
// runs and figures go on.
var errBulkRun = errors.New("bulk run failed")

// measureBulk runs each of the four bulk figures once, adding to r's
// figures the rate and the CPU the row's processes spent per MB.
func measureBulk(ctx context.Context, o options, st *rowSetup, r *rowResult) error {
	if r.Bulk == nil {
		r.Bulk = map[string]*figure{}
		r.BulkCPU = map[string]*figure{}
		for _, k := range bulkKeys {
			r.Bulk[k], r.BulkCPU[k] = &figure{}, &figure{}
		}
	}
	var firstErr error
	for _, b := range []struct {
		key     string
		mode    byte
		streams int
	}{{"down1", modeDown, 1}, {"up1", modeUp, 1}, {"down4", modeDown, 4}, {"up4", modeUp, 4}} {
		cpu0 := st.cpu()
		mbs, err := bulk(ctx, st.dial, b.mode, o.bulk, b.streams)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil { // kept, and the other runs and figures go on
			r.BulkFailed++
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: %s: %w", errBulkRun, b.key, err)
			}
			continue
		}
		r.Bulk[b.key].add(mbs)
		if st.hasProcs() {
			r.BulkCPU[b.key].add((st.cpu() - cpu0).Seconds() * 1e3 / (float64(o.bulk) / 1e6))
		}
	}
	return firstErr
}

func writeResults(dir string, res *results) error {
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(res)), 0o644)
}
