// Package links reads and writes share links: the one-line URLs that carry a
// tunnel's server, key and transport (vless://…), in the forms Xray, V2RayN,
// sing-box and mihomo clients use. It is pure (no net) so the WebAssembly
// playground can decode links too.
package links

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Link is a decoded share link. Fields a protocol does not use stay empty.
type Link struct {
	Protocol string // "vless", "vmess", "anytls"
	ID       string // VLESS/VMess UUID, or AnyTLS password
	Host     string // server name or IP, without brackets
	Port     uint16
	Name     string // the #fragment, a label for people

	Transport   string // type=: "tcp" (default), "ws", "grpc", "httpupgrade", "quic"
	Path        string // path= for ws/httpupgrade
	HostHeader  string // host= for ws/httpupgrade
	ServiceName string // serviceName= for grpc

	Security string   // security=: "tls" or "none"
	SNI      string   // sni=
	ALPN     []string // alpn=h2,http/1.1
	Pin      string   // pin=: hex SHA-256 of the server certificate (Portico)
	Insecure bool     // allowInsecure=1 or insecure=1: accept any certificate

	Flow       string // flow= (VLESS)
	Encryption string // encryption= (VLESS: "none")
	Version    int    // v= (Portico VLESS version; 0 unless 1)

	AlterID int    // aid (VMess; 0 = AEAD)
	Cipher  string // scy (VMess security: auto, aes-128-gcm, chacha20-poly1305, none, zero)

	// VLESS v1 (docs/protocols/vless-v1.md), Portico's own parameters.
	KeepAlive      bool // ka=1: reuse connections without a multiplexer
	Resolve        bool // resolve=1: ask for the address the server dialled
	PadMin, PadMax int  // pad=MIN-MAX: handshake padding range
}

// ErrBadLink is wrapped by every parse failure.
var ErrBadLink = errors.New("links: bad share link")

// Parse decodes a share link.
func Parse(s string) (Link, error) {
	s = strings.TrimSpace(s)
	scheme, _, ok := strings.Cut(s, "://")
	if !ok {
		return Link{}, fmt.Errorf("%w: %q has no scheme (want vless://…)", ErrBadLink, abbreviate(s))
	}
	switch strings.ToLower(scheme) {
	case "vless":
		return parseVLESS(s)
	case "anytls":
		return parseAnyTLS(s)
	case "vmess":
		return parseVMess(s)
	}
	return Link{}, fmt.Errorf("%w: unknown scheme %q (want vless://, vmess:// or anytls://)", ErrBadLink, scheme)
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// parseVLESS reads vless://UUID@host:port?params#name, the form of Xray's
// share-link proposal (XTLS/Xray-core discussion #716) that V2RayN writes.
func parseVLESS(s string) (Link, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Link{}, fmt.Errorf("%w: %v", ErrBadLink, err)
	}
	l := Link{Protocol: "vless", Name: u.Fragment}
	if u.User == nil || u.User.Username() == "" {
		return Link{}, fmt.Errorf("%w: vless link has no UUID before @", ErrBadLink)
	}
	l.ID = u.User.Username()
	if err := l.setHostPort(u); err != nil {
		return Link{}, err
	}
	q := u.Query()
	l.readCommon(q)
	l.Flow = q.Get("flow")
	l.Encryption = q.Get("encryption")
	if l.Encryption == "" {
		l.Encryption = "none" // VLESS has no other value today
	}
	if v := q.Get("v"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 0 && n != 1) {
			return Link{}, fmt.Errorf("%w: v=%q is not a VLESS version (0 or 1)", ErrBadLink, v)
		}
		l.Version = n
	}
	l.KeepAlive = truthy(q.Get("ka"))
	l.Resolve = truthy(q.Get("resolve"))
	if p := q.Get("pad"); p != "" {
		lo, hi, ok := strings.Cut(p, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if !ok || err1 != nil || err2 != nil || a < 0 || b < a {
			return Link{}, fmt.Errorf("%w: pad=%q is not a range like 300-900", ErrBadLink, p)
		}
		l.PadMin, l.PadMax = a, b
	}
	if l.Version == 0 && (l.KeepAlive || l.Resolve || l.PadMax > 0) {
		return Link{}, fmt.Errorf("%w: ka, resolve and pad need v=1", ErrBadLink)
	}
	if l.Security == "" {
		l.Security = "none" // Xray's default for VLESS links
	}
	return l, nil
}

