package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portico-gw/portico/admin"
)

// Config is Portico's JSON config: one file for a server and for a client.
// docs/config.md documents every field and its default. Only this package
// knows the JSON; everything else takes plain option structs.
type Config struct {
	Log       LogConfig        `json:"log"`
	Server    *ServerConfig    `json:"server"`    // the HTTPS front door; nil on a pure client
	Inbounds  []InboundConfig  `json:"inbounds"`  // tunnel protocols (on the front door) and local proxies
	Outbounds []OutboundConfig `json:"outbounds"` // the first is the default; none = direct
	Routing   RoutingConfig    `json:"routing"`
	Timeouts  TimeoutConfig    `json:"timeouts"`
	UDP       UDPConfig        `json:"udp"`
	Admin     *AdminConfig     `json:"admin"`  // the admin API and metrics; nil = off
	Policy    PolicyConfig     `json:"policy"` // what happens to users' tunnels
}

// AdminConfig is the admin API's listener (docs/api.md).
type AdminConfig struct {
	// Listen is a loopback TCP address ("127.0.0.1:9090") or a unix
	// socket ("unix:/run/portico/admin.sock").
	Listen string `json:"listen"`
	// Token is the bearer token; required on TCP (here or in TokenFile).
	Token     string `json:"token"`
	TokenFile string `json:"tokenFile"` // a file holding the token on one line
	// PerUserMetrics adds per-user series to /metrics (one series per
	// user: off by default, for cardinality).
	PerUserMetrics bool `json:"perUserMetrics"`
}

// PolicyConfig says what happens to users and their counters.
type PolicyConfig struct {
	// CloseRemovedUsers ends the open tunnels of a user removed by a
	// reload or the admin API (default: they run on; new ones are refused).
	CloseRemovedUsers bool `json:"closeRemovedUsers"`
	// StatsInterval is how often the counters are saved to the state dir
	// (also on shutdown); default 1m.
	StatsInterval Duration `json:"statsInterval"`
}

// UDPConfig bounds the UDP associations relayed at once; at a bound the
// oldest association is ended.
type UDPConfig struct {
	MaxAssociations          int `json:"maxAssociations"`          // overall; default 4096
	MaxAssociationsPerClient int `json:"maxAssociationsPerClient"` // per client IP; default 256
	// NAT is "full-cone" (default: endpoint-independent mapping and
	// filtering) or "symmetric" (a socket per tunnel, replies only from
	// IPs it sent to); docs/protocols/vless-v1.md §9.3.
	NAT string `json:"nat"`
}

// LogConfig chooses the log level and format.
type LogConfig struct {
	Level  string `json:"level"`  // debug, info (default), warn, error
	Format string `json:"format"` // text (default) or json
}

// ServerConfig is the front door.
type ServerConfig struct {
	Listen     string      `json:"listen"`     // default "127.0.0.1:8443"; ":443" on a real server
	TLS        TLSConfig   `json:"tls"`        //
	HTTPListen string      `json:"httpListen"` // plain HTTP: redirect to https and ACME HTTP-01; default ":80" with ACME, else off; "off" turns it off
	Decoy      DecoyConfig `json:"decoy"`
	// HTTP3 serves the site over HTTP/3 (QUIC) on the listen port number
	// too; it is on by itself when an inbound uses the quic transport.
	HTTP3 bool `json:"http3"`
	// TrustedProxies are CIDRs (or IPs) of reverse proxies whose
	// X-Forwarded-For / X-Real-IP are believed for the client's address on
	// HTTP routes (Caddy on loopback, a CDN's ranges).
	TrustedProxies []string `json:"trustedProxies"`
	// Playground mounts the WebAssembly playground on the site (off when
	// absent).
	Playground *PlaygroundConfig `json:"playground"`
	// Limits bound the connections the front door holds at once.
	Limits LimitsConfig `json:"limits"`
}

// LimitsConfig bounds a listener's connections; 0 means unlimited. A
// connection past a limit is closed right after accept, before TLS (on
// QUIC: refused at its first packet). server.limits applies to the front
// door's TCP listener and, counted apart, its HTTP/3 listener; a local
// proxy's settings.limits to that listener.
type LimitsConfig struct {
	MaxConnections      int `json:"maxConnections"`      // open at once on the listener
	MaxConnectionsPerIP int `json:"maxConnectionsPerIP"` // open at once from one client IP
}

