package gateway

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/uuid"
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
}

// LocalProxyInbound is inbounds[].settings for mixed, socks and http.
type LocalProxyInbound struct {
	Accounts []Account `json:"accounts"` // none = no authentication
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

// VLESSOutbound is outbounds[].settings for protocol "vless".
type VLESSOutbound struct {
	Vnext []VLESSServer `json:"vnext"`
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
		if err := out.StreamSettings.check(path + ".streamSettings"); err != nil {
			return err
		}
		out.settings = &s
	case "":
		return fmt.Errorf("%s.protocol: missing; one of direct, block, vless", path)
	default:
		return fmt.Errorf("%s.protocol: unknown protocol %q; one of direct, block, vless", path, out.Protocol)
	}
	return nil
}

func (s *StreamSettings) check(path string) error {
	if s == nil {
		return nil
	}
	switch s.Network {
	case "", "tcp", "raw":
	default:
		return fmt.Errorf("%s.network: %q is not supported yet; use \"tcp\"", path, s.Network)
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

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs of this package are marshalled
	}
	return b
}
