package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/uuid"

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
		if *listen != "" {
			if cfg.Server == nil {
				return fmt.Errorf("-listen: the config has no server section to apply it to")
			}
			cfg.Server.Listen = *listen
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
	opts := gateway.Options{StateDir: *stateDir, Log: log}
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
	<-ctx.Done()
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
	if err := parse(fs, args); err != nil {
		return err
	}
	var (
		cfg *gateway.Config
		err error
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
	ls, err := gateway.ServerLinks(cfg, *host, pin)
	if err != nil {
		return err
	}
	for _, l := range ls {
		fmt.Fprintln(stdout, l)
	}
	return nil
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
