package gateway

import (
	"fmt"
	"strings"
)

// Describe is `portico check`'s summary of what a config would serve.
func Describe(cfg *Config) string {
	var b strings.Builder
	if s := cfg.Server; s != nil {
		fmt.Fprintf(&b, "front door: %s (TLS %s)\n", orDefault(s.Listen, DefaultListen), orDefault(s.TLS.Source, "self-signed"))
		switch {
		case s.Decoy.Upstream != "":
			fmt.Fprintf(&b, "  decoy: reverse proxy to %s\n", s.Decoy.Upstream)
		case s.Decoy.Dir != "":
			fmt.Fprintf(&b, "  decoy: static folder %s\n", s.Decoy.Dir)
		default:
			fmt.Fprintf(&b, "  decoy: built-in site\n")
		}
		g := Gateway{cfg: cfg}
		if hl := g.httpListen(); hl != "" {
			fmt.Fprintf(&b, "  plain HTTP: %s (redirect to https, ACME HTTP-01)\n", hl)
		}
	}
	for i, in := range cfg.Inbounds {
		tag := orDefault(in.Tag, fmt.Sprintf("%s-%d", in.Protocol, i))
		on := routeDescription(in.StreamSettings)
		switch s := in.settings.(type) {
		case *VLESSInbound:
			fmt.Fprintf(&b, "inbound %s: vless on %s, %d user(s)\n", tag, on, len(s.Clients))
		case *VMessInbound:
			legacy := ""
			if s.AllowLegacy {
				legacy = ", legacy MD5 auth allowed"
			}
			fmt.Fprintf(&b, "inbound %s: vmess on %s, %d user(s)%s\n", tag, on, len(s.Clients), legacy)
		case *AnyTLSInbound:
			fmt.Fprintf(&b, "inbound %s: anytls on %s, %d user(s)\n", tag, on, len(s.Users))
		case *LocalProxyInbound:
			auth := "no auth"
			if len(s.Accounts) > 0 {
				auth = fmt.Sprintf("%d account(s)", len(s.Accounts))
			}
			fmt.Fprintf(&b, "inbound %s: %s proxy on %s, %s\n", tag, in.Protocol, in.Listen, auth)
		}
	}
	if len(cfg.Outbounds) == 0 {
		fmt.Fprintf(&b, "outbound direct (default)\n")
	}
	for i, out := range cfg.Outbounds {
		tag := orDefault(out.Tag, fmt.Sprintf("%s-%d", out.Protocol, i))
		def := ""
		if i == 0 {
			def = " (default)"
		}
		switch s := out.settings.(type) {
		case *VLESSOutbound:
			fmt.Fprintf(&b, "outbound %s: vless to %s:%d%s\n", tag, s.Vnext[0].Address, s.Vnext[0].Port, def)
		case *VMessOutbound:
			fmt.Fprintf(&b, "outbound %s: vmess to %s:%d%s\n", tag, s.Vnext[0].Address, s.Vnext[0].Port, def)
		case *AnyTLSOutbound:
			fmt.Fprintf(&b, "outbound %s: anytls to %s:%d%s\n", tag, s.Address, s.Port, def)
		default:
			fmt.Fprintf(&b, "outbound %s: %s%s\n", tag, out.Protocol, def)
		}
	}
	for i, r := range cfg.Routing.Rules {
		fmt.Fprintf(&b, "rule %d: inbound=%v domain=%v ip=%v port=%q network=%q -> %s\n", i, r.InboundTag, r.Domain, r.IP, r.Port, r.Network, r.OutboundTag)
	}
	return b.String()
}

// routeDescription says where an inbound is reached: the route table of
// `portico check`.
func routeDescription(ss *InboundStream) string {
	if ss == nil {
		return "raw TLS"
	}
	if len(ss.ALPN) > 0 {
		return "raw TLS with ALPN " + strings.Join(ss.ALPN, " or ")
	}
	host := func(h string) string {
		if h == "" {
			return ""
		}
		return " host " + h
	}
	switch ss.Network {
	case "ws":
		return "WebSocket path " + ss.WSSettings.Path + host(ss.WSSettings.Host)
	case "httpupgrade":
		return "HTTP upgrade path " + ss.HTTPUpgradeSettings.Path + host(ss.HTTPUpgradeSettings.Host)
	case "grpc":
		return "gRPC service " + ss.GRPCSettings.ServiceName + " (POST /" + ss.GRPCSettings.ServiceName + "/Tun, /TunMulti)"
	case "quic":
		return "HTTP/3 (QUIC) path " + ss.QUICSettings.Path + host(ss.QUICSettings.Host)
	}
	return "raw TLS"
}