// PlaygroundConfig mounts the playground page under Path.
type PlaygroundConfig struct {
	Path    string `json:"path"`    // e.g. "/playground/"; must start and end with "/"
	WasmDir string `json:"wasmDir"` // folder with portico.wasm and wasm_exec.js; default: next to the executable, else built from a source checkout
}

// TLSConfig says where the front door's certificate comes from.
type TLSConfig struct {
	Source   string     `json:"source"`   // "self-signed" (default), "files", "acme", or "none" behind a TLS-terminating reverse proxy
	Hosts    []string   `json:"hosts"`    // self-signed: names and IPs in the certificate
	StateDir string     `json:"stateDir"` // self-signed: where the certificate is kept; default the state dir
	CertFile string     `json:"certFile"` // files
	KeyFile  string     `json:"keyFile"`  // files
	ACME     ACMEConfig `json:"acme"`
	ALPN     []string   `json:"alpn"` // default ["h2", "http/1.1"]
}

// ACMEConfig configures certificates from an ACME CA.
type ACMEConfig struct {
	Domains    []string `json:"domains"`
	CA         string   `json:"ca"`         // directory URL; default Let's Encrypt
	Email      string   `json:"email"`      //
	Storage    string   `json:"storage"`    // default <state dir>/acme
	CARoot     string   `json:"caRoot"`     // PEM file of a CA root to trust for the directory (tests, private CAs)
	Challenges []string `json:"challenges"` // "http-01", "tls-alpn-01"; default both
}

// DecoyConfig is what everyone without a key sees. Neither set: the
// built-in site.
type DecoyConfig struct {
	Dir      string `json:"dir"`      // serve this folder
	Upstream string `json:"upstream"` // reverse proxy to this URL
}

// InboundConfig is one entry point: a tunnel protocol on the front door
// (vless, …), or a local proxy with its own listener (mixed, socks, http).
type InboundConfig struct {
	Tag            string          `json:"tag"`
	Protocol       string          `json:"protocol"`
	Listen         string          `json:"listen"` // local proxies only
	Settings       json.RawMessage `json:"settings"`
	StreamSettings *InboundStream  `json:"streamSettings"` // tunnel protocols: the transport; none = raw TLS

	settings any // Settings decoded for Protocol by check
}

// InboundStream is the transport a tunnel inbound is served on, in Xray's
// shape. Network "tcp" (the default) is raw TLS on the front door; the
// others are routes on the front door's HTTP server (and, for quic, its
// HTTP/3 server on the same port number over UDP).
type InboundStream struct {
	Network             string        `json:"network"` // tcp, ws, httpupgrade, grpc, quic
	ALPN                []string      `json:"alpn"`    // tcp: serve only connections that negotiated one of these (offered by the front door)
	WSSettings          *PathSettings `json:"wsSettings"`
	HTTPUpgradeSettings *PathSettings `json:"httpupgradeSettings"`
	GRPCSettings        *GRPCSettings `json:"grpcSettings"`
	QUICSettings        *PathSettings `json:"quicSettings"`
}

// PathSettings route a transport by URL path and, optionally, Host.
type PathSettings struct {
	Path            string `json:"path"`            // required, starts with "/"
	Host            string `json:"host"`            // optional Host to match
	EarlyDataHeader string `json:"earlyDataHeader"` // ws: header carrying early data; default Sec-WebSocket-Protocol
}

// GRPCSettings route gRPC "gun" by service name.
type GRPCSettings struct {
	ServiceName string `json:"serviceName"` // required: the tunnel is POST /<serviceName>/Tun (and /TunMulti)
}

// OutboundConfig is one way out.
type OutboundConfig struct {
	Tag            string          `json:"tag"`
	Protocol       string          `json:"protocol"` // direct, block, vless, …
	Settings       json.RawMessage `json:"settings"`
	StreamSettings *StreamSettings `json:"streamSettings"`

	settings any // Settings decoded for Protocol by check
}

