package gateway

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync/atomic"

	"github.com/portico-gw/portico/acme"
	"github.com/portico-gw/portico/admin"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Hot reload (SIGHUP, `portico reload`, the admin API): the new config is
// built in full beside the running one, and only if that succeeds do its
// parts replace the running ones — users, routing, the raw-TLS protocols,
// the HTTP routes and site, certificates. Protocol servers, outbounds and
// the certificate source the new config leaves unchanged are kept, so that
// their sessions, pools and tunnels run on. What needs a listener changed
// (addresses, HTTP/3, local proxies, the admin API) or process-wide limits
// is refused with the field to blame, and the old config keeps running.

// live is the running gateway: g itself, or the one a reload builds for.
func (g *Gateway) live() *Gateway {
	if g.root != nil {
		return g.root
	}
	return g
}

func (g *Gateway) registry() *inboundRegistry { return g.users.Load() }

// swapHandler is an http.Handler whose handler a reload replaces.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func newSwapHandler(h http.Handler) *swapHandler {
	s := &swapHandler{}
	s.h.Store(&h)
	return s
}

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// certHolder is the certificate source in force.
type certHolder struct{ src acme.Source }

// getCertificate serves the handshake from the source in force.
func (g *Gateway) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return g.certNow.Load().src.GetCertificate(hello)
}

// inboundIdentity is what, besides its users, makes an inbound the same
// across a reload: its tag, protocol, transport settings and non-user
// settings.
func inboundIdentity(in InboundConfig, tag string) string {
	var settings map[string]any
	json.Unmarshal(in.Settings, &settings)
	delete(settings, "clients")
	delete(settings, "users")
	b, _ := json.Marshal(struct {
		Tag, Protocol string
		Settings      map[string]any
		Stream        *InboundStream
	}{tag, in.Protocol, settings, in.StreamSettings})
	return string(b)
}

// reusableInbound returns the running inbound tag if identity matches it.
func (g *Gateway) reusableInbound(tag, identity string) *tunnelInbound {
	if g == nil {
		return nil
	}
	if in := g.registry().byTag[tag]; in != nil && in.identity == identity {
		return in
	}
	return nil
}

// reuseOutbounds puts the running outbound of each tag whose config is
// unchanged into outs, in place of the one just built (which is closed).
func (g *Gateway) reuseOutbounds(cfg *Config, outs map[string]tunnel.Dialer) {
	old := map[string]string{}
	for i, oc := range g.current.Load().Outbounds {
		old[outboundTag(oc, i)] = outboundIdentity(oc)
	}
	running := g.router.table.Load().outbounds
	for i, oc := range cfg.Outbounds {
		tag := outboundTag(oc, i)
		if id, ok := old[tag]; ok && id == outboundIdentity(oc) && running[tag] != nil {
			if c, ok := outs[tag].(interface{ Close() error }); ok {
				c.Close()
			}
			outs[tag] = running[tag]
		}
	}
	if len(cfg.Outbounds) == 0 && len(g.current.Load().Outbounds) == 0 && running["direct"] != nil {
		outs["direct"] = running["direct"]
	}
}

func outboundTag(oc OutboundConfig, i int) string {
	if oc.Tag != "" {
		return oc.Tag
	}
	return fmt.Sprintf("%s-%d", oc.Protocol, i)
}

func outboundIdentity(oc OutboundConfig) string {
	b, _ := json.Marshal(struct {
		Protocol string
		Settings json.RawMessage
		Stream   *StreamSettings
	}{oc.Protocol, oc.Settings, oc.StreamSettings})
	return string(b)
}

// Reload implements admin.Backend: it reads the config file again and
// applies it (see ReloadConfig). A config that does not load or cannot be
// applied is an *admin.ConfigError; the old config keeps running.
func (g *Gateway) Reload() error {
	if g.opts.ConfigPath == "" {
		return &admin.ConfigError{Err: errors.New("reload: running the embedded default, there is no config file to read again (start with -c FILE)")}
	}
	cfg, err := LoadConfig(g.opts.ConfigPath)
	if err != nil {
		return &admin.ConfigError{Err: err}
	}
	return g.ReloadConfig(cfg)
}

