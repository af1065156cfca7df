package gateway

import (
	"strings"
	"testing"
	"time"
)

const goodUUID = "b831381d-6324-4d53-ad4f-8cda48b30811"

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"syntax", `{"server": {"listen": "1.2.3.4:1",}}`, "invalid JSON at line 1, column 35"},
		{"truncated", `{"server": {`, "invalid JSON: unexpected end of input"},
		{"trailing", `{} {}`, "unexpected data after the JSON value"},
		{"unknown top", `{"inbound": []}`, `inbound: unknown field (did you mean "inbounds"?)`},
		{"case typo", `{"server": {"Listen": ":1"}}`, `server.Listen: unknown field (did you mean "listen"?)`},
		{"wrong type", `{"server": {"listen": 443}}`, "server.listen: want a string, got a number"},
		{"bad uuid", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}, {"id": "` + goodUUID + `x"}, {"id": "nope"}]}}]}`, "inbounds[0].settings.clients[1].id: not a UUID"},
		{"unknown settings field", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `", "alterid": 1}]}}]}`, "inbounds[0].settings.clients[0].alterid: unknown field"},
		{"dup uuid", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}, {"id": "` + strings.ToUpper(goodUUID) + `"}]}}]}`, "inbounds[0].settings.clients[1].id: same UUID as clients[0]"},
		{"flow", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `", "flow": "xtls-rprx-vision"}]}}]}`, `flow "xtls-rprx-vision" is not supported`},
		{"no clients", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {}}]}`, "inbounds[0].settings.clients: at least one client is required"},
		{"unknown protocol", `{"inbounds": [{"protocol": "trojan"}]}`, `inbounds[0].protocol: unknown protocol "trojan"`},
		{"tunnel without server", `{"inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}]}}]}`, "server: missing"},
		{"local without listen", `{"inbounds": [{"protocol": "mixed"}]}`, "inbounds[0].listen: required"},
		{"bad listen", `{"server": {"listen": "localhost"}}`, `server.listen: "localhost" is not host:port`},
		{"bad port", `{"server": {"listen": ":99999"}}`, `server.listen: port "99999"`},
		{"tls source", `{"server": {"tls": {"source": "letsencrypt"}}}`, `server.tls.source: "letsencrypt" is not one of`},
		{"files need cert", `{"server": {"tls": {"source": "files", "keyFile": "k"}}}`, "server.tls.certFile: required"},
		{"acme needs domains", `{"server": {"tls": {"source": "acme"}}}`, "server.tls.acme.domains: required"},
		{"acme challenge", `{"server": {"tls": {"source": "acme", "acme": {"domains": ["a.b"], "challenges": ["dns-01"]}}}}`, `server.tls.acme.challenges[0]: "dns-01"`},
		{"decoy both", `{"server": {"decoy": {"dir": "/x", "upstream": "http://a"}}}`, "server.decoy: set dir or upstream, not both"},
		{"duration", `{"server": {}, "timeouts": {"idle": "5 minutes"}}`, `timeouts.idle: "5 minutes" is not a duration`},
		{"rule outbound", `{"server": {}, "outbounds": [{"tag": "out", "protocol": "direct"}], "routing": {"rules": [{"outboundTag": "nope"}]}}`, `routing.rules[0].outboundTag: no outbound has tag "nope"`},
		{"rule ip", `{"server": {}, "outbounds": [{"tag": "b", "protocol": "block"}], "routing": {"rules": [{"ip": ["10.0.0.0/40"], "outboundTag": "b"}]}}`, `routing.rules[0].ip[0]: "10.0.0.0/40" is not an IP or CIDR`},
		{"rule port", `{"server": {}, "outbounds": [{"tag": "b", "protocol": "block"}], "routing": {"rules": [{"port": "90-80", "outboundTag": "b"}]}}`, `routing.rules[0].port`},
		{"port range", `{"outbounds": [{"protocol": "vless", "settings": {"vnext": [{"address": "a", "port": 70000, "users": [{"id": "` + goodUUID + `"}]}]}}], "inbounds": [{"protocol": "mixed", "listen": "127.0.0.1:0"}]}`, "outbounds[0].settings.vnext[0].port: 70000 is not a whole number from 0 to 65535"},
		{"pin", `{"outbounds": [{"protocol": "vless", "settings": {"vnext": [{"address": "a", "port": 1, "users": [{"id": "` + goodUUID + `"}]}]}, "streamSettings": {"tlsSettings": {"pin": "abc"}}}], "inbounds": [{"protocol": "mixed", "listen": "127.0.0.1:0"}]}`, "outbounds[0].streamSettings.tlsSettings.pin: want 64 hex digits"},
		{"dup tag", `{"inbounds": [{"tag": "a", "protocol": "mixed", "listen": ":1"}, {"tag": "a", "protocol": "socks", "listen": ":2"}]}`, `inbounds[1].tag: "a" is already the tag of inbounds[0]`},
		{"log level", `{"log": {"level": "loud"}, "server": {}}`, `log.level: "loud"`},
		{"empty", `{}`, "inbounds: empty; nothing to serve"},
		{"conn limit", `{"server": {"limits": {"maxConnections": -1}}}`, "server.limits.maxConnections: -1 is negative; want 0 (unlimited) or a positive number"},
		{"conn limit per ip", `{"server": {"limits": {"maxConnectionsPerIP": -5}}}`, "server.limits.maxConnectionsPerIP: -5 is negative"},
		{"conn limit type", `{"server": {"limits": {"maxConnections": "10"}}}`, "server.limits.maxConnections: want a number, got a string"},
		{"conn limit field", `{"server": {"limits": {"maxConns": 10}}}`, "server.limits.maxConns: unknown field"},
		{"udp bounds", `{"server": {}, "udp": {"maxAssociations": -1}}`, "udp: maxAssociations and maxAssociationsPerClient must not be negative"},
		{"admin not loopback", `{"admin": {"listen": "0.0.0.0:9090", "token": "t"}}`, `admin.listen: "0.0.0.0:9090" is not a loopback address`},
		{"admin no token", `{"admin": {"listen": "127.0.0.1:9090"}}`, "admin: a token (admin.token or admin.tokenFile) is required on TCP"},
		{"admin no listen", `{"admin": {"token": "t"}}`, "admin.listen: required"},
		{"user quota", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `", "quota": "10 parsecs"}]}}]}`, "inbounds[0].settings.clients[0].quota:"},
		{"user expiry", `{"server": {}, "inbounds": [{"protocol": "vmess", "settings": {"clients": [{"id": "` + goodUUID + `", "expiry": "tomorrow"}]}}]}`, `inbounds[0].settings.clients[0].expiry: "tomorrow" is not an RFC 3339 time`},
		{"user field typo", `{"server": {}, "inbounds": [{"protocol": "anytls", "settings": {"users": [{"password": "p", "quotas": 1}]}}]}`, `inbounds[0].settings.users[0].quotas: unknown field (did you mean "quota"?)`},
		{"udp nat", `{"server": {}, "udp": {"nat": "cone"}}`, `udp.nat: "cone": want "full-cone" (the default) or "symmetric"`},
		{"vmess detour", `{"server": {}, "inbounds": [{"protocol": "vmess", "settings": {"clients": [{"id": "` + goodUUID + `"}], "detour": {"to": "dyn"}}}]}`, `"default" and "detour" (V2Ray's dynamic port) are not supported`},
		{"vmess alterId", `{"server": {}, "inbounds": [{"protocol": "vmess", "settings": {"clients": [{"id": "` + goodUUID + `", "alterId": 70000}]}}]}`, "inbounds[0].settings.clients[0].alterId: 70000 is not from 0 to 65535"},
		{"vmess security", `{"inbounds": [{"protocol": "mixed", "listen": ":1"}], "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{"address": "a", "port": 1, "users": [{"id": "` + goodUUID + `", "security": "aes-256-gcm"}]}]}}]}`, `outbounds[0].settings.vnext[0].users[0].security: "aes-256-gcm" is not one of`},
		{"anytls users", `{"server": {}, "inbounds": [{"protocol": "anytls", "settings": {"users": [{"password": "a"}, {"password": "a"}]}}]}`, "inbounds[0].settings.users[1].password: same password as users[0]"},
		{"anytls scheme", `{"server": {}, "inbounds": [{"protocol": "anytls", "settings": {"users": [{"password": "a"}], "paddingScheme": "stop=x"}}]}`, "inbounds[0].settings.paddingScheme:"},
		{"anytls without tls", `{"inbounds": [{"protocol": "mixed", "listen": ":1"}], "outbounds": [{"protocol": "anytls", "settings": {"address": "a", "port": 1, "password": "p"}, "streamSettings": {"security": "none"}}]}`, "AnyTLS runs only under TLS"},
		{"vless v1 without tls", `{"inbounds": [{"protocol": "mixed", "listen": ":1"}], "outbounds": [{"protocol": "vless", "settings": {"version": 1, "vnext": [{"address": "a", "port": 1, "users": [{"id": "` + goodUUID + `"}]}]}, "streamSettings": {"security": "none"}}]}`, "VLESS v1 runs only under TLS"},
		{"vless v0 with v1 options", `{"inbounds": [{"protocol": "mixed", "listen": ":1"}], "outbounds": [{"protocol": "vless", "settings": {"keepAlive": true, "vnext": [{"address": "a", "port": 1, "users": [{"id": "` + goodUUID + `"}]}]}}]}`, `are VLESS v1 features; set "version": 1`},
		{"vless padding", `{"inbounds": [{"protocol": "mixed", "listen": ":1"}], "outbounds": [{"protocol": "vless", "settings": {"version": 1, "padding": "10-20", "vnext": [{"address": "a", "port": 1, "users": [{"id": "` + goodUUID + `"}]}]}}]}`, "sizes must be from 292"},
		{"ws without path", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}]}, "streamSettings": {"network": "ws"}}]}`, "inbounds[0].streamSettings.wsSettings: required with network \"ws\""},
		{"alpn on ws", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}]}, "streamSettings": {"network": "ws", "alpn": ["x"], "wsSettings": {"path": "/a"}}}]}`, "inbounds[0].streamSettings.alpn: only raw TLS (network tcp) routes by ALPN"},
		{"alpn h2", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}]}, "streamSettings": {"alpn": ["h2"]}}]}`, `inbounds[0].streamSettings.alpn[0]: "h2" cannot select a tunnel inbound`},
		{"same route twice", `{"server": {}, "inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `"}]}, "streamSettings": {"network": "ws", "wsSettings": {"path": "/a"}}}, {"protocol": "anytls", "settings": {"users": [{"password": "p"}]}, "streamSettings": {"network": "ws", "wsSettings": {"path": "/a"}}}]}`, "inbounds[1].streamSettings: the same route as inbounds[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatalf("accepted, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q\nwant it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestParseConfigGood(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{
		"log": {"level": "debug", "format": "json"},
		"server": {"listen": "127.0.0.1:0", "tls": {"source": "self-signed", "hosts": ["example.test", "127.0.0.1"]}},
		"inbounds": [
			{"tag": "v", "protocol": "vless", "settings": {"decryption": "none", "clients": [{"id": "` + goodUUID + `", "email": "a@b", "level": 1}]}},
			{"tag": "local", "protocol": "mixed", "listen": "127.0.0.1:0", "settings": {"accounts": [{"user": "u", "pass": "p"}]}},
			{"tag": "w", "protocol": "vmess", "settings": {"clients": [{"id": "` + goodUUID + `"}]}, "streamSettings": {"network": "ws", "wsSettings": {"path": "/ray"}}},
			{"tag": "g", "protocol": "anytls", "settings": {"users": [{"password": "p"}]}, "streamSettings": {"network": "grpc", "grpcSettings": {"serviceName": "tun"}}}
		],
		"outbounds": [{"tag": "direct", "protocol": "freedom"}, {"tag": "block", "protocol": "blackhole"}],
		"routing": {"rules": [{"domain": ["ads.example"], "port": "80,443,1000-2000", "outboundTag": "block"}]},
		"timeouts": {"handshake": "3s", "idle": 90, "drain": "1m"}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Timeouts.Idle.Or(0); got != 90*time.Second {
		t.Errorf("idle = %v, want 90s", got)
	}
	if got := cfg.Timeouts.Dial.Or(7 * time.Second); got != 7*time.Second {
		t.Errorf("dial default = %v", got)
	}
	s, ok := cfg.Inbounds[0].settings.(*VLESSInbound)
	if !ok || s.Clients[0].Email != "a@b" || s.Clients[0].Level != 1 {
		t.Fatalf("vless settings = %#v", cfg.Inbounds[0].settings)
	}
	r, err := cfg.Routing.Rules[0].build("r")
	if err != nil || len(r.Ports) != 3 || r.Ports[2] != (PortRange{1000, 2000}) {
		t.Fatalf("rule = %+v, %v", r, err)
	}
	d := Describe(cfg)
	for _, want := range []string{"front door: 127.0.0.1:0 (TLS self-signed)", "inbound v: vless on raw TLS, 1 user(s)",
		"inbound w: vmess on WebSocket path /ray, 1 user(s)", "inbound g: anytls on gRPC service tun (POST /tun/Tun, /TunMulti), 1 user(s)", "inbound local: mixed proxy on 127.0.0.1:0, 1 account(s)", "outbound direct: freedom (default)", "-> block"} {
		if !strings.Contains(d, want) {
			t.Errorf("Describe lacks %q:\n%s", want, d)
		}
	}
}

func TestConfigUserLimitsAndAdmin(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"server": {}, "admin": {"listen": "unix:/run/portico/admin.sock", "perUserMetrics": true},
		"policy": {"closeRemovedUsers": true, "statsInterval": "30s"},
		"inbounds": [{"protocol": "vless", "settings": {"clients": [{"id": "` + goodUUID + `", "email": "a", "quota": "10GB", "expiry": "2027-01-01T00:00:00Z"}]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Inbounds[0].settings.(*VLESSInbound).Clients[0]
	if c.Quota != 10_000_000_000 || c.expiry().Year() != 2027 {
		t.Fatalf("limits %+v", c.UserLimits)
	}
	if !cfg.Admin.PerUserMetrics || !cfg.Policy.CloseRemovedUsers || time.Duration(cfg.Policy.StatsInterval) != 30*time.Second {
		t.Fatalf("admin %+v policy %+v", cfg.Admin, cfg.Policy)
	}
}