// StreamSettings is how a protocol client reaches its server, in V2Ray's
// shape so that existing configs read naturally.
type StreamSettings struct {
	Network             string            `json:"network"`  // tcp (default), ws, httpupgrade, grpc, quic
	Security            string            `json:"security"` // "tls" (default) or "none"
	TLSSettings         ClientTLSSettings `json:"tlsSettings"`
	WSSettings          *PathSettings     `json:"wsSettings"`          // path may carry ?ed=N (early data)
	HTTPUpgradeSettings *PathSettings     `json:"httpupgradeSettings"` //
	GRPCSettings        *GRPCSettings     `json:"grpcSettings"`        //
	QUICSettings        *PathSettings     `json:"quicSettings"`        //
}

// ClientTLSSettings verifies the server. With Pin set, exactly that
// certificate is accepted, whoever signed it.
type ClientTLSSettings struct {
	ServerName    string   `json:"serverName"`
	Pin           string   `json:"pin"` // hex SHA-256 of the server certificate (DER)
	AllowInsecure bool     `json:"allowInsecure"`
	ALPN          []string `json:"alpn"`
}

// RoutingConfig picks an outbound per tunnel.
type RoutingConfig struct {
	Rules []RuleConfig `json:"rules"`
}

// RuleConfig is one routing rule; conditions that are set must all hold.
type RuleConfig struct {
	InboundTag  []string `json:"inboundTag"`
	Domain      []string `json:"domain"`  // suffixes
	IP          []string `json:"ip"`      // CIDRs or single IPs
	Port        string   `json:"port"`    // "53", "80,443", "1000-2000"
	Network     string   `json:"network"` // "tcp" or "udp"
	OutboundTag string   `json:"outboundTag"`
}

// TimeoutConfig holds the gateway's timeouts.
type TimeoutConfig struct {
	Handshake Duration `json:"handshake"` // TLS handshake plus protocol header; default 10s
	Idle      Duration `json:"idle"`      // a tunnel with no bytes either way; default 5m
	Dial      Duration `json:"dial"`      // one outbound dial; default 10s
	Drain     Duration `json:"drain"`     // on shutdown, how long tunnels may finish; default 10s
}

// ByteSize is a number of bytes written as a number or a string with a
// unit: "10GB", "500MiB".
type ByteSize int64

// UnmarshalJSON implements json.Unmarshaler.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		n, err := admin.ParseBytes(s)
		if err != nil {
			return err
		}
		*b = ByteSize(n)
		return nil
	}
	n, err := strconv.ParseInt(string(data), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%s is not a number of bytes", data)
	}
	*b = ByteSize(n)
	return nil
}

