package gateway

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vmess"
)

// Protocol settings, in the shapes V2Ray and Xray users already write.

// VLESSInbound is inbounds[].settings for protocol "vless".
type VLESSInbound struct {
	Clients    []VLESSClient `json:"clients"`
	Decryption string        `json:"decryption"` // must be "none" (or empty), as in V2Ray
}

// VLESSClient is one VLESS user.
type VLESSClient struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Level int    `json:"level"`
	Flow  string `json:"flow"`
	UserLimits
}

// UserLimits are a user's optional quota and expiry; past either, the
// user is refused like a wrong key.
type UserLimits struct {
	Quota  ByteSize `json:"quota"`  // bytes up and down together, e.g. 10737418240 or "10GB"; 0 = none
	Expiry string   `json:"expiry"` // RFC 3339, e.g. "2027-01-01T00:00:00Z"; empty = never
}

// VMessInbound is inbounds[].settings for protocol "vmess", as V2Ray's
// manual describes it.
type VMessInbound struct {
	Clients                   []VMessClient   `json:"clients"`
	DisableInsecureEncryption bool            `json:"disableInsecureEncryption"` // refuse security none and the legacy CFB
	AllowLegacy               bool            `json:"allowLegacy"`               // accept legacy MD5 auth (alterId > 0); env V2RAY_VMESS_AEAD_FORCED=false does too
	Default                   json.RawMessage `json:"default,omitempty"`         // V2Ray's dynamic port: refused with a message
	Detour                    json.RawMessage `json:"detour,omitempty"`          // V2Ray's dynamic port: refused with a message
}

// VMessClient is one VMess user.
type VMessClient struct {
	ID      string `json:"id"`
	AlterID int    `json:"alterId"` // 0 = VMessAEAD; > 0 admits legacy clients (with allowLegacy)
	Email   string `json:"email"`
	Level   int    `json:"level"`
	UserLimits
}

// VMessOutbound is outbounds[].settings for protocol "vmess".
type VMessOutbound struct {
	Vnext []VMessServer `json:"vnext"`
}

// VMessServer is one server of a VMess outbound.
type VMessServer struct {
	Address string         `json:"address"`
	Port    uint16         `json:"port"`
	Users   []VMessOutUser `json:"users"`
}

// VMessOutUser is the identity a VMess outbound presents.
type VMessOutUser struct {
	ID       string `json:"id"`
	AlterID  int    `json:"alterId"`  // 0 = AEAD
	Security string `json:"security"` // aes-128-gcm, chacha20-poly1305, auto (default), none, zero
	Level    int    `json:"level"`
}

// AnyTLSInbound is inbounds[].settings for protocol "anytls".
type AnyTLSInbound struct {
	Users         []AnyTLSUser `json:"users"`
	PaddingScheme string       `json:"paddingScheme"` // the scheme text (lines); empty = the protocol's default
	MaxStreams    int          `json:"maxStreams"`    // per session; 0 = 128
}

// AnyTLSUser is one AnyTLS user.
type AnyTLSUser struct {
	Password string `json:"password"`
	Email    string `json:"email"`
	Level    int    `json:"level"`
	UserLimits
}

// AnyTLSOutbound is outbounds[].settings for protocol "anytls".
type AnyTLSOutbound struct {
	Address                  string   `json:"address"`
	Port                     uint16   `json:"port"`
	Password                 string   `json:"password"`
	IdleSessionCheckInterval Duration `json:"idleSessionCheckInterval"` // default 30s
	IdleSessionTimeout       Duration `json:"idleSessionTimeout"`       // default 60s
	MinIdleSession           int      `json:"minIdleSession"`
	// UDPPerPacket sends UDP in udp-over-tcp's per-packet-address mode
	// (one stream for every destination; full cone with a full-cone
	// server) instead of connect mode.
	UDPPerPacket bool `json:"udpPerPacket"`
}

// LocalProxyInbound is inbounds[].settings for mixed, socks and http.
type LocalProxyInbound struct {
	Accounts []Account `json:"accounts"` // none = no authentication
	// Limits bound the connections the listener holds at once, as
	// server.limits does for the front door.
	Limits LimitsConfig `json:"limits"`
}

// Account is a user name and password for a local proxy.
type Account struct {
	User string `json:"user"`
	Pass string `json:"pass"`
}

// DirectOutbound is outbounds[].settings for protocol "direct".
type DirectOutbound struct {
	Bind string `json:"bind"` // local IP to dial from
}

