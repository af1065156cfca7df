package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/acme"
	"github.com/portico-gw/portico/internal/connlimit"
	"github.com/portico-gw/portico/protocols/anytls/anytlsclient"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/httpproxy"
	"github.com/portico-gw/portico/protocols/socks"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
	"github.com/portico-gw/portico/protocols/vmess/vmessclient"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
	"github.com/portico-gw/portico/transports/grpc"
	"github.com/portico-gw/portico/transports/httpupgrade"
	"github.com/portico-gw/portico/transports/quic"
	"github.com/portico-gw/portico/transports/rawtls"
	"github.com/portico-gw/portico/transports/ws"
)

// Options are what the command line adds to a config.
type Options struct {
	StateDir string       // for self-signed certificates and ACME storage; default DefaultStateDir()
	Log      *slog.Logger // default slog.Default()
	// ConfigPath is the file the config came from: Reload reads it again.
	// Empty (the embedded default): Reload has nothing to read.
	ConfigPath string
	// Listen, when set, overrides server.listen (the -listen flag), on
	// reloads too.
	Listen string
	// Version is the build's version, for metrics.
	Version string
	// PlaygroundWasm and PlaygroundWasmExec are the files server.playground
	// serves (portico.wasm and wasm_exec.js); the command line finds them.
	PlaygroundWasm, PlaygroundWasmExec string
}

// Gateway is a config brought to life: the front door, the local proxy
// listeners, the router and its outbounds. New builds it, Start listens,
// Shutdown drains.
type Gateway struct {
	cfg    *Config // as started: what only a restart changes comes from here
	opts   Options
	log    *slog.Logger
	router *Router

	// root is the running gateway when this one was built by a reload to
	// lend it its new parts: routes built here must serve through the
	// running gateway's router and life. Nil otherwise.
	root *Gateway

	current      atomic.Pointer[Config]          // the config now in force (the last reload's)
	users        atomic.Pointer[inboundRegistry] // tunnel inbounds and their users
	reloadMu     sync.Mutex                      // one reload or user change at a time
	refusedLog   rateLog                         // users refused for quota or expiry
	quicLimitLog rateLog                         // QUIC connections refused by server.limits
	failures     handshakeFailures               // for metrics
	site         *swapHandler                    // the site with its tunnel routes; a reload swaps it
	certNow      atomic.Pointer[certHolder]      // the certificate source in force
	siteNext     http.Handler                    // built by a reload's gateway, for root.site
	raw          []RawProtocol                   // the raw-TLS protocols as built
	statsFile    string                          // where the counters are kept; "" = not kept
	statsLog     rateLog
	adminLn      net.Listener
	adminSrv     *http.Server

	front     *FrontDoor
	certs     acme.Source
	selfCert  *acme.Static // set for self-signed, for pins in links
	acmeMgr   *acme.Manager
	redirect  *http.Server
	locals    []*localInbound
	routes    []route // tunnel inbounds served on HTTP routes (ws, httpupgrade, grpc, quic)
	h3        *quic.Server
	udp       net.PacketConn
	listeners []net.Listener
	frontLn   net.Listener

	wg     sync.WaitGroup
	life   context.Context // cancelled by Shutdown: every tunnel's parent
	cancel context.CancelFunc
}

type localInbound struct {
	tag, protocol, listen string
	socks                 *socks.Server
	http                  *httpproxy.Server
	slots                 *connlimit.Slots // nil: no connection limit
	limitLog              rateLog
}

// New builds a gateway from a checked config. It reads certificate files and
// creates the state it needs, but opens no listener.
func New(cfg *Config, opts Options) (*Gateway, error) {
	return newGateway(cfg, opts, nil)
}