// Duration is a time.Duration written as "10s", "1m30s", or a number of
// seconds.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			return fmt.Errorf("%q is not a duration like \"10s\" or \"1m30s\"", s)
		}
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil || secs < 0 {
		return fmt.Errorf("%s is not a duration: use a string like \"10s\" or a number of seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the string form.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// LoadConfig reads and checks a config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and checks a config. Every error names the field by
// its path, e.g. "inbounds[0].settings.clients[2].id: not a UUID".
func ParseConfig(data []byte) (*Config, error) {
	var cfg Config
	if err := decodeStrict(data, &cfg, ""); err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Inbound protocol families.
var (
	tunnelProtocols = []string{"vless", "vmess", "anytls"}
	localProtocols  = []string{"mixed", "socks", "http"}
)

func (c *Config) check() error {
	if err := c.Log.check(); err != nil {
		return err
	}
	if c.UDP.MaxAssociations < 0 || c.UDP.MaxAssociationsPerClient < 0 {
		return fmt.Errorf("udp: maxAssociations and maxAssociationsPerClient must not be negative (0 = the defaults)")
	}
	if n := c.UDP.NAT; n != "" && n != NATFullCone && n != NATSymmetric {
		return fmt.Errorf("udp.nat: %q: want %q (the default) or %q", n, NATFullCone, NATSymmetric)
	}
	if err := c.Admin.check(); err != nil {
		return err
	}
	if c.Policy.StatsInterval < 0 {
		return fmt.Errorf("policy.statsInterval: must not be negative")
	}
	tags := map[string]string{}
	routes := map[string]string{} // transport route -> the inbound that has it
	tunnels := 0
	for i := range c.Inbounds {
		in := &c.Inbounds[i]
		p := fmt.Sprintf("inbounds[%d]", i)
		switch {
		case contains(tunnelProtocols, in.Protocol):
			tunnels++
			if in.Listen != "" {
				return fmt.Errorf("%s.listen: %s inbounds are served on server.listen; remove this field", p, in.Protocol)
			}
			key, err := in.StreamSettings.check(p + ".streamSettings")
			if err != nil {
				return err
			}
			if c.Server != nil && c.Server.TLS.Source == "none" && (strings.HasPrefix(key, "tcp") || strings.HasPrefix(key, "h3 ")) {
				return fmt.Errorf("%s.streamSettings.network: with server.tls.source \"none\" (behind a reverse proxy) only ws, httpupgrade and grpc can be served", p)
			}
			if prev, dup := routes[key]; dup && !strings.HasPrefix(key, "tcp") {
				return fmt.Errorf("%s.streamSettings: the same route as %s (%s)", p, prev, key)
			}
			routes[key] = p
		case contains(localProtocols, in.Protocol):
			if err := checkHostPort(in.Listen, p+".listen", true); err != nil {
				return err
			}
			if in.StreamSettings != nil {
				return fmt.Errorf("%s.streamSettings: local proxies have no transport; remove this field", p)
			}
		case in.Protocol == "":
			return fmt.Errorf("%s.protocol: missing; one of %s", p, strings.Join(append(append([]string{}, tunnelProtocols...), localProtocols...), ", "))
		default:
			return fmt.Errorf("%s.protocol: unknown protocol %q; one of %s", p, in.Protocol, strings.Join(append(append([]string{}, tunnelProtocols...), localProtocols...), ", "))
		}
		if in.Tag != "" {
			if prev, dup := tags[in.Tag]; dup {
				return fmt.Errorf("%s.tag: %q is already the tag of %s", p, in.Tag, prev)
			}
			tags[in.Tag] = p
		}
		if err := checkInboundSettings(in, p); err != nil {
			return err
		}
	}
	if tunnels > 0 && c.Server == nil {
		return fmt.Errorf("server: missing, but inbounds has tunnel protocols that need the front door")
	}
	if c.Server != nil {
		if err := c.Server.check(); err != nil {
			return err
		}
	}
	if len(c.Inbounds) == 0 && c.Server == nil {
		return fmt.Errorf("inbounds: empty; nothing to serve")
	}
	outTags := map[string]string{}
	for i := range c.Outbounds {
		out := &c.Outbounds[i]
		p := fmt.Sprintf("outbounds[%d]", i)
		if out.Tag != "" {
			if prev, dup := outTags[out.Tag]; dup {
				return fmt.Errorf("%s.tag: %q is already the tag of %s", p, out.Tag, prev)
			}
			outTags[out.Tag] = p
		}
		if err := checkOutbound(out, p); err != nil {
			return err
		}
	}
	for i, r := range c.Routing.Rules {
		p := fmt.Sprintf("routing.rules[%d]", i)
		if _, err := r.build(p); err != nil {
			return err
		}
		if _, ok := outTags[r.OutboundTag]; !ok && !(r.OutboundTag == "direct" && len(c.Outbounds) == 0) {
			return fmt.Errorf("%s.outboundTag: no outbound has tag %q", p, r.OutboundTag)
		}
		for _, t := range r.InboundTag {
			if _, ok := tags[t]; !ok {
				return fmt.Errorf("%s.inboundTag: no inbound has tag %q", p, t)
			}
		}
	}
	return nil
}

func (l LogConfig) check() error {
	switch l.Level {
	case "", "debug", "info", "warn", "warning", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", l.Level)
	}
	switch l.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", l.Format)
	}
	return nil
}

func (s *ServerConfig) check() error {
	if err := checkHostPort(s.Listen, "server.listen", false); err != nil {
		return err
	}
	if s.HTTPListen != "" && s.HTTPListen != "off" {
		if err := checkHostPort(s.HTTPListen, "server.httpListen", true); err != nil {
			return err
		}
	}
	t := s.TLS
	switch t.Source {
	case "", "self-signed":
		if t.CertFile != "" || t.KeyFile != "" || len(t.ACME.Domains) > 0 {
			return fmt.Errorf("server.tls.source: certFile/keyFile/acme are set but source is self-signed; set \"source\": \"files\" or \"acme\"")
		}
		for i, h := range t.Hosts {
			if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
				return fmt.Errorf("server.tls.hosts[%d]: %q is not a host name or IP", i, h)
			}
		}
	case "files":
		if t.CertFile == "" {
			return fmt.Errorf("server.tls.certFile: required with source \"files\"")
		}
		if t.KeyFile == "" {
			return fmt.Errorf("server.tls.keyFile: required with source \"files\"")
		}
	case "acme":
		if len(t.ACME.Domains) == 0 {
			return fmt.Errorf("server.tls.acme.domains: required with source \"acme\"")
		}
		for i, d := range t.ACME.Domains {
			if d == "" || strings.ContainsAny(d, " /:") {
				return fmt.Errorf("server.tls.acme.domains[%d]: %q is not a domain name", i, d)
			}
		}
		for i, ch := range t.ACME.Challenges {
			if ch != "http-01" && ch != "tls-alpn-01" {
				return fmt.Errorf("server.tls.acme.challenges[%d]: %q is not http-01 or tls-alpn-01", i, ch)
			}
		}
	case "none":
		if s.HTTP3 {
			return fmt.Errorf("server.http3: HTTP/3 needs TLS; it cannot run with tls.source \"none\"")
		}
	default:
		return fmt.Errorf("server.tls.source: %q is not one of self-signed, files, acme, none", t.Source)
	}
	for i, p := range s.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				return fmt.Errorf("server.trustedProxies[%d]: %q is not a CIDR or IP", i, p)
			}
		}
	}
	if p := s.Playground; p != nil && (!strings.HasPrefix(p.Path, "/") || !strings.HasSuffix(p.Path, "/") || p.Path == "/") {
		return fmt.Errorf("server.playground.path: %q must start and end with / and not be the site's root (like \"/playground/\")", p.Path)
	}
	if s.Decoy.Dir != "" && s.Decoy.Upstream != "" {
		return fmt.Errorf("server.decoy: set dir or upstream, not both")
	}
	return s.Limits.check("server.limits")
}

