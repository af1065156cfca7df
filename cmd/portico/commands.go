package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/admin"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/protocols/links"
)

type logFlags struct{ level, format string }

func (lf *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&lf.level, "log-level", "", "log level: debug, info, warn, error (default info)")
	fs.StringVar(&lf.format, "log-format", "", "log format: text or json (default text)")
}

// logger builds the logger from the flags, falling back to the config's
// log section.
func (lf *logFlags) logger(cfg gateway.LogConfig, w io.Writer) (*slog.Logger, error) {
	level, format := cfg.Level, cfg.Format
	if lf.level != "" {
		level = lf.level
	}
	if lf.format != "" {
		format = lf.format
	}
	var lv slog.Level
	switch level {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("-log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", format)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	return nil
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	cfgPath := fs.String("c", "", "config file (JSON); none = the embedded default")
	stateDir := fs.String("state", "", "state dir (default $XDG_STATE_HOME/portico)")
	listen := fs.String("listen", "", "front door address, overriding the config (default 127.0.0.1:8443)")
	drain := fs.Duration("drain", 0, "on shutdown, how long tunnels may finish (default: config, else 10s)")
	var lf logFlags
	lf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected argument %q", fs.Arg(0))
	}
	if *listen != "" {
		if _, _, err := net.SplitHostPort(*listen); err != nil {
			return fmt.Errorf("-listen: %q is not host:port", *listen)
		}
	}

	var (
		cfg   *gateway.Config
		state *gateway.State
		err   error
	)
	if *cfgPath != "" {
		if cfg, err = gateway.LoadConfig(*cfgPath); err != nil {
			return err
		}
		if *listen != "" && cfg.Server == nil {
			return fmt.Errorf("-listen: the config has no server section to apply it to")
		}
	} else {
		dir := *stateDir
		if dir == "" {
			if dir, err = gateway.DefaultStateDir(); err != nil {
				return err
			}
		}
		if state, err = gateway.LoadOrCreateState(dir); err != nil {
			return err
		}
		cfg = state.DefaultConfig(*listen)
	}
	log, err := lf.logger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	opts := gateway.Options{StateDir: *stateDir, Log: log, ConfigPath: *cfgPath, Version: version}
	if *cfgPath != "" {
		opts.Listen = *listen // kept across reloads
	}
	if cfg.Server != nil && cfg.Server.Playground != nil {
		assets, err := findPlaygroundAssets(cfg.Server.Playground.WasmDir, stderr)
		if err != nil {
			return fmt.Errorf("server.playground: %w", err)
		}
		opts.PlaygroundWasm, opts.PlaygroundWasmExec = assets.Wasm, assets.WasmExec
	}
	g, err := gateway.New(cfg, opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := g.Start(context.Background()); err != nil {
		return err
	}
	if state != nil {
		state.Listen = g.Addr().String()
		if err := state.Save(); err != nil {
			log.Warn("could not record the address in the state dir", "err", err)
		}
		printDefaultLinks(stdout, cfg, g)
	}
	// SIGHUP (systemctl reload, `portico reload`) re-reads the config; a
	// config that fails is logged and the running one stays.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case <-hup:
			if err := g.Reload(); err != nil {
				log.Warn("reload failed; the running config stays", "err", err)
			}
		}
	}
	stop()
	wait := *drain
	if wait == 0 {
		wait = cfg.Timeouts.Drain.Or(10 * time.Second)
	}
	log.Info("shutting down", "drain", wait, "open_tunnels", g.Router().Active())
	sctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	g.Shutdown(sctx)
	log.Info("stopped")
	return nil
}

// printDefaultLinks shows a newcomer the whole way in: a link per protocol
// and the command that uses it.
func printDefaultLinks(w io.Writer, cfg *gateway.Config, g *gateway.Gateway) {
	host, _, _ := net.SplitHostPort(g.Addr().String())
	withPort := *cfg
	srv := *cfg.Server
	srv.Listen = g.Addr().String()
	withPort.Server = &srv
	ls, err := gateway.ServerLinks(&withPort, host, g.Pin())
	if err != nil {
		return
	}
	fmt.Fprintf(w, "Portico is serving https://%s/ (a decoy site for everyone without a key).\n", g.Addr())
	fmt.Fprintf(w, "Share links (raw TLS):\n")
	others := 0
	for _, l := range ls {
		if l.Transport != "tcp" {
			others++
			continue
		}
		fmt.Fprintf(w, "  %s\n", l)
	}
	if others > 0 {
		fmt.Fprintf(w, "%d more for WebSocket, HTTP upgrade, gRPC and QUIC: portico links -state %s\n", others, stateDirOf(cfg))
	}
	fmt.Fprintf(w, "Run a local SOCKS5/HTTP proxy on 127.0.0.1:1080 through it:\n")
	fmt.Fprintf(w, "  portico client '%s'\n", ls[0])
}