// ReloadConfig applies cfg to the running gateway. Tunnels under way are
// not touched, except those of removed users when policy.closeRemovedUsers
// says so.
func (g *Gateway) ReloadConfig(cfg *Config) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if err := g.restartOnly(cfg); err != nil {
		g.log.Warn("reload refused: the running config stays", "err", err)
		return &admin.ConfigError{Err: err}
	}
	ng, err := newGateway(cfg, g.opts, g)
	if err != nil {
		g.log.Warn("reload refused: the running config stays", "err", err)
		return &admin.ConfigError{Err: fmt.Errorf("reload: %w", err)}
	}
	// Commit: nothing below fails.
	g.router.setTable(ng.router)
	if g.front != nil {
		g.front.SetProtocols(ng.raw)
		g.site.set(ng.siteNext)
		g.certNow.Store(ng.certNow.Load())
	}
	old := g.registry()
	g.users.Store(ng.registry())
	g.current.Store(cfg)
	closed := 0
	for _, tag := range old.order {
		oldIn := old.byTag[tag]
		newIn := ng.registry().byTag[tag]
		for _, u := range oldIn.users {
			if newIn == nil || !hasUser(newIn.users, u.Email) {
				if cfg.Policy.CloseRemovedUsers {
					closed += g.router.CloseUser(tag, u.Email)
				}
			}
		}
	}
	g.log.Info("config reloaded", "inbounds", len(ng.registry().order), "outbounds", len(ng.router.table.Load().outbounds),
		"tunnels_of_removed_users_closed", closed)
	return nil
}

func hasUser(users []admin.User, email string) bool {
	for _, u := range users {
		if u.Email == email {
			return true
		}
	}
	return false
}

// restartOnly refuses a config that changes what only a restart can.
func (g *Gateway) restartOnly(next *Config) error {
	cur := g.cfg
	same := func(a, b any) bool { return reflect.DeepEqual(a, b) }
	if (cur.Server == nil) != (next.Server == nil) {
		return errors.New("reload: adding or removing the server section needs a restart")
	}
	if cur.Server != nil {
		a, b := cur.Server, next.Server
		switch {
		case a.Listen != b.Listen:
			return fmt.Errorf("reload: server.listen changed (%s -> %s): that needs a restart", a.Listen, b.Listen)
		case a.HTTPListen != b.HTTPListen:
			return errors.New("reload: server.httpListen changed: that needs a restart")
		case !same(a.Limits, b.Limits):
			return errors.New("reload: server.limits changed: that needs a restart")
		}
		ng := &Gateway{cfg: next}
		for _, in := range next.Inbounds {
			if in.StreamSettings != nil && in.StreamSettings.Network == "quic" {
				ng.routes = append(ng.routes, route{network: "quic"})
			}
		}
		if ng.wantsHTTP3() != (g.h3 != nil) {
			return errors.New("reload: HTTP/3 would be turned on or off (server.http3, or a quic inbound added or removed): that needs a restart")
		}
	}
	locals := func(c *Config) string {
		var out []InboundConfig
		for _, in := range c.Inbounds {
			if contains(localProtocols, in.Protocol) {
				out = append(out, in)
			}
		}
		b, _ := json.Marshal(out)
		return string(b)
	}
	switch {
	case locals(cur) != locals(next):
		return errors.New("reload: local proxy inbounds (mixed, socks, http) changed: that needs a restart")
	case !same(cur.Admin, next.Admin):
		return errors.New("reload: admin changed: that needs a restart")
	case !same(cur.UDP, next.UDP):
		return errors.New("reload: udp changed: that needs a restart")
	case !same(cur.Timeouts, next.Timeouts):
		return errors.New("reload: timeouts changed: that needs a restart")
	case !same(cur.Log, next.Log):
		return errors.New("reload: log changed: that needs a restart")
	}
	return nil
}
