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
	Kind      string // "floor", "direct", "portico", "v2ray"
	Protocol  string // "vless", "vless-v1", "vmess", "anytls"
	Transport string // "tcp" (raw TLS), "ws", "httpupgrade", "grpc", "quic"
	link      string
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
	Failures int    `json:"failures"` // over all runs
}

func (t *tunnelFigure) add(r tunnelResult) {
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
	Name      string             `json:"name"`
	Kind      string             `json:"kind"`
	Protocol  string             `json:"protocol,omitempty"`
	Transport string             `json:"transport,omitempty"`
	Available bool               `json:"available"`
	Error     string             `json:"error,omitempty"`
	Bulk      map[string]*figure `json:"bulk_mb_s,omitempty"` // down1, down4, up1, up4: MB/s (10^6 bytes/s)
	Seq       *tunnelFigure      `json:"tunnels_sequential,omitempty"`
	Conc      *tunnelFigure      `json:"tunnels_concurrent,omitempty"`
	Idle      *idleResult        `json:"idle,omitempty"`
	Seconds   float64            `json:"seconds"`
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
	rows := []rowSpec{{Name: "floor", Kind: "floor"}, {Name: "floor+hop", Kind: "floor+hop"}, {Name: "direct", Kind: "direct"}}
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
	for i, s := range specs {
		if ctx.Err() != nil {
			break
		}
		r := res.Rows[i]
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "portico-bench: %-22s", s.Name)
		rerr := env.runRow(ctx, s, r)
		r.Seconds = time.Since(t0).Seconds()
		switch {
		case errors.Is(rerr, errNA):
			r.Error = "n/a: " + strings.TrimPrefix(rerr.Error(), "n/a: ")
		case rerr != nil && ctx.Err() != nil:
			r.Error = "stopped early: " + rerr.Error()
		case rerr != nil:
			r.Error = rerr.Error()
		}
		fmt.Fprintf(os.Stderr, " %5.1f s %s\n", r.Seconds, r.Error)
		if err := writeResults(o.out, res); err != nil { // progress, in case of a crash
			return err
		}
	}
	return nil
}

// benchEnv is what the rows share.
type benchEnv struct {
	o        options
	cs       *children
	work     string
	logDir   string
	sinkAddr string
	state    string            // portico -state dir
	port     int               // portico's front door port, the same for every row
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
	e.port = port
	srv, err := e.startPorticoServer(ctx, "portico-setup")
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

func (e *benchEnv) startPorticoServer(ctx context.Context, label string) (*child, error) {
	addr := "127.0.0.1:" + strconv.Itoa(e.port)
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

// runRow sets up row s's processes, measures, and kills them.
func (e *benchEnv) runRow(ctx context.Context, s rowSpec, r *rowResult) error {
	var (
		dial           dialFunc
		client, server *child
	)
	defer func() { e.cs.kill(client); e.cs.kill(server) }()
	switch s.Kind {
	case "direct":
		dial = directDialer(e.sinkAddr)
	case "floor", "floor+hop":
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		self, err := os.Executable()
		if err != nil {
			return err
		}
		if server, err = e.cs.start(e.logDir, s.Name+"-tlsrelay", self, "tlsrelay", "-listen", addr, "-to", e.sinkAddr); err != nil {
			return err
		}
		if err := waitListening(ctx, server, addr); err != nil {
			return err
		}
		dial = floorDialer(addr)
		if s.Kind == "floor+hop" {
			cport, err := freePort()
			if err != nil {
				return err
			}
			caddr := "127.0.0.1:" + strconv.Itoa(cport)
			if client, err = e.cs.start(e.logDir, s.Name+"-tlsclient", self, "tlsrelay", "-client", "-listen", caddr, "-to", addr); err != nil {
				return err
			}
			if err := waitListening(ctx, client, caddr); err != nil {
				return err
			}
			dial = directDialer(caddr) // plain TCP to the client half, which dials TLS
		}
	case "portico":
		link, ok := e.links[s.Name]
		if !ok {
			return fmt.Errorf("%w: the embedded default has no %s link", errNA, s.Name)
		}
		var err error
		if server, err = e.startPorticoServer(ctx, s.Name+"-server"); err != nil {
			return err
		}
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if client, err = e.cs.start(e.logDir, s.Name+"-client", e.o.portico, "client", "-listen", addr, "-log-level", e.o.logLevel, link); err != nil {
			return err
		}
		if err := waitListening(ctx, client, addr); err != nil {
			return err
		}
		dial = socksDialer(addr, e.sinkAddr)
	case "v2ray":
		if _, err := os.Stat(e.o.v2ray); err != nil {
			return fmt.Errorf("%w: %v", errNA, err)
		}
		var (
			addr string
			err  error
		)
		if client, server, addr, err = e.startV2Ray(ctx, s); err != nil {
			return err
		}
		dial = socksDialer(addr, e.sinkAddr)
	}
	r.Available = true
	pidOf := func(c *child) int {
		if c == nil {
			return 0
		}
		return c.pid()
	}
	return measureRow(ctx, e.o, dial, pidOf(client), pidOf(server), r)
}

// measureRow runs idle, tunnels and bulk, in that order, through dial.
func measureRow(ctx context.Context, o options, dial dialFunc, clientPID, serverPID int, r *rowResult) error {
	// Warm up: one tunnel, so that a lazily dialled connection or a
	// session is in place as a user would have it.
	if c, _, err := echoTunnel(ctx, dial, 10*time.Second); err != nil {
		return fmt.Errorf("first tunnel: %w", err)
	} else {
		c.Close()
	}

	conns, failed, err := holdIdle(ctx, dial, o.idle)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	note := ""
	if err != nil { // a row that cannot hold them all is still measured
		note = err.Error()
	}
	select { // let both sides settle: buffers freed after the echo
	case <-time.After(time.Second):
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
	if ctx.Err() != nil {
		return ctx.Err()
	}

	r.Seq = &tunnelFigure{Tunnels: o.seq}
	r.Conc = &tunnelFigure{Tunnels: o.concTotal}
	for range o.repeat {
		t, err := tunnels(ctx, dial, o.seq, 1)
		if err != nil {
			return fmt.Errorf("sequential tunnels: %w", err)
		}
		r.Seq.add(t)
		if t, err = tunnels(ctx, dial, o.concTotal, o.concurrency); err != nil {
			return fmt.Errorf("concurrent tunnels: %w", err)
		}
		r.Conc.add(t)
	}

	r.Bulk = map[string]*figure{"down1": {}, "down4": {}, "up1": {}, "up4": {}}
	var (
		bulkFailed int
		firstErr   error
	)
	for range o.repeat {
		for _, b := range []struct {
			key     string
			mode    byte
			streams int
		}{{"down1", modeDown, 1}, {"up1", modeUp, 1}, {"down4", modeDown, 4}, {"up4", modeUp, 4}} {
			mbs, err := bulk(ctx, dial, b.mode, o.bulk, b.streams)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil { // kept, and the other runs and figures go on
				bulkFailed++
				if firstErr == nil {
					firstErr = fmt.Errorf("bulk %s: %w", b.key, err)
				}
				continue
			}
			r.Bulk[b.key].add(mbs)
		}
	}
	if firstErr != nil {
		return fmt.Errorf("%d of %d bulk runs failed (their figures are the median of the others); first: %w", bulkFailed, 4*o.repeat, firstErr)
	}
	return nil
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