func stateDirOf(cfg *gateway.Config) string { return cfg.Server.TLS.StateDir }

func cmdClient(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client", stderr)
	cfgPath := fs.String("c", "", "config file (JSON) with local proxy inbounds and outbounds")
	listen := fs.String("listen", "", "local SOCKS5/HTTP proxy address (default 127.0.0.1:1080)")
	var lf logFlags
	lf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	var cfg *gateway.Config
	var warn string
	switch {
	case *cfgPath != "" && fs.NArg() > 0:
		return fmt.Errorf("client: give -c FILE or a LINK, not both")
	case *cfgPath != "":
		var err error
		if cfg, err = gateway.LoadConfig(*cfgPath); err != nil {
			return err
		}
		if *listen != "" {
			n := 0
			for i := range cfg.Inbounds {
				if cfg.Inbounds[i].Listen != "" {
					cfg.Inbounds[i].Listen = *listen
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("-listen: the config must have exactly one local proxy inbound to apply it to, has %d", n)
			}
		}
	case fs.NArg() == 1:
		l, err := links.Parse(fs.Arg(0))
		if err != nil {
			return err
		}
		if cfg, warn, err = gateway.ClientConfigFromLink(l, *listen); err != nil {
			return err
		}
	default:
		return fmt.Errorf("client: give a share link or -c FILE (see `portico links`)")
	}
	log, err := lf.logger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	if warn != "" {
		log.Warn(warn)
	}
	g, err := gateway.New(cfg, gateway.Options{Log: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := g.Start(context.Background()); err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Drain.Or(10*time.Second))
	defer cancel()
	g.Shutdown(sctx)
	return nil
}

func cmdLinks(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("links", stderr)
	cfgPath := fs.String("c", "", "server config file")
	stateDir := fs.String("state", "", "state dir of the embedded default")
	host := fs.String("host", "", "address clients dial (default: from the config)")
	edgeAddr := fs.String("edge", "", "HOST[:PORT] of an edge worker (wasm/edge) in front of the gateway: print its links for the WebSocket inbounds (port default 443)")
	edgePath := fs.String("edge-path", "", "with -edge: the worker's WS_PATH (default: each inbound's own path, what origin mode forwards)")
	edgeED := fs.Int("edge-ed", 2048, "with -edge: early data bytes, ?ed=N in the path (0 = off, at most 8192)")
	if err := parse(fs, args); err != nil {
		return err
	}
	edge, err := edgeFlags(fs, *edgeAddr, *edgePath, *edgeED)
	if err != nil {
		return err
	}
	if edge != nil && *host != "" {
		return fmt.Errorf("links: give -host or -edge, not both (an edge link's host is the edge)")
	}
	var (
		cfg *gateway.Config
		pin string
	)
	switch {
	case *cfgPath != "" && *stateDir != "":
		return fmt.Errorf("links: give -c FILE or -state DIR, not both")
	case *cfgPath != "":
		if cfg, err = gateway.LoadConfig(*cfgPath); err != nil {
			return err
		}
		if cfg.Server != nil && (cfg.Server.TLS.Source == "" || cfg.Server.TLS.Source == "self-signed") {
			g, err := gateway.New(cfg, gateway.Options{Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				return err
			}
			pin = g.Pin()
		}
	case *stateDir != "":
		st, err := gateway.LoadState(*stateDir)
		if err != nil {
			return err
		}
		cfg = st.DefaultConfig(st.Listen)
		g, err := gateway.New(cfg, gateway.Options{StateDir: *stateDir, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		pin = g.Pin()
	default:
		return fmt.Errorf("links: give -c FILE or -state DIR")
	}
	var ls []links.Link
	if edge != nil {
		var skipped []string
		ls, skipped, err = gateway.EdgeLinks(cfg, *edge)
		if err != nil {
			return err
		}
		if len(skipped) > 0 {
			fmt.Fprintf(stderr, "links: -edge carries only WebSocket; skipped %d inbounds: %s\n", len(skipped), strings.Join(skipped, ", "))
		}
	} else if ls, err = gateway.ServerLinks(cfg, *host, pin); err != nil {
		return err
	}
	for _, l := range ls {
		fmt.Fprintln(stdout, l)
	}
	return nil
}

// edgeFlags checks the -edge flags of `portico links`; nil without -edge.
func edgeFlags(fs *flag.FlagSet, addr, path string, ed int) (*gateway.Edge, error) {
	if addr == "" {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "edge-path" || f.Name == "edge-ed" {
				set = append(set, "-"+f.Name)
			}
		})
		if len(set) > 0 {
			return nil, fmt.Errorf("%s: only with -edge HOST[:PORT]", strings.Join(set, " and "))
		}
		return nil, nil
	}
	if strings.ContainsAny(addr, "/?#@ \t") {
		return nil, fmt.Errorf("-edge %q: want HOST[:PORT] (a name or an IP address, not a URL)", addr)
	}
	e := &gateway.Edge{Host: addr, Port: 443, Path: path, EarlyData: ed}
	if h, p, err := net.SplitHostPort(addr); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("-edge %q: port %q is not 1-65535", addr, p)
		}
		e.Host, e.Port = h, uint16(n)
	} else if ip, ok := strings.CutPrefix(addr, "["); ok && strings.HasSuffix(ip, "]") && net.ParseIP(ip[:len(ip)-1]) != nil {
		e.Host = ip[:len(ip)-1] // [2001:db8::1] without a port
	} else if strings.Count(addr, ":") == 1 || strings.HasPrefix(addr, "[") {
		return nil, fmt.Errorf("-edge %q: want HOST[:PORT], as portico-edge.example.workers.dev:443 or [2001:db8::1]:443", addr)
	}
	switch {
	case e.Host == "" || strings.ContainsAny(e.Host, "[]") || strings.Contains(e.Host, ":") && net.ParseIP(e.Host) == nil:
		return nil, fmt.Errorf("-edge %q: want HOST[:PORT] (a name or an IP address)", addr)
	case path != "" && (path[0] != '/' || strings.ContainsAny(path, "?# \t")):
		return nil, fmt.Errorf("-edge-path %q: must start with / and have no query (early data is -edge-ed)", path)
	case ed < 0 || ed > gateway.MaxEdgeEarlyData:
		return nil, fmt.Errorf("-edge-ed %d: must be 0 (off) to %d bytes", ed, gateway.MaxEdgeEarlyData)
	}
	return e, nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	cfgPath := fs.String("c", "", "config file to check")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return fmt.Errorf("check: -c FILE is required")
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, gateway.Describe(cfg))
	fmt.Fprintln(stdout, "config OK")
	return nil
}

