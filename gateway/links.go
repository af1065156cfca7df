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