func (l LimitsConfig) check(path string) error {
	for _, f := range []struct {
		name string
		n    int
	}{{"maxConnections", l.MaxConnections}, {"maxConnectionsPerIP", l.MaxConnectionsPerIP}} {
		if f.n < 0 {
			return fmt.Errorf("%s.%s: %d is negative; want 0 (unlimited) or a positive number", path, f.name, f.n)
		}
	}
	return nil
}

// checkHostPort accepts "host:port", ":port" and "[v6]:port".
func checkHostPort(s, path string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s: required (like \"127.0.0.1:1080\")", path)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port", path, s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("%s: port %q is not a number from 0 to 65535", path, port)
	}
	if host != "" && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%s: %q is not a host", path, host)
	}
	return nil
}

func (r RuleConfig) build(path string) (Rule, error) {
	rule := Rule{Inbounds: r.InboundTag, Outbound: r.OutboundTag}
	if r.OutboundTag == "" {
		return rule, fmt.Errorf("%s.outboundTag: required", path)
	}
	for _, d := range r.Domain {
		rule.Domains = append(rule.Domains, strings.ToLower(strings.TrimSuffix(d, ".")))
	}
	for i, s := range r.IP {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			ip, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return rule, fmt.Errorf("%s.ip[%d]: %q is not an IP or CIDR", path, i, s)
			}
			pfx = netip.PrefixFrom(ip, ip.BitLen())
		}
		rule.IPs = append(rule.IPs, pfx.Masked())
	}
	if r.Port != "" {
		for _, part := range strings.Split(r.Port, ",") {
			lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
			a, err1 := strconv.ParseUint(lo, 10, 16)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.ParseUint(hi, 10, 16)
			}
			if err1 != nil || err2 != nil || b < a {
				return rule, fmt.Errorf("%s.port: %q is not a port list like \"80,443,1000-2000\"", path, r.Port)
			}
			rule.Ports = append(rule.Ports, PortRange{uint16(a), uint16(b)})
		}
	}
	switch r.Network {
	case "":
	case "tcp":
		rule.Network = 1
	case "udp":
		rule.Network = 2
	default:
		return rule, fmt.Errorf("%s.network: %q is not tcp or udp", path, r.Network)
	}
	return rule, nil
}