func cmdUUID(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("uuid", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, uuid.NewString())
	return nil
}

// parseAndConnect parses the command line of a command that takes no
// arguments besides its flags and returns the admin API's client.
func (af *adminFlags) parseAndConnect(fs *flag.FlagSet, args []string, what string) (*admin.Client, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", what, fs.Arg(0))
	}
	return af.client(what)
}

// adminFlags are the flags of the commands that call the admin API.
type adminFlags struct{ addr, token string }

const defaultAdminAddr = "127.0.0.1:9090"

func (af *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&af.addr, "admin", "", "admin API: HOST:PORT or unix:/path (default $PORTICO_ADMIN, else "+defaultAdminAddr+")")
	fs.StringVar(&af.token, "token", "", "admin API bearer token (default $PORTICO_ADMIN_TOKEN; none needed on a unix socket)")
}

// client applies the environment's defaults (after parsing, so -h never
// shows the token) and returns the API's client.
func (af *adminFlags) client(what string) (*admin.Client, error) {
	if af.addr == "" {
		af.addr = os.Getenv("PORTICO_ADMIN")
	}
	if af.addr == "" {
		af.addr = defaultAdminAddr
	}
	if af.token == "" {
		af.token = os.Getenv("PORTICO_ADMIN_TOKEN")
	}
	c, err := admin.NewClient(af.addr, af.token)
	if err != nil {
		return nil, fmt.Errorf("%s: -admin: %v", what, err)
	}
	return c, nil
}