// VLESSOutbound is outbounds[].settings for protocol "vless". The fields
// after vnext are Portico's VLESS v1 (docs/protocols/vless-v1.md).
type VLESSOutbound struct {
	Vnext           []VLESSServer `json:"vnext"`
	Version         int           `json:"version"`         // 0 (default) or 1; 1 needs TLS
	KeepAlive       bool          `json:"keepAlive"`       // v1: reuse connections
	PoolSize        int           `json:"poolSize"`        // v1 keep-alive: idle connections kept (default 4)
	PoolIdleTimeout Duration      `json:"poolIdleTimeout"` // v1 keep-alive: default 60s
	ResolveAddr     bool          `json:"resolveAddr"`     // v1: ask for the dialled address
	Padding         string        `json:"padding"`         // v1: "MIN-MAX" handshake size range, e.g. "300-1100"
}

// VLESSServer is one server of a VLESS outbound.
type VLESSServer struct {
	Address string         `json:"address"`
	Port    uint16         `json:"port"`
	Users   []VLESSOutUser `json:"users"`
}

// VLESSOutUser is the identity a VLESS outbound presents.
type VLESSOutUser struct {
	ID         string `json:"id"`
	Flow       string `json:"flow"`
	Encryption string `json:"encryption"` // "none" (or empty)
	Level      int    `json:"level"`
}

var outboundProtocols = []string{"direct", "block", "vless", "vmess", "anytls"}

func decodeSettings(raw json.RawMessage, v any, path string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return decodeStrict(raw, v, path)
}

func checkUUID(s, path string) error {
	if s == "" {
		return fmt.Errorf("%s: required (a UUID; `portico uuid` makes one)", path)
	}
	if _, err := uuid.Parse(s); err != nil || len(s) != 36 {
		return fmt.Errorf("%s: not a UUID (want the 36-character form, e.g. from `portico uuid`)", path)
	}
	return nil
}

func checkFlow(flow, path string) error {
	if flow != "" {
		return fmt.Errorf("%s: flow %q is not supported; Portico speaks VLESS without flow (remove the field)", path, flow)
	}
	return nil
}

func checkInboundSettings(in *InboundConfig, path string) error {
	sp := path + ".settings"
	switch in.Protocol {
	case "vless":
		var s VLESSInbound
		if err := decodeSettings(in.Settings, &s, sp); err != nil {
			return err
		}
		if s.Decryption != "" && s.Decryption != "none" {
			return fmt.Errorf("%s.decryption: must be \"none\"", sp)
		}
		if len(s.Clients) == 0 {
			return fmt.Errorf("%s.clients: at least one client is required", sp)
		}
		seen := map[string]int{}
		for i, c := range s.Clients {
			cp := fmt.Sprintf("%s.clients[%d]", sp, i)
			if err := checkUUID(c.ID, cp+".id"); err != nil {
				return err
			}
			id := strings.ToLower(c.ID)
			if j, dup := seen[id]; dup {
				return fmt.Errorf("%s.id: same UUID as clients[%d]", cp, j)
			}
			seen[id] = i
			if err := checkFlow(c.Flow, cp+".flow"); err != nil {
				return err
			}
			if err := c.UserLimits.check(cp); err != nil {
				return err
			}
		}
		in.settings = &s
	case "vmess":
		var s VMessInbound
		if err := decodeSettings(in.Settings, &s, sp); err != nil {
			return err
		}
		if present(s.Default) || present(s.Detour) {
			return fmt.Errorf("%s: \"default\" and \"detour\" (V2Ray's dynamic port) are not supported by Portico; remove them (one port serves every user)", sp)
		}
		if len(s.Clients) == 0 {
			return fmt.Errorf("%s.clients: at least one client is required", sp)
		}
		seen := map[string]int{}
		for i, c := range s.Clients {
			cp := fmt.Sprintf("%s.clients[%d]", sp, i)
			if err := checkUUID(c.ID, cp+".id"); err != nil {
				return err
			}
			id := strings.ToLower(c.ID)
			if j, dup := seen[id]; dup {
				return fmt.Errorf("%s.id: same UUID as clients[%d]", cp, j)
			}
			seen[id] = i
			if c.AlterID < 0 || c.AlterID > 65535 {
				return fmt.Errorf("%s.alterId: %d is not from 0 to 65535", cp, c.AlterID)
			}
			if err := c.UserLimits.check(cp); err != nil {
				return err
			}
		}
		in.settings = &s
	case "anytls":
		var s AnyTLSInbound
		if err := decodeSettings(in.Settings, &s, sp); err != nil {
			return err
		}
		if len(s.Users) == 0 {
			return fmt.Errorf("%s.users: at least one user is required", sp)
		}
		seen := map[string]int{}
		for i, u := range s.Users {
			if u.Password == "" {
				return fmt.Errorf("%s.users[%d].password: required", sp, i)
			}
			if j, dup := seen[u.Password]; dup {
				return fmt.Errorf("%s.users[%d].password: same password as users[%d]", sp, i, j)
			}
			seen[u.Password] = i
			if err := u.UserLimits.check(fmt.Sprintf("%s.users[%d]", sp, i)); err != nil {
				return err
			}
		}
		if s.PaddingScheme != "" {
			if _, err := anytls.ParseScheme([]byte(s.PaddingScheme)); err != nil {
				return fmt.Errorf("%s.paddingScheme: %v", sp, err)
			}
		}
		if s.MaxStreams < 0 {
			return fmt.Errorf("%s.maxStreams: must not be negative", sp)
		}
		in.settings = &s
	case "mixed", "socks", "http":
		var s LocalProxyInbound
		if err := decodeSettings(in.Settings, &s, sp); err != nil {
			return err
		}
		for i, a := range s.Accounts {
			if a.User == "" {
				return fmt.Errorf("%s.accounts[%d].user: required", sp, i)
			}
		}
		if err := s.Limits.check(sp + ".limits"); err != nil {
			return err
		}
		in.settings = &s
	}
	return nil
}

