package gateway

import (
	"fmt"
	"net"
	"strconv"

	"github.com/portico-gw/portico/protocols/links"
)

// ServerLinks returns a share link for every user of every tunnel inbound of
// a server config. host overrides the address clients should dial (default:
// the first ACME domain, else the listen host, with a wildcard listen read
// as 127.0.0.1). pin is the self-signed certificate's pin, "" for a
// certificate clients can verify by its chain.
func ServerLinks(cfg *Config, host, pin string) ([]links.Link, error) {
	if cfg.Server == nil {
		return nil, fmt.Errorf("links: the config has no server section")
	}
	lhost, lport, err := net.SplitHostPort(cfg.Server.Listen)
	if err != nil {
		lhost, lport = "", "443"
	}
	port, _ := strconv.ParseUint(lport, 10, 16)
	sni := ""
	if cfg.Server.TLS.Source == "acme" {
		sni = cfg.Server.TLS.ACME.Domains[0]
	}
	if host == "" {
		host = sni
	}
	if host == "" {
		host = lhost
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	var out []links.Link
	for _, in := range cfg.Inbounds {
		withTransport := func(l links.Link) links.Link {
			ss := in.StreamSettings
			if ss == nil || ss.Network == "" || ss.Network == "tcp" {
				return l
			}
			l.Transport = ss.Network
			l.Name += "-" + ss.Network
			switch ss.Network {
			case "ws":
				// Early data rides the upgrade, as Xray clients expect from ed=.
				l.Path, l.HostHeader = ss.WSSettings.Path+"?ed=2048", ss.WSSettings.Host
			case "httpupgrade":
				l.Path, l.HostHeader = ss.HTTPUpgradeSettings.Path, ss.HTTPUpgradeSettings.Host
			case "grpc":
				l.ServiceName = ss.GRPCSettings.ServiceName
			case "quic":
				l.Path, l.HostHeader = ss.QUICSettings.Path, ss.QUICSettings.Host
			}
			if cfg.Server.TLS.Source == "none" {
				l.Security, l.Pin = "none", ""
			}
			return l
		}
		n := len(out)
		switch s := in.settings.(type) {
		case *VLESSInbound:
			for _, c := range s.Clients {
				name := "portico-vless"
				if c.Email != "" && c.Email != "default" {
					name += "-" + c.Email
				}
				base := links.Link{Protocol: "vless", ID: c.ID, Host: host, Port: uint16(port),
					Name: name, Transport: "tcp", Security: "tls", SNI: sni, Pin: pin, Encryption: "none"}
				v1 := base
				v1.Name, v1.Version, v1.KeepAlive = name+"-v1", 1, true
				out = append(out, base, v1)
			}
		case *VMessInbound:
			for _, c := range s.Clients {
				name := "portico-vmess"
				if c.Email != "" && c.Email != "default" {
					name += "-" + c.Email
				}
				out = append(out, links.Link{Protocol: "vmess", ID: c.ID, AlterID: c.AlterID, Cipher: "auto", Host: host,
					Port: uint16(port), Name: name, Transport: "tcp", Security: "tls", SNI: sni, Pin: pin})
			}
		case *AnyTLSInbound:
			for _, u := range s.Users {
				name := "portico-anytls"
				if u.Email != "" && u.Email != "default" {
					name += "-" + u.Email
				}
				out = append(out, links.Link{Protocol: "anytls", ID: u.Password, Host: host, Port: uint16(port),
					Name: name, Transport: "tcp", Security: "tls", SNI: sni, Pin: pin})
			}
		}
		kept := out[:n]
		for _, l := range out[n:] {
			if l = withTransport(l); l.Version == 1 && l.Security != "tls" {
				continue // VLESS v1 is defined only under TLS
			}
			kept = append(kept, l)
		}
		out = kept
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("links: the config has no tunnel inbound with users")
	}
	return out, nil
}

// ClientConfigFromLink is the config `portico client LINK` runs: a mixed
// SOCKS5/HTTP listener on listen whose tunnels all go out through the link.
// warn is set when the link turns certificate checks off.
func ClientConfigFromLink(l links.Link, listen string) (cfg *Config, warn string, err error) {
	if listen == "" {
		listen = "127.0.0.1:1080"
	}
	out := OutboundConfig{Tag: "proxy", Protocol: l.Protocol}
	ss := &StreamSettings{Network: l.Transport, Security: l.Security,
		TLSSettings: ClientTLSSettings{ServerName: l.SNI, Pin: l.Pin, AllowInsecure: l.Insecure, ALPN: l.ALPN}}
	if l.Insecure && l.Pin == "" && l.Security == "tls" {
		warn = "the link turns off certificate checks (allowInsecure): anyone on the path can read the tunnel; prefer a link with pin="
	}
	switch l.Protocol {
	case "vless":
		settings := VLESSOutbound{Vnext: []VLESSServer{{Address: l.Host, Port: l.Port,
			Users: []VLESSOutUser{{ID: l.ID, Flow: l.Flow, Encryption: l.Encryption}}}},
			Version: l.Version, KeepAlive: l.KeepAlive, ResolveAddr: l.Resolve}
		if l.PadMax > 0 {
			settings.Padding = fmt.Sprintf("%d-%d", l.PadMin, l.PadMax)
		}
		out.Settings = mustJSON(settings)
	case "vmess":
		out.Settings = mustJSON(VMessOutbound{Vnext: []VMessServer{{Address: l.Host, Port: l.Port,
			Users: []VMessOutUser{{ID: l.ID, AlterID: l.AlterID, Security: l.Cipher}}}}})
	case "anytls":
		out.Settings = mustJSON(AnyTLSOutbound{Address: l.Host, Port: l.Port, Password: l.ID})
	default:
		return nil, "", fmt.Errorf("links: protocol %q is not supported", l.Protocol)
	}
	switch l.Transport {
	case "ws":
		ss.WSSettings = &PathSettings{Path: orDefault(l.Path, "/"), Host: l.HostHeader}
	case "httpupgrade":
		ss.HTTPUpgradeSettings = &PathSettings{Path: orDefault(l.Path, "/"), Host: l.HostHeader}
	case "grpc":
		ss.GRPCSettings = &GRPCSettings{ServiceName: l.ServiceName}
	case "quic":
		ss.QUICSettings = &PathSettings{Path: orDefault(l.Path, "/"), Host: l.HostHeader}
	}
	out.StreamSettings = ss
	cfg = &Config{
		Inbounds:  []InboundConfig{{Tag: "local", Protocol: "mixed", Listen: listen}},
		Outbounds: []OutboundConfig{out},
	}
	if err := cfg.check(); err != nil {
		return nil, "", fmt.Errorf("link: %w", err)
	}
	return cfg, warn, nil
}

// Edge is an edge worker (wasm/edge, Cloudflare Workers) in front of a
// gateway's WebSocket inbounds: what its clients dial instead.
type Edge struct {
	Host      string // the worker's name: what clients dial, their SNI and Host header
	Port      uint16 // 0 = 443
	Path      string // the worker's WS_PATH; "" = each inbound's own path (what origin mode forwards)
	EarlyData int    // bytes of early data (?ed=N in the path, Xray's convention); 0 = none
}

// MaxEdgeEarlyData is the largest ?ed= of an edge link: Xray's maximum,
// and what transports/ws and the worker accept.
const MaxEdgeEarlyData = 8192

// EdgeLinks returns ServerLinks for cfg's WebSocket tunnel inbounds,
// rewritten to reach them through e: host, SNI and Host header e.Host, its
// port, TLS verified by the certificate's chain (no pin), e's path with
// ?ed=, and "-edge" after the name. skipped are the tags of the tunnel
// inbounds that are not WebSocket, which an edge cannot carry.
func EdgeLinks(cfg *Config, e Edge) (ls []links.Link, skipped []string, err error) {
	if cfg.Server == nil {
		return nil, nil, fmt.Errorf("links: the config has no server section")
	}
	if e.Host == "" || e.EarlyData < 0 || e.EarlyData > MaxEdgeEarlyData {
		return nil, nil, fmt.Errorf("links: edge %q with early data %d", e.Host, e.EarlyData)
	}
	if e.Port == 0 {
		e.Port = 443
	}
	for i, in := range cfg.Inbounds {
		switch in.settings.(type) {
		case *VLESSInbound, *VMessInbound, *AnyTLSInbound:
		default:
			continue // a local proxy, not a tunnel
		}
		if in.StreamSettings == nil || in.StreamSettings.Network != "ws" {
			skipped = append(skipped, in.Tag)
			continue
		}
		one := *cfg
		one.Inbounds = cfg.Inbounds[i : i+1]
		inLinks, err := ServerLinks(&one, e.Host, "")
		if err != nil {
			continue // no users
		}
		path := e.Path
		if path == "" {
			path = in.StreamSettings.WSSettings.Path
		}
		if e.EarlyData > 0 {
			path += "?ed=" + strconv.Itoa(e.EarlyData)
		}
		for _, l := range inLinks {
			l.Port, l.Path, l.HostHeader = e.Port, path, e.Host
			l.Security, l.SNI, l.Pin, l.Insecure, l.ALPN = "tls", e.Host, "", false, nil
			l.Name += "-edge"
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		return nil, skipped, fmt.Errorf("links: the config has no WebSocket tunnel inbound with users, and an edge carries only WebSocket")
	}
	return ls, skipped, nil
}