// apiErr names the command and the API's address in front of err.
func (af *adminFlags) apiErr(what string, err error) error {
	return fmt.Errorf("%s: admin API at %s: %w", what, af.addr, err)
}

func apiContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func cmdUser(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("user: want list, add or del (portico user add -h)")
	}
	switch args[0] {
	case "list", "ls":
		return cmdUserList(args[1:], stdout, stderr)
	case "add":
		return cmdUserAdd(args[1:], stdout, stderr)
	case "del", "rm", "remove":
		return cmdUserDel(args[1:], stdout, stderr)
	}
	return fmt.Errorf("user: unknown subcommand %q (want list, add or del)", args[0])
}

func cmdUserList(args []string, stdout, stderr io.Writer) error {
	const what = "user list"
	fs := newFlagSet(what, stderr)
	inbound := fs.String("inbound", "", "inbound tag (default: every inbound)")
	asJSON := fs.Bool("json", false, "print JSON")
	var af adminFlags
	af.register(fs)
	c, err := af.parseAndConnect(fs, args, what)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	tags := []string{*inbound}
	if *inbound == "" {
		ins, err := c.Inbounds(ctx)
		if err != nil {
			return af.apiErr(what, err)
		}
		tags = tags[:0]
		for _, in := range ins {
			tags = append(tags, in.Tag)
		}
	}
	all := map[string][]admin.User{}
	for _, tag := range tags {
		us, err := c.Users(ctx, tag)
		if err != nil {
			return af.apiErr(what, err)
		}
		all[tag] = us
	}
	if *asJSON {
		if *inbound != "" {
			return printJSON(stdout, all[*inbound])
		}
		return printJSON(stdout, all)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INBOUND\tEMAIL\tID / PASSWORD\tLEVEL\tQUOTA\tEXPIRY")
	for _, tag := range tags {
		for _, u := range all[tag] {
			key := u.ID
			if key == "" {
				key = u.Password
			}
			quota, expiry := "-", "-"
			if u.Quota > 0 {
				quota = humanBytes(u.Quota)
			}
			if u.Expiry != nil {
				expiry = u.Expiry.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", tag, u.Email, key, u.Level, quota, expiry)
		}
	}
	return tw.Flush()
}

func cmdUserAdd(args []string, stdout, stderr io.Writer) error {
	const what = "user add"
	fs := newFlagSet(what, stderr)
	inbound := fs.String("inbound", "", "inbound tag (required; portico user list shows them)")
	email := fs.String("email", "", "the user's name, unique in the inbound (required)")
	id := fs.String("id", "", "VLESS/VMess: the user's UUID (default: a new one)")
	password := fs.String("password", "", "AnyTLS: the user's password (default: a new random one)")
	alterID := fs.Int("alter-id", 0, "VMess: alterId (0 = AEAD)")
	level := fs.Int("level", 0, "user level")
	quota := fs.String("quota", "", "traffic quota, up+down: 10GB, 500MiB or bytes (default none)")
	expiry := fs.String("expiry", "", "expiry: RFC 3339 (2027-01-01T00:00:00Z) or from now (30d, 12h) (default never)")
	var af adminFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%s: unexpected argument %q", what, fs.Arg(0))
	case *inbound == "":
		return fmt.Errorf("%s: -inbound TAG is required", what)
	case *email == "":
		return fmt.Errorf("%s: -email NAME is required", what)
	case *id != "" && *password != "":
		return fmt.Errorf("%s: give -id (VLESS, VMess) or -password (AnyTLS), not both", what)
	case *alterID < 0 || *level < 0:
		return fmt.Errorf("%s: -alter-id and -level must not be negative", what)
	}
	if *id != "" {
		if _, err := uuid.Parse(*id); err != nil || len(*id) != 36 {
			return fmt.Errorf("%s: -id: %q is not a UUID (want the 36-character form, e.g. from `portico uuid`)", what, *id)
		}
	}
	u := admin.User{Email: *email, ID: *id, Password: *password, AlterID: *alterID, Level: *level}
	if *quota != "" {
		q, err := admin.ParseBytes(*quota)
		if err != nil {
			return fmt.Errorf("%s: -quota: %v", what, err)
		}
		u.Quota = q
	}
	if *expiry != "" {
		t, err := admin.ParseExpiry(*expiry, time.Now())
		if err != nil {
			return fmt.Errorf("%s: -expiry: %v", what, err)
		}
		u.Expiry = &t
	}
	c, err := af.client(what)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	if u.ID == "" && u.Password == "" {
		// Which key to generate depends on the inbound's protocol. An
		// unknown tag gets no key: the API then names the problem.
		ins, err := c.Inbounds(ctx)
		if err != nil {
			return af.apiErr(what, err)
		}
		for _, in := range ins {
			if in.Tag != *inbound {
				continue
			}
			if in.Protocol == "anytls" {
				u.Password = rand.Text()
			} else {
				u.ID = uuid.NewString()
			}
		}
	}
	got, err := c.AddUser(ctx, *inbound, u)
	if err != nil {
		return af.apiErr(what, err)
	}
	return printJSON(stdout, got)
}

func cmdUserDel(args []string, stdout, stderr io.Writer) error {
	const what = "user del"
	fs := newFlagSet(what, stderr)
	inbound := fs.String("inbound", "", "inbound tag (required)")
	email := fs.String("email", "", "the user's name (required)")
	var af adminFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%s: unexpected argument %q", what, fs.Arg(0))
	case *inbound == "":
		return fmt.Errorf("%s: -inbound TAG is required", what)
	case *email == "":
		return fmt.Errorf("%s: -email NAME is required", what)
	}
	c, err := af.client(what)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	if err := c.RemoveUser(ctx, *inbound, *email); err != nil {
		return af.apiErr(what, err)
	}
	fmt.Fprintf(stdout, "removed user %q from inbound %q\n", *email, *inbound)
	return nil
}