func checkOutbound(out *OutboundConfig, path string) error {
	sp := path + ".settings"
	switch out.Protocol {
	case "direct", "freedom":
		var s DirectOutbound
		if err := decodeSettings(out.Settings, &s, sp); err != nil {
			return err
		}
		if s.Bind != "" {
			if _, err := netip.ParseAddr(s.Bind); err != nil {
				return fmt.Errorf("%s.bind: %q is not an IP address", sp, s.Bind)
			}
		}
		out.settings = &s
	case "block", "blackhole":
		var s struct{}
		if err := decodeSettings(out.Settings, &s, sp); err != nil {
			return err
		}
	case "vless":
		var s VLESSOutbound
		if err := decodeSettings(out.Settings, &s, sp); err != nil {
			return err
		}
		if len(s.Vnext) != 1 {
			return fmt.Errorf("%s.vnext: exactly one server is supported, got %d", sp, len(s.Vnext))
		}
		v := s.Vnext[0]
		vp := sp + ".vnext[0]"
		if v.Address == "" {
			return fmt.Errorf("%s.address: required", vp)
		}
		if v.Port == 0 {
			return fmt.Errorf("%s.port: required", vp)
		}
		if len(v.Users) != 1 {
			return fmt.Errorf("%s.users: exactly one user is supported, got %d", vp, len(v.Users))
		}
		u := v.Users[0]
		if err := checkUUID(u.ID, vp+".users[0].id"); err != nil {
			return err
		}
		if err := checkFlow(u.Flow, vp+".users[0].flow"); err != nil {
			return err
		}
		if u.Encryption != "" && u.Encryption != "none" {
			return fmt.Errorf("%s.users[0].encryption: must be \"none\"", vp)
		}
		if err := s.checkV1(sp, out.StreamSettings); err != nil {
			return err
		}
		if err := out.StreamSettings.check(path + ".streamSettings"); err != nil {
			return err
		}
		out.settings = &s
	case "vmess":
		var s VMessOutbound
		if err := decodeSettings(out.Settings, &s, sp); err != nil {
			return err
		}
		if len(s.Vnext) != 1 {
			return fmt.Errorf("%s.vnext: exactly one server is supported, got %d", sp, len(s.Vnext))
		}
		v := s.Vnext[0]
		vp := sp + ".vnext[0]"
		switch {
		case v.Address == "":
			return fmt.Errorf("%s.address: required", vp)
		case v.Port == 0:
			return fmt.Errorf("%s.port: required", vp)
		case len(v.Users) != 1:
			return fmt.Errorf("%s.users: exactly one user is supported, got %d", vp, len(v.Users))
		}
		u := v.Users[0]
		if err := checkUUID(u.ID, vp+".users[0].id"); err != nil {
			return err
		}
		if u.AlterID < 0 || u.AlterID > 65535 {
			return fmt.Errorf("%s.users[0].alterId: %d is not from 0 to 65535", vp, u.AlterID)
		}
		if u.Security != "" {
			if _, err := vmess.ParseSecurity(u.Security); err != nil {
				return fmt.Errorf("%s.users[0].security: %q is not one of aes-128-gcm, chacha20-poly1305, auto, none, zero", vp, u.Security)
			}
		}
		if err := out.StreamSettings.check(path + ".streamSettings"); err != nil {
			return err
		}
		out.settings = &s
	case "anytls":
		var s AnyTLSOutbound
		if err := decodeSettings(out.Settings, &s, sp); err != nil {
			return err
		}
		switch {
		case s.Address == "":
			return fmt.Errorf("%s.address: required", sp)
		case s.Port == 0:
			return fmt.Errorf("%s.port: required", sp)
		case s.Password == "":
			return fmt.Errorf("%s.password: required", sp)
		case s.MinIdleSession < 0:
			return fmt.Errorf("%s.minIdleSession: must not be negative", sp)
		}
		if ss := out.StreamSettings; ss != nil && ss.Security == "none" {
			return fmt.Errorf("%s.streamSettings.security: AnyTLS runs only under TLS", path)
		}
		if err := out.StreamSettings.check(path + ".streamSettings"); err != nil {
			return err
		}
		out.settings = &s
	case "":
		return fmt.Errorf("%s.protocol: missing; one of %s", path, strings.Join(outboundProtocols, ", "))
	default:
		return fmt.Errorf("%s.protocol: unknown protocol %q; one of %s", path, out.Protocol, strings.Join(outboundProtocols, ", "))
	}
	return nil
}