// parseAnyTLS reads anytls://password@host:port/?sni=…&insecure=1#name, as
// mihomo and sing-box clients read them. AnyTLS always runs under TLS.
func parseAnyTLS(s string) (Link, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Link{}, fmt.Errorf("%w: %v", ErrBadLink, err)
	}
	l := Link{Protocol: "anytls", Name: u.Fragment}
	if u.User == nil || u.User.Username() == "" {
		return Link{}, fmt.Errorf("%w: anytls link has no password before @", ErrBadLink)
	}
	l.ID = u.User.Username()
	if err := l.setHostPort(u); err != nil {
		return Link{}, err
	}
	l.readCommon(u.Query())
	l.Security = "tls"
	return l, nil
}

func (l *Link) setHostPort(u *url.URL) error {
	l.Host = u.Hostname()
	if l.Host == "" {
		return fmt.Errorf("%w: no server host", ErrBadLink)
	}
	if strings.Contains(l.Host, ":") {
		// net/url accepts "h::1:443" loosely; only a bracketed IPv6 is a host.
		if _, err := netip.ParseAddr(l.Host); err != nil || !strings.HasPrefix(u.Host, "[") {
			return fmt.Errorf("%w: host %q is not a name, an IPv4 or a [bracketed] IPv6 address", ErrBadLink, l.Host)
		}
	}
	p := u.Port()
	if p == "" {
		return fmt.Errorf("%w: no server port", ErrBadLink)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("%w: port %q is not 1-65535", ErrBadLink, p)
	}
	l.Port = uint16(n)
	return nil
}

func (l *Link) readCommon(q url.Values) {
	l.Transport = q.Get("type")
	if l.Transport == "" {
		l.Transport = "tcp"
	}
	l.Path = q.Get("path")
	l.HostHeader = q.Get("host")
	l.ServiceName = q.Get("serviceName")
	l.Security = q.Get("security")
	l.SNI = q.Get("sni")
	if a := q.Get("alpn"); a != "" {
		l.ALPN = strings.Split(a, ",")
	}
	l.Pin = q.Get("pin")
	l.Insecure = truthy(q.Get("allowInsecure")) || truthy(q.Get("insecure"))
}

func truthy(s string) bool { return s == "1" || strings.EqualFold(s, "true") }

// String encodes l as a share link.
func (l Link) String() string {
	switch l.Protocol {
	case "vless":
		return l.vlessString()
	case "vmess":
		return l.vmessString()
	case "anytls":
		q := url.Values{}
		l.writeCommon(q)
		if l.Transport != "" && l.Transport != "tcp" {
			q.Set("type", l.Transport)
		}
		u := url.URL{Scheme: "anytls", User: url.User(l.ID), Host: hostPort(l.Host, l.Port), Path: "/",
			RawQuery: q.Encode(), Fragment: l.Name}
		return u.String()
	}
	return ""
}

func (l Link) vlessString() string {
	q := url.Values{}
	q.Set("type", or(l.Transport, "tcp"))
	q.Set("encryption", or(l.Encryption, "none"))
	q.Set("security", or(l.Security, "none"))
	l.writeCommon(q)
	if l.Flow != "" {
		q.Set("flow", l.Flow)
	}
	if l.Version != 0 {
		q.Set("v", strconv.Itoa(l.Version))
	}
	if l.KeepAlive {
		q.Set("ka", "1")
	}
	if l.Resolve {
		q.Set("resolve", "1")
	}
	if l.PadMax > 0 {
		q.Set("pad", strconv.Itoa(l.PadMin)+"-"+strconv.Itoa(l.PadMax))
	}
	u := url.URL{Scheme: "vless", User: url.User(l.ID), Host: hostPort(l.Host, l.Port),
		RawQuery: q.Encode(), Fragment: l.Name}
	return u.String()
}

func (l Link) writeCommon(q url.Values) {
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("path", l.Path)
	set("host", l.HostHeader)
	set("serviceName", l.ServiceName)
	set("sni", l.SNI)
	set("alpn", strings.Join(l.ALPN, ","))
	set("pin", l.Pin)
	if l.Insecure {
		q.Set("allowInsecure", "1")
	}
}

func hostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(int(port))
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// vmessJSON is the body of a v2rayN "v": "2" vmess:// link. Numbers may be
// written as strings or numbers, so those fields are decoded loosely.
type vmessJSON struct {
	V             flexString `json:"v"`
	PS            string     `json:"ps"`
	Add           string     `json:"add"`
	Port          flexString `json:"port"`
	ID            string     `json:"id"`
	Aid           flexString `json:"aid"`
	Scy           string     `json:"scy,omitempty"`
	Net           string     `json:"net"`
	Type          string     `json:"type"`
	Host          string     `json:"host"`
	Path          string     `json:"path"`
	TLS           string     `json:"tls"`
	SNI           string     `json:"sni,omitempty"`
	ALPN          string     `json:"alpn,omitempty"`
	Pin           string     `json:"pin,omitempty"`           // Portico
	AllowInsecure flexString `json:"allowInsecure,omitempty"` // some clients
}

// flexString accepts a JSON string or number.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a string or a number")
	}
	*f = flexString(n.String())
	return nil
}

// parseVMess reads vmess://BASE64(JSON), the v2rayN form ("v": "2").
func parseVMess(s string) (Link, error) {
	body := strings.TrimSpace(s[len("vmess://"):])
	if i := strings.IndexByte(body, '#'); i >= 0 {
		body = body[:i]
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(body); err == nil {
			break
		}
	}
	if err != nil {
		return Link{}, fmt.Errorf("%w: vmess link is not base64 JSON (the v2rayN form)", ErrBadLink)
	}
	var j vmessJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return Link{}, fmt.Errorf("%w: vmess link JSON: %v", ErrBadLink, err)
	}
	if j.V != "" && j.V != "2" {
		return Link{}, fmt.Errorf("%w: vmess link version %q; only v2rayN's \"2\" is supported", ErrBadLink, j.V)
	}
	if j.ID == "" || j.Add == "" {
		return Link{}, fmt.Errorf("%w: vmess link needs \"id\" and \"add\"", ErrBadLink)
	}
	port, err := strconv.ParseUint(string(j.Port), 10, 16)
	if err != nil || port == 0 {
		return Link{}, fmt.Errorf("%w: vmess link port %q is not 1-65535", ErrBadLink, j.Port)
	}
	aid := 0
	if j.Aid != "" {
		if aid, err = strconv.Atoi(string(j.Aid)); err != nil || aid < 0 || aid > 65535 {
			return Link{}, fmt.Errorf("%w: vmess link aid %q is not 0-65535", ErrBadLink, j.Aid)
		}
	}
	l := Link{Protocol: "vmess", ID: j.ID, Host: strings.Trim(j.Add, "[]"), Port: uint16(port), Name: j.PS,
		AlterID: aid, Cipher: or(j.Scy, "auto"), Transport: or(j.Net, "tcp"), HostHeader: j.Host, SNI: j.SNI,
		Pin: j.Pin, Insecure: truthy(string(j.AllowInsecure)), Security: "none"}
	if strings.ContainsAny(l.Host, "/?#@ ") {
		return Link{}, fmt.Errorf("%w: vmess link host %q", ErrBadLink, j.Add)
	}
	if l.Transport == "grpc" {
		l.ServiceName = j.Path
	} else {
		l.Path = j.Path
	}
	if j.TLS == "tls" {
		l.Security = "tls"
	}
	if j.ALPN != "" {
		l.ALPN = strings.Split(j.ALPN, ",")
	}
	return l, nil
}

func (l Link) vmessString() string {
	j := vmessJSON{V: "2", PS: l.Name, Add: l.Host, Port: flexString(strconv.Itoa(int(l.Port))), ID: l.ID,
		Aid: flexString(strconv.Itoa(l.AlterID)), Scy: or(l.Cipher, "auto"), Net: or(l.Transport, "tcp"), Type: "none",
		Host: l.HostHeader, Path: l.Path, SNI: l.SNI, ALPN: strings.Join(l.ALPN, ","), Pin: l.Pin}
	if l.Transport == "grpc" {
		j.Path = l.ServiceName
	}
	if l.Security == "tls" {
		j.TLS = "tls"
	}
	if l.Insecure {
		j.AllowInsecure = "1"
	}
	b, _ := json.Marshal(j)
	return "vmess://" + base64.StdEncoding.EncodeToString(b)
}