func cmdStats(args []string, stdout, stderr io.Writer) error {
	const what = "stats"
	fs := newFlagSet(what, stderr)
	reset := fs.Bool("reset", false, "reset the counters (of -user, else all) and print their values before the reset")
	user := fs.String("user", "", "only this user")
	asJSON := fs.Bool("json", false, "print JSON")
	var af adminFlags
	af.register(fs)
	c, err := af.parseAndConnect(fs, args, what)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	var s admin.Stats
	if *reset {
		s, err = c.ResetStats(ctx, *user)
	} else {
		s, err = c.Stats(ctx)
	}
	if err != nil {
		return af.apiErr(what, err)
	}
	if *user != "" {
		cs, ok := s.Users[*user]
		if !ok && !*reset {
			return fmt.Errorf("%s: no counters for user %q (no such user, or no traffic yet)", what, *user)
		}
		s = admin.Stats{Users: map[string]admin.Counters{*user: cs}, Inbounds: map[string]admin.Counters{}}
	}
	if *asJSON {
		return printJSON(stdout, s)
	}
	if *reset {
		fmt.Fprintln(stdout, "Reset; the counters before:")
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	table := func(kind string, m map[string]admin.Counters) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintf(tw, "%s\tUP\tDOWN\tACTIVE\tTOTAL\tREFUSED\tLAST SEEN\n", kind)
		for _, name := range slices.Sorted(maps.Keys(m)) {
			cs := m[name]
			seen := "-"
			if cs.LastSeen != nil {
				seen = cs.LastSeen.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", name, humanBytes(cs.Up), humanBytes(cs.Down), cs.Active, cs.Total, cs.Refused, seen)
		}
	}
	table("USER", s.Users)
	if len(s.Users) > 0 && len(s.Inbounds) > 0 {
		fmt.Fprintln(tw)
	}
	table("INBOUND", s.Inbounds)
	return tw.Flush()
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	const what = "reload"
	fs := newFlagSet(what, stderr)
	var af adminFlags
	af.register(fs)
	c, err := af.parseAndConnect(fs, args, what)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	if err := c.Reload(ctx); err != nil {
		return af.apiErr(what, err)
	}
	fmt.Fprintln(stdout, "reloaded")
	return nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// humanBytes writes n in binary units: 512 B, 1.5 KiB, 10.0 GiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, unit := float64(n), ""
	for _, unit = range []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"} {
		f /= 1024
		if f < 1024 {
			break
		}
	}
	return fmt.Sprintf("%.1f %s", f, unit)
}