func (s *VLESSOutbound) checkV1(path string, ss *StreamSettings) error {
	switch s.Version {
	case 0:
		if s.KeepAlive || s.ResolveAddr || s.Padding != "" || s.PoolSize != 0 || s.PoolIdleTimeout != 0 {
			return fmt.Errorf("%s: keepAlive, poolSize, poolIdleTimeout, resolveAddr and padding are VLESS v1 features; set \"version\": 1", path)
		}
		return nil
	case 1:
	default:
		return fmt.Errorf("%s.version: %d is not a VLESS version (0 or 1)", path, s.Version)
	}
	if ss != nil && ss.Security == "none" {
		return fmt.Errorf("%s.version: VLESS v1 runs only under TLS; set streamSettings.security to \"tls\" or use version 0", path)
	}
	if s.PoolSize < 0 {
		return fmt.Errorf("%s.poolSize: must not be negative", path)
	}
	if _, _, err := s.padRange(); err != nil {
		return fmt.Errorf("%s.padding: %v", path, err)
	}
	return nil
}

// padRange parses Padding ("" = off).
func (s *VLESSOutbound) padRange() (lo, hi int, err error) {
	if s.Padding == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s.Padding, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a range like \"300-1100\"", s.Padding)
	}
	if lo < vless.MinPadTo || hi > vless.MaxPadTo {
		return 0, 0, fmt.Errorf("%q: sizes must be from %d (the longest header) to %d", s.Padding, vless.MinPadTo, vless.MaxPadTo)
	}
	return lo, hi, nil
}

func (s *StreamSettings) check(path string) error {
	if s == nil {
		return nil
	}
	switch s.Network {
	case "", "tcp", "raw":
	case "ws", "httpupgrade", "quic":
		ps := map[string]*PathSettings{"ws": s.WSSettings, "httpupgrade": s.HTTPUpgradeSettings, "quic": s.QUICSettings}[s.Network]
		if ps == nil || !strings.HasPrefix(ps.Path, "/") {
			return fmt.Errorf("%s.%sSettings.path: required, starting with /", path, s.Network)
		}
		if s.Network == "quic" && s.Security == "none" {
			return fmt.Errorf("%s.security: QUIC always runs TLS; remove \"none\"", path)
		}
	case "grpc":
		if s.GRPCSettings == nil || s.GRPCSettings.ServiceName == "" {
			return fmt.Errorf("%s.grpcSettings.serviceName: required", path)
		}
	default:
		return fmt.Errorf("%s.network: %q is not one of %s", path, s.Network, strings.Join(transportNames, ", "))
	}
	switch s.Security {
	case "", "tls", "none":
	default:
		return fmt.Errorf("%s.security: %q is not one of tls, none", path, s.Security)
	}
	if p := s.TLSSettings.Pin; p != "" {
		if len(p) != 64 || strings.Trim(strings.ToLower(p), "0123456789abcdef") != "" {
			return fmt.Errorf("%s.tlsSettings.pin: want 64 hex digits (SHA-256 of the certificate)", path)
		}
	}
	return nil
}

// present reports whether an optional raw field was given a value.
func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs of this package are marshalled
	}
	return b
}

func (l UserLimits) check(path string) error {
	if l.Quota < 0 {
		return fmt.Errorf("%s.quota: must not be negative", path)
	}
	if l.Expiry != "" {
		if _, err := time.Parse(time.RFC3339, l.Expiry); err != nil {
			return fmt.Errorf("%s.expiry: %q is not an RFC 3339 time (like 2027-01-01T00:00:00Z)", path, l.Expiry)
		}
	}
	return nil
}

// expiry is the parsed Expiry (zero: never); check has vetted it.
func (l UserLimits) expiry() time.Time {
	t, _ := time.Parse(time.RFC3339, l.Expiry)
	return t
}