// newGateway builds a gateway; with prev (a reload), it reuses prev's
// protocol servers, outbounds and certificates where the config left them
// unchanged, so that their sessions and pools live on.
func newGateway(cfg *Config, opts Options, prev *Gateway) (*Gateway, error) {
	if opts.Listen != "" && cfg.Server != nil {
		cfg.Server.Listen = opts.Listen
	}
	g := &Gateway{cfg: cfg, log: opts.Log, opts: opts, root: prev}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.current.Store(cfg)
	outs, defOut, err := buildOutbounds(cfg.Outbounds)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		prev.reuseOutbounds(cfg, outs)
	}
	var rules []Rule
	for i, rc := range cfg.Routing.Rules {
		r, err := rc.build(fmt.Sprintf("routing.rules[%d]", i))
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	g.router, err = NewRouter(RouterOptions{Outbounds: outs, Default: defOut, Rules: rules,
		Idle: cfg.Timeouts.Idle.Or(5 * time.Minute), DialTimeout: cfg.Timeouts.Dial.Or(10 * time.Second), Log: g.log,
		MaxAssociations: cfg.UDP.MaxAssociations, MaxAssociationsPerClient: cfg.UDP.MaxAssociationsPerClient, NAT: cfg.UDP.NAT})
	if err != nil {
		return nil, err
	}

	var raw []RawProtocol
	reg := newInboundRegistry()
	secure := cfg.Server == nil || cfg.Server.TLS.Source != "none"
	for i, in := range cfg.Inbounds {
		tag := in.Tag
		if tag == "" {
			tag = fmt.Sprintf("%s-%d", in.Protocol, i)
		}
		if s, ok := in.settings.(*LocalProxyInbound); ok {
			users := map[string]string{}
			for _, a := range s.Accounts {
				users[a.User] = a.Pass
			}
			li := &localInbound{tag: tag, protocol: in.Protocol, listen: in.Listen,
				slots: connlimit.New(s.Limits.MaxConnections, s.Limits.MaxConnectionsPerIP)}
			hs := cfg.Timeouts.Handshake.Or(10 * time.Second)
			if in.Protocol != "http" {
				li.socks = &socks.Server{Users: users, Inbound: tag, Log: g.log, HandshakeTimeout: hs}
			}
			if in.Protocol != "socks" {
				li.http = &httpproxy.Server{Users: users, Inbound: tag, Log: g.log, HeaderTimeout: hs}
			}
			g.locals = append(g.locals, li)
			continue
		}
		network := "tcp"
		if in.StreamSettings != nil && in.StreamSettings.Network != "" && in.StreamSettings.Network != "raw" {
			network = in.StreamSettings.Network
		}
		transport := network
		if network == "tcp" {
			transport = "tls"
		}
		identity := inboundIdentity(in, tag)
		var p RawProtocol
		var srv any
		if old := prev.reusableInbound(tag, identity); old != nil {
			p, srv = old.proto, old.server
		} else {
			p, srv, err = g.protocolServer(in.settings, tag, transport, secure || network == "quic")
			if err != nil {
				return nil, fmt.Errorf("inbounds[%d]: %w", i, err)
			}
		}
		ti := &tunnelInbound{tag: tag, protocol: in.Protocol, transport: transport, server: srv, proto: p,
			identity: identity, users: configUsers(in.settings)}
		if prev != nil && srv != nil {
			// A reused server gets the new config's users; a new one has them.
			if err := ti.apply(ti.users); err != nil {
				return nil, fmt.Errorf("inbounds[%d]: %w", i, err)
			}
		}
		reg.add(ti)
		if network == "tcp" {
			if in.StreamSettings != nil {
				p.ALPN = in.StreamSettings.ALPN
			}
			raw = append(raw, p)
		} else {
			g.routes = append(g.routes, route{inbound: in, proto: p, network: network})
		}
	}

	// Cheap matchers first: VLESS and AnyTLS are a map look-up, VMess costs
	// an AES block per user.
	cost := map[string]int{"vless": 0, "anytls": 1, "vmess": 2}
	slices.SortStableFunc(raw, func(a, b RawProtocol) int { return cost[a.Name] - cost[b.Name] })
	reg.refreshLimits()
	g.users.Store(reg)
	g.raw = raw
	if cfg.Server != nil {
		if err := g.buildFront(cfg.Server, raw, opts, prev); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// protocolServer builds the server of one tunnel inbound. secure says the
// carrier is TLS (VLESS v1 needs it).
func (g *Gateway) protocolServer(settings any, tag, transport string, secure bool) (RawProtocol, any, error) {
	switch s := settings.(type) {
	case *VLESSInbound:
		users := make([]vlessserver.User, 0, len(s.Clients))
		for _, c := range s.Clients {
			users = append(users, vlessserver.User{ID: uuid.MustParse(c.ID), Email: c.Email, Level: c.Level, Flow: c.Flow})
		}
		// Under TLS v1 is accepted beside v0 (the first byte decides per
		// connection).
		srv, err := vlessserver.New(vlessserver.Options{Users: users, Inbound: tag, Transport: transport, Log: g.log, Admit: g.live().admit,
			V1: secure, Secure: secure})
		if err != nil {
			return RawProtocol{}, nil, err
		}
		return RawProtocol{Name: "vless", Inbound: tag, Match: srv.Match, Server: srv}, srv, nil
	case *VMessInbound:
		users := make([]vmessserver.User, 0, len(s.Clients))
		for _, c := range s.Clients {
			users = append(users, vmessserver.User{ID: uuid.MustParse(c.ID), AlterID: c.AlterID, Email: c.Email, Level: c.Level})
		}
		srv, err := vmessserver.New(vmessserver.Options{Users: users, Inbound: tag, Transport: transport, Log: g.log, Admit: g.live().admit,
			AllowLegacy:               s.AllowLegacy || envFalse("V2RAY_VMESS_AEAD_FORCED") || envFalse("v2ray.vmess.aead.forced"),
			DisableInsecureEncryption: s.DisableInsecureEncryption})
		if err != nil {
			return RawProtocol{}, nil, err
		}
		return RawProtocol{Name: "vmess", Inbound: tag, Match: srv.Match, Server: srv}, srv, nil
	case *AnyTLSInbound:
		users := make([]anytlsserver.User, 0, len(s.Users))
		for _, u := range s.Users {
			users = append(users, anytlsserver.User{Password: u.Password, Email: u.Email, Level: u.Level})
		}
		srv, err := anytlsserver.New(anytlsserver.Options{Users: users, PaddingScheme: s.PaddingScheme,
			MaxStreams: s.MaxStreams, Inbound: tag, Transport: transport, Log: g.log, Admit: g.live().admit})
		if err != nil {
			return RawProtocol{}, nil, err
		}
		return RawProtocol{Name: "anytls", Inbound: tag, Match: srv.Match, Server: srv}, srv, nil
	}
	return RawProtocol{}, nil, fmt.Errorf("no server for %T", settings)
}

func buildOutbounds(list []OutboundConfig) (map[string]tunnel.Dialer, string, error) {
	outs := map[string]tunnel.Dialer{}
	if len(list) == 0 {
		outs["direct"] = &Direct{}
		return outs, "direct", nil
	}
	def := ""
	for i, oc := range list {
		tag := oc.Tag
		if tag == "" {
			tag = fmt.Sprintf("%s-%d", oc.Protocol, i)
		}
		if def == "" {
			def = tag
		}
		var d tunnel.Dialer
		switch s := oc.settings.(type) {
		case *DirectOutbound:
			dd := &Direct{}
			if s.Bind != "" {
				dd.Bind = netip.MustParseAddr(s.Bind)
			}
			d = dd
		case *VLESSOutbound:
			c, err := vlessOutbound(s, oc.StreamSettings)
			if err != nil {
				return nil, "", fmt.Errorf("outbounds[%d]: %w", i, err)
			}
			d = c
		case *VMessOutbound:
			v := s.Vnext[0]
			carrier, err := carrierDialer(v.Address, v.Port, oc.StreamSettings)
			if err != nil {
				return nil, "", fmt.Errorf("outbounds[%d]: %w", i, err)
			}
			u := v.Users[0]
			c, err := vmessclient.New(vmessclient.Options{ID: uuid.MustParse(u.ID), AlterID: u.AlterID,
				Security: u.Security, ForceLegacy: envTrue("V2RAY_VMESS_AEAD_DISABLED"), Carrier: carrier})
			if err != nil {
				return nil, "", fmt.Errorf("outbounds[%d]: %w", i, err)
			}
			d = c
		case *AnyTLSOutbound:
			carrier, err := carrierDialer(s.Address, s.Port, oc.StreamSettings)
			if err != nil {
				return nil, "", fmt.Errorf("outbounds[%d]: %w", i, err)
			}
			c, err := anytlsclient.New(anytlsclient.Options{Password: s.Password, Carrier: carrier,
				IdleSessionCheckInterval: time.Duration(s.IdleSessionCheckInterval),
				IdleSessionTimeout:       time.Duration(s.IdleSessionTimeout), MinIdleSession: s.MinIdleSession,
				UDPPerPacket: s.UDPPerPacket})
			if err != nil {
				return nil, "", fmt.Errorf("outbounds[%d]: %w", i, err)
			}
			d = c
		default:
			if oc.Protocol == "block" || oc.Protocol == "blackhole" {
				d = Block{}
			} else {
				d = &Direct{}
			}
		}
		outs[tag] = d
	}
	return outs, def, nil
}

func vlessOutbound(s *VLESSOutbound, ss *StreamSettings) (*vlessclient.Client, error) {
	v := s.Vnext[0]
	carrier, err := carrierDialer(v.Address, v.Port, ss)
	if err != nil {
		return nil, err
	}
	lo, hi, _ := s.padRange()
	return vlessclient.New(vlessclient.Options{ID: uuid.MustParse(v.Users[0].ID), Flow: v.Users[0].Flow, Carrier: carrier,
		Version: s.Version, Secure: ss == nil || ss.Security != "none",
		KeepAlive: s.KeepAlive, PoolSize: s.PoolSize, PoolIdleTimeout: time.Duration(s.PoolIdleTimeout),
		ResolveAddr: s.ResolveAddr, PadMin: lo, PadMax: hi})
}

// carrierDialer turns streamSettings into the transport a protocol client
// dials: raw TLS (or plain TCP), WebSocket, HTTP upgrade, gRPC or QUIC.
func carrierDialer(host string, port uint16, ss *StreamSettings) (tunnel.ConnDialer, error) {
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	if ss == nil {
		ss = &StreamSettings{}
	}
	var cfg *tls.Config
	if ss.Security != "none" {
		t := ss.TLSSettings
		sni := t.ServerName
		if sni == "" && net.ParseIP(host) == nil {
			sni = host
		}
		var err error
		if cfg, err = rawtls.ClientConfig(sni, t.Pin, t.AllowInsecure, t.ALPN); err != nil {
			return nil, err
		}
	}
	scheme := "http"
	if cfg != nil {
		scheme = "https"
	}
	switch ss.Network {
	case "ws":
		return &ws.Dialer{URL: strings.Replace(scheme, "http", "ws", 1) + "://" + addr + ss.WSSettings.Path, Host: ss.WSSettings.Host, TLS: cfg,
			EarlyDataHeader: ss.WSSettings.EarlyDataHeader}, nil
	case "httpupgrade":
		return &httpupgrade.Dialer{URL: scheme + "://" + addr + ss.HTTPUpgradeSettings.Path, Host: ss.HTTPUpgradeSettings.Host, TLS: cfg}, nil
	case "grpc":
		return &grpc.Dialer{Address: addr, ServiceName: ss.GRPCSettings.ServiceName, TLS: cfg}, nil
	case "quic":
		return &quic.Dialer{Address: addr, Path: ss.QUICSettings.Path, Host: ss.QUICSettings.Host, TLS: cfg}, nil
	}
	return &rawtls.Dialer{Address: addr, TLS: cfg}, nil
}

func (g *Gateway) buildFront(sc *ServerConfig, raw []RawProtocol, opts Options, prev *Gateway) error {
	stateDir := opts.StateDir
	if sc.TLS.StateDir != "" {
		stateDir = sc.TLS.StateDir
	}
	needState := func() (string, error) {
		if stateDir == "" {
			d, err := DefaultStateDir()
			if err != nil {
				return "", err
			}
			stateDir = d
		}
		return stateDir, EnsureStateDir(stateDir)
	}
	alpn := sc.TLS.ALPN
	if len(alpn) == 0 {
		alpn = []string{"h2", "http/1.1"}
	}
	for _, p := range raw {
		for _, a := range p.ALPN {
			if !slices.Contains(alpn, a) {
				alpn = append(alpn, a) // offered so that the inbound can be reached
			}
		}
	}
	if prev != nil && prev.cfg.Server != nil && reflect.DeepEqual(prev.current.Load().Server.TLS, sc.TLS) {
		// Unchanged: keep the running source (and its renewals, its pin).
		g.certs, g.selfCert, g.acmeMgr = prev.certs, prev.selfCert, prev.acmeMgr
		if h := prev.certNow.Load(); h != nil {
			g.certs = h.src
		}
		if prev.acmeMgr != nil {
			alpn = append(alpn, prev.acmeMgr.NextProtos()...)
		}
	} else if err := g.buildCerts(sc, prev, needState, &alpn); err != nil {
		return err
	}
	g.certNow.Store(&certHolder{g.certs})

	var site http.Handler
	switch {
	case sc.Decoy.Upstream != "":
		h, err := ProxySite(sc.Decoy.Upstream)
		if err != nil {
			return fmt.Errorf("server.decoy.upstream: %w", err)
		}
		site = h
	case sc.Decoy.Dir != "":
		var fsys fs.FS
		fsys, err := DirSite(sc.Decoy.Dir)
		if err != nil {
			return fmt.Errorf("server.decoy.dir: %w", err)
		}
		site = SiteHandler(fsys)
	default:
		site = SiteHandler(BuiltinSite())
	}
	var trusted []netip.Prefix
	for _, t := range sc.TrustedProxies {
		trusted = append(trusted, parsePrefix(t))
	}
	if pg := sc.Playground; pg != nil {
		if opts.PlaygroundWasm == "" || opts.PlaygroundWasmExec == "" {
			return fmt.Errorf("server.playground: portico.wasm and wasm_exec.js were not found (set server.playground.wasmDir)")
		}
		site = mountPlayground(site, pg.Path, PlaygroundHandler(opts.PlaygroundWasm, opts.PlaygroundWasmExec))
	}
	// The site's requests get the handshake timeout to send their bodies
	// too; tunnel routes are not under it.
	site = siteReadDeadline(site, g.handshakeTimeout())
	handler := g.routeTable(site, trusted)
	if prev != nil {
		g.siteNext = handler
		return nil // the running front door, its TLS and HTTP/3 stay
	}
	g.site = newSwapHandler(handler)
	var tlsCfg *tls.Config
	if g.certs != nil {
		tlsCfg = &tls.Config{GetCertificate: g.getCertificate, NextProtos: alpn, MinVersion: tls.VersionTLS12}
	}
	g.front = &FrontDoor{
		TLS:              tlsCfg,
		HTTP:             g.site,
		Protocols:        raw,
		Handler:          g.router,
		Log:              g.log,
		HandshakeTimeout: g.handshakeTimeout(),

		failures:            &g.failures,
		MaxConnections:      sc.Limits.MaxConnections,
		MaxConnectionsPerIP: sc.Limits.MaxConnectionsPerIP,
	}
	if g.wantsHTTP3() {
		g.h3 = &quic.Server{TLS: &tls.Config{GetCertificate: g.getCertificate, MinVersion: tls.VersionTLS13},
			Handler: g.site, Log: g.log,
			Limits: connlimit.New(sc.Limits.MaxConnections, sc.Limits.MaxConnectionsPerIP)}
		if g.h3.Limits != nil {
			h3 := g.h3
			h3.Refused = func(why connlimit.Refusal, source net.Addr) {
				logRefusal(g.log, &g.quicLimitLog, h3.Limits, why, "server.limits.", source, "listener", "quic")
			}
		}
	}
	return nil
}

// buildCerts builds the certificate source sc asks for. A reload may swap
// a self-signed or files source for another; ACME settings need a restart.
func (g *Gateway) buildCerts(sc *ServerConfig, prev *Gateway, needState func() (string, error), alpnp *[]string) error {
	alpn := *alpnp
	defer func() { *alpnp = alpn }()
	if prev != nil && (sc.TLS.Source == "acme" || prev.acmeMgr != nil) {
		return fmt.Errorf("server.tls: changing ACME settings needs a restart")
	}
	switch sc.TLS.Source {
	case "", "self-signed":
		dir, err := needState()
		if err != nil {
			return err
		}
		st, err := acme.SelfSigned(dir, sc.TLS.Hosts)
		if err != nil {
			return err
		}
		g.certs, g.selfCert = st, st
	case "files":
		fsrc, err := acme.Files(sc.TLS.CertFile, sc.TLS.KeyFile, g.log)
		if err != nil {
			return err
		}
		g.certs = fsrc
	case "acme":
		a := sc.TLS.ACME
		storage := a.Storage
		if storage == "" {
			dir, err := needState()
			if err != nil {
				return err
			}
			storage = filepath.Join(dir, "acme")
		}
		var roots *x509.CertPool
		if a.CARoot != "" {
			pem, err := os.ReadFile(a.CARoot)
			if err != nil {
				return fmt.Errorf("server.tls.acme.caRoot: %w", unwrapPathErr(err))
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("server.tls.acme.caRoot: %s holds no PEM certificate", a.CARoot)
			}
		}
		mo := acme.ACMEOptions{Domains: a.Domains, CA: a.CA, Email: a.Email, StorageDir: storage,
			TrustedRoots: roots, Log: g.log}
		if len(a.Challenges) > 0 {
			mo.DisableHTTP01 = !contains(a.Challenges, "http-01")
			mo.DisableTLSALPN01 = !contains(a.Challenges, "tls-alpn-01")
		}
		_, httpsPort, _ := net.SplitHostPort(sc.Listen)
		mo.AltTLSALPNPort = atoiOr(httpsPort, 0)
		if hl := g.httpListen(); hl != "" {
			_, p, _ := net.SplitHostPort(hl)
			mo.AltHTTPPort = atoiOr(p, 0)
		}
		m, err := acme.NewACME(mo)
		if err != nil {
			return err
		}
		g.certs, g.acmeMgr = m, m
		alpn = append(alpn, m.NextProtos()...)
	}

	return nil
}

// wantsHTTP3 says whether the front door also serves HTTP/3 (QUIC) on its
// port number: when a tunnel inbound uses it, or the config asks for it.
func (g *Gateway) wantsHTTP3() bool {
	if g.cfg.Server.HTTP3 {
		return true
	}
	for _, rt := range g.routes {
		if rt.network == "quic" {
			return true
		}
	}
	return false
}

// parsePrefix reads a checked CIDR or single IP.
func parsePrefix(s string) netip.Prefix {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked()
	}
	ip := netip.MustParseAddr(s)
	return netip.PrefixFrom(ip, ip.BitLen())
}

// envTrue and envFalse read V2Ray's boolean environment switches, so that a
// setting a V2Ray user already made carries over.
func envTrue(name string) bool  { return strings.EqualFold(os.Getenv(name), "true") }
func envFalse(name string) bool { return strings.EqualFold(os.Getenv(name), "false") }

func atoiOr(s string, def int) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		return def
	}
	return n
}