// Transports a tunnel inbound or a protocol client can use.
var transportNames = []string{"tcp", "ws", "httpupgrade", "grpc", "quic"}

// check validates the transport of a tunnel inbound and returns the route
// it claims, so that two inbounds cannot claim the same one.
func (s *InboundStream) check(path string) (route string, err error) {
	if s == nil || s.Network == "" || s.Network == "tcp" || s.Network == "raw" {
		if s != nil && (s.WSSettings != nil || s.HTTPUpgradeSettings != nil || s.GRPCSettings != nil || s.QUICSettings != nil) {
			return "", fmt.Errorf("%s: transport settings given but network is tcp; set \"network\"", path)
		}
		if s != nil {
			for i, a := range s.ALPN {
				if a == "" || a == "h2" || a == "http/1.1" || a == "acme-tls/1" {
					return "", fmt.Errorf("%s.alpn[%d]: %q cannot select a tunnel inbound (empty, or the site's own)", path, i, a)
				}
			}
			if len(s.ALPN) > 0 {
				return "tcp alpn " + strings.Join(s.ALPN, ","), nil
			}
		}
		return "tcp", nil
	}
	if len(s.ALPN) > 0 {
		return "", fmt.Errorf("%s.alpn: only raw TLS (network tcp) routes by ALPN", path)
	}
	settings := map[string]*PathSettings{"ws": s.WSSettings, "httpupgrade": s.HTTPUpgradeSettings, "quic": s.QUICSettings}
	switch s.Network {
	case "ws", "httpupgrade", "quic":
		ps := settings[s.Network]
		sp := fmt.Sprintf("%s.%sSettings", path, s.Network)
		if ps == nil {
			return "", fmt.Errorf("%s: required with network %q (at least a path)", sp, s.Network)
		}
		if !strings.HasPrefix(ps.Path, "/") || strings.ContainsAny(ps.Path, " ?#") {
			return "", fmt.Errorf("%s.path: %q must start with / and have no query", sp, ps.Path)
		}
		if ps.EarlyDataHeader != "" && s.Network != "ws" {
			return "", fmt.Errorf("%s.earlyDataHeader: only WebSocket carries early data", sp)
		}
		kind := "http"
		if s.Network == "quic" {
			kind = "h3"
		}
		return kind + " " + ps.Host + ps.Path, nil
	case "grpc":
		if s.GRPCSettings == nil || s.GRPCSettings.ServiceName == "" || strings.ContainsAny(s.GRPCSettings.ServiceName, "/ ?#") {
			return "", fmt.Errorf("%s.grpcSettings.serviceName: required, without / (the route is POST /<serviceName>/Tun)", path)
		}
		return "http /" + s.GRPCSettings.ServiceName + "/", nil
	}
	return "", fmt.Errorf("%s.network: %q is not one of %s", path, s.Network, strings.Join(transportNames, ", "))
}

func (a *AdminConfig) check() error {
	if a == nil {
		return nil
	}
	if a.Listen == "" {
		return fmt.Errorf("admin.listen: required (127.0.0.1:PORT or unix:/path/to/socket)")
	}
	if strings.HasPrefix(a.Listen, "unix:") {
		if len(a.Listen) == len("unix:") {
			return fmt.Errorf("admin.listen: %q names no socket file", a.Listen)
		}
	} else {
		host, _, err := net.SplitHostPort(a.Listen)
		if err != nil {
			return fmt.Errorf("admin.listen: %q: %v", a.Listen, err)
		}
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			return fmt.Errorf("admin.listen: %q is not a loopback address; use 127.0.0.1:PORT, [::1]:PORT or a unix socket", a.Listen)
		}
		if a.Token == "" && a.TokenFile == "" {
			return fmt.Errorf("admin: a token (admin.token or admin.tokenFile) is required on TCP; or listen on a unix socket")
		}
	}
	if a.Token != "" && a.TokenFile != "" {
		return fmt.Errorf("admin: give token or tokenFile, not both")
	}
	return nil
}

// AdminToken returns the token from Token or TokenFile ("" on a unix
// socket without one).
func (a *AdminConfig) AdminToken() (string, error) {
	if a.TokenFile == "" {
		return a.Token, nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.tokenFile: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("admin.tokenFile: %s: want one non-empty line", a.TokenFile)
	}
	return tok, nil
}
