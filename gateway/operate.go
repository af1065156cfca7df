package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/portico-gw/portico/admin"
)

// statsFileName is where a server keeps its counters, in its state dir.
const statsFileName = "stats.json"

// statsPath is the counters' file: a server's state dir, "" for a pure
// client (nothing to keep) or when no state dir can be had.
func (g *Gateway) statsPath() string {
	if g.cfg.Server == nil {
		return ""
	}
	dir := g.opts.StateDir
	if d := g.cfg.Server.TLS.StateDir; d != "" {
		dir = d
	}
	if dir == "" {
		d, err := DefaultStateDir()
		if err != nil {
			return ""
		}
		dir = d
	}
	if EnsureStateDir(dir) != nil {
		return ""
	}
	return filepath.Join(dir, statsFileName)
}

// startOperations restores the counters and starts saving them, and opens
// the admin API when the config has one. It runs at the end of Start.
func (g *Gateway) startOperations(life context.Context) error {
	if path := g.statsPath(); path != "" {
		g.statsFile = path
		if err := g.router.stats.Load(path); err != nil {
			g.log.Warn("counters not restored; starting from zero", "err", err)
		}
		every := g.cfg.Policy.StatsInterval.Or(time.Minute)
		g.goServe(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-life.Done():
					return
				case <-t.C:
					g.saveStats()
				}
			}
		})
	}
	a := g.cfg.Admin
	if a == nil {
		return nil
	}
	tok, err := a.AdminToken()
	if err != nil {
		return err
	}
	reg := g.NewMetricsRegistry(g.opts.Version, a.PerUserMetrics)
	h, err := admin.New(admin.Options{Backend: g, Registry: reg, Token: tok, Unix: admin.IsUnix(a.Listen), Log: g.log})
	if err != nil {
		return err
	}
	ln, err := admin.Listen(a.Listen)
	if err != nil {
		return err
	}
	g.adminLn = ln
	g.adminSrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slogErrorLog(g.log)}
	g.goServe(func() { g.adminSrv.Serve(ln) })
	g.log.Info("admin API", "listen", a.Listen, "metrics", "/metrics")
	return nil
}

// AdminAddr is the admin API's address once started (nil when off).
func (g *Gateway) AdminAddr() net.Addr {
	if g.adminLn == nil {
		return nil
	}
	return g.adminLn.Addr()
}

// saveStats writes the counters; a failure (a full disk) is logged at
// most once per interval and the counters stay in memory.
func (g *Gateway) saveStats() {
	if g.statsFile == "" {
		return
	}
	if err := g.router.stats.Save(g.statsFile); err != nil {
		g.statsLog.log(g.log, slog.LevelWarn, limitLogInterval, "counters not saved; they stay in memory", "file", g.statsFile, "err", err)
	}
}