// httpListen is the plain-HTTP listener's address, "" when off.
func (g *Gateway) httpListen() string {
	sc := g.cfg.Server
	switch {
	case sc == nil || sc.HTTPListen == "off":
		return ""
	case sc.HTTPListen != "":
		return sc.HTTPListen
	case sc.TLS.Source == "acme":
		return ":80"
	}
	return ""
}

// Pin is the SHA-256 pin of the self-signed certificate, "" otherwise.
func (g *Gateway) Pin() string {
	if h := g.certNow.Load(); h != nil {
		// The source in force: a reload may have swapped it.
		if st, ok := h.src.(*acme.Static); ok && st != nil {
			return st.Pin()
		}
		return ""
	}
	if g.selfCert == nil {
		return ""
	}
	return g.selfCert.Pin()
}

// Router returns the gateway's router (counters, active tunnels).
func (g *Gateway) Router() *Router { return g.router }

// Start opens every listener and starts serving. ctx bounds the start only
// (obtaining an ACME certificate can take a while); the gateway then runs
// until Shutdown. On error nothing is left listening.
func (g *Gateway) Start(ctx context.Context) error {
	g.life, g.cancel = context.WithCancel(context.Background())
	life := g.life
	fail := func(err error) error {
		for _, ln := range g.listeners {
			ln.Close()
		}
		if g.h3 != nil && g.udp != nil {
			g.h3.Close()
			g.udp.Close()
		}
		g.listeners = nil
		g.cancel()
		return err
	}
	if g.front != nil {
		g.front.BaseContext = life
		ln, err := listen(g.cfg.Server.Listen, "server.listen")
		if err != nil {
			return fail(err)
		}
		g.frontLn = ln
		g.listeners = append(g.listeners, ln)
		if g.h3 != nil {
			// HTTP/3 on the same port number over UDP, advertised by Alt-Svc
			// on every TCP answer as modern sites do.
			pc, err := net.ListenPacket("udp", ln.Addr().String())
			if err != nil {
				return fail(fmt.Errorf("server.listen (UDP, for HTTP/3): %w", err))
			}
			g.udp = pc
			port := ln.Addr().(*net.TCPAddr).Port
			g.front.HTTP = quic.AltSvc(g.front.HTTP, port)
			g.goServe(func() { g.h3.Serve(pc) })
		}
		if hl := g.httpListen(); hl != "" {
			hln, err := listen(hl, "server.httpListen")
			if err != nil {
				return fail(err)
			}
			g.listeners = append(g.listeners, hln)
			var h http.Handler = RedirectHandler(portOf(ln.Addr()))
			if g.acmeMgr != nil {
				h = g.acmeMgr.HTTPChallengeHandler(h)
			}
			g.redirect = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slogErrorLog(g.log)}
			g.goServe(func() { g.redirect.Serve(hln) })
		}
	}
	lns := make([]net.Listener, len(g.locals))
	for i, li := range g.locals {
		ln, err := listen(li.listen, fmt.Sprintf("inbound %q listen", li.tag))
		if err != nil {
			return fail(err)
		}
		lns[i] = ln
		g.listeners = append(g.listeners, ln)
	}
	if g.acmeMgr != nil {
		// Serve first: the CA validates through our own listeners.
		g.goServe(func() { g.front.Serve(g.frontLn) })
		g.log.Info("obtaining certificate", "domains", g.cfg.Server.TLS.ACME.Domains)
		if err := g.acmeMgr.Manage(ctx); err != nil {
			g.front.Close()
			return fail(fmt.Errorf("acme: %w", err))
		}
	} else if g.front != nil {
		g.goServe(func() { g.front.Serve(g.frontLn) })
	}
	for i, li := range g.locals {
		ln, li := lns[i], li
		g.goServe(func() { g.serveLocal(life, ln, li) })
	}
	if g.front != nil {
		g.log.Info("serving", "listen", g.frontLn.Addr().String(), "tls", orDefault(g.cfg.Server.TLS.Source, "self-signed"), "raw_tls_inbounds", len(g.front.Protocols), "routes", len(g.routes), "http3", g.h3 != nil)
	}
	for i, li := range g.locals {
		g.log.Info("local proxy", "protocol", li.protocol, "listen", lns[i].Addr().String())
	}
	if err := g.startOperations(life); err != nil {
		g.Shutdown(context.Background())
		return err
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

func (g *Gateway) goServe(f func()) {
	g.wg.Add(1)
	go func() { defer g.wg.Done(); f() }()
}

// listen opens a TCP listener with an error a user can act on.
func listen(addr, what string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return nil, fmt.Errorf("%s: %s is already in use by another program", what, addr)
		case errors.Is(err, syscall.EACCES):
			return nil, fmt.Errorf("%s: no permission to listen on %s (ports below 1024 need root or CAP_NET_BIND_SERVICE)", what, addr)
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			return nil, fmt.Errorf("%s: %s is not an address of this machine", what, addr)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ln, nil
}

// Addr is the front door's address once started.
func (g *Gateway) Addr() net.Addr {
	if g.frontLn == nil {
		return nil
	}
	return g.frontLn.Addr()
}

// LocalAddrs are the local proxy listeners' addresses once started.
func (g *Gateway) LocalAddrs() []net.Addr {
	var out []net.Addr
	for _, ln := range g.listeners {
		if ln != g.frontLn {
			out = append(out, ln.Addr())
		}
	}
	return out
}

// Shutdown stops accepting, lets tunnels finish until ctx is done, then
// closes what is left.
func (g *Gateway) Shutdown(ctx context.Context) error {
	// Stop accepting everywhere first; then tunnels and in-flight requests
	// finish side by side until ctx is done.
	for _, ln := range g.listeners {
		ln.Close()
	}
	var (
		wg      sync.WaitGroup
		httpErr error
	)
	if g.front != nil {
		wg.Add(1)
		go func() { defer wg.Done(); httpErr = g.front.Shutdown(ctx) }()
	}
	if g.redirect != nil {
		wg.Add(1)
		go func() { defer wg.Done(); g.redirect.Shutdown(ctx) }()
	}
	err := g.router.Wait(ctx)
	if err != nil {
		g.log.Warn("shutdown: tunnels still open at the deadline are cut", "open", g.router.Active())
	}
	if g.cancel != nil {
		g.cancel() // ends every tunnel still relaying
	}
	if g.h3 != nil && g.udp != nil {
		// Its tunnels are over (the router waited for them); QUIC
		// connections of clients that vanished would otherwise hold a
		// graceful shutdown until their idle timeout.
		g.h3.Close()
		g.udp.Close()
	}
	wg.Wait()
	if err == nil {
		err = httpErr
	}
	if g.front != nil {
		g.front.Close()
	}
	if g.acmeMgr != nil {
		g.acmeMgr.Stop()
	}
	if g.adminSrv != nil {
		g.adminSrv.Close()
	}
	g.saveStats()
	g.router.closeOutbounds()
	g.wg.Wait()
	return err
}

// serveLocal accepts local proxy clients. A mixed listener tells SOCKS5
// (first byte 5) from HTTP by the first byte.
func (g *Gateway) serveLocal(ctx context.Context, ln net.Listener, li *localInbound) {
	hsTimeout := g.cfg.Timeouts.Handshake.Or(10 * time.Second)
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		if li.slots != nil {
			release, why := li.slots.Take(remoteAddrPort(c).Addr())
			if release == nil {
				c.Close()
				logRefusal(g.log, &li.limitLog, li.slots, why, "inbounds["+li.tag+"].settings.limits.", c.RemoteAddr())
				continue
			}
			c = connlimit.Wrap(c, release)
		}
		go func() {
			c.SetDeadline(time.Now().Add(hsTimeout))
			h := &inboundHandler{next: g.router, carrier: c, inbound: li.tag, source: remoteAddrPort(c)}
			var srv tunnel.Server = li.socks
			if li.socks == nil {
				srv = li.http
			} else if li.http != nil {
				first := make([]byte, 1)
				if _, err := c.Read(first); err != nil {
					c.Close()
					return
				}
				if first[0] != 5 {
					srv = li.http
				}
				c = newPrefixConn(c, nil, first)
			}
			if err := srv.ServeConn(ctx, c, h); err != nil {
				g.log.Debug("local proxy", "inbound", li.tag, "source", c.RemoteAddr().String(), "err", err)
			}
			c.Close()
		}()
	}
}
