package protocols

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Addr is a tunnel destination: a domain name or an IP address, and a port.
// Exactly one of Domain and IP is set in a valid Addr. The zero Addr is
// invalid. Addr is comparable and cheap to copy.
type Addr struct {
	Domain string     // a DNS name, without a trailing dot; empty when IP is set
	IP     netip.Addr // valid when Domain is empty; IPv4-mapped IPv6 is unmapped
	Port   uint16
}

// MaxDomainLen is the longest domain the SOCKS-family address layouts carry
// (one length byte).
const MaxDomainLen = 255

// ErrBadAddr is wrapped by every address parse failure.
var ErrBadAddr = errors.New("protocols: bad address")

// AddrFromAddrPort returns the Addr for an IP and port.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	return Addr{IP: ap.Addr().Unmap(), Port: ap.Port()}
}

// DomainAddr returns the Addr for a name and port. A name that is an IP
// literal becomes an IP Addr, so "127.0.0.1" never travels as a domain.
func DomainAddr(name string, port uint16) Addr {
	name = strings.TrimSuffix(name, ".")
	if ip, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil && ip.Zone() == "" {
		return Addr{IP: ip.Unmap(), Port: port}
	}
	return Addr{Domain: name, Port: port}
}

// ParseAddr parses "host:port", "[v6]:port" or "name:port".
func ParseAddr(hostport string) (Addr, error) {
	host, portText, ok := cutHostPort(hostport)
	if !ok {
		return Addr{}, fmt.Errorf("%w: %q: want host:port", ErrBadAddr, hostport)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return Addr{}, fmt.Errorf("%w: %q: port %q is not a number from 0 to 65535", ErrBadAddr, hostport, portText)
	}
	if host == "" {
		return Addr{}, fmt.Errorf("%w: %q: empty host", ErrBadAddr, hostport)
	}
	a := DomainAddr(host, uint16(port))
	if a.Domain != "" {
		if err := checkDomain(a.Domain); err != nil {
			return Addr{}, fmt.Errorf("%w: %q: %v", ErrBadAddr, hostport, err)
		}
	}
	return a, nil
}

func cutHostPort(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", false
		}
		return s[1:end], s[end+2:], true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.IndexByte(s[:i], ':') >= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func checkDomain(d string) error {
	if len(d) > MaxDomainLen {
		return fmt.Errorf("domain longer than %d bytes", MaxDomainLen)
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c <= ' ' || c == 0x7f || c == '/' || c == '\\' {
			return fmt.Errorf("domain has byte %#x", c)
		}
	}
	return nil
}

// IsValid reports whether a names a destination.
func (a Addr) IsValid() bool { return a.Domain != "" || a.IP.IsValid() }

// IsDomain reports whether a is a name that still has to be resolved.
func (a Addr) IsDomain() bool { return a.Domain != "" }

// Host is the domain or the IP as text, without brackets.
func (a Addr) Host() string {
	if a.Domain != "" {
		return a.Domain
	}
	if !a.IP.IsValid() {
		return ""
	}
	return a.IP.String()
}

// String is "host:port", with brackets around IPv6, as net.Dial wants it.
func (a Addr) String() string {
	if a.Domain != "" {
		return a.Domain + ":" + strconv.Itoa(int(a.Port))
	}
	if !a.IP.IsValid() {
		return "invalid:" + strconv.Itoa(int(a.Port))
	}
	return netip.AddrPortFrom(a.IP, a.Port).String()
}

// AddrPort returns the IP form of a; ok is false for a domain.
func (a Addr) AddrPort() (ap netip.AddrPort, ok bool) {
	if a.Domain != "" || !a.IP.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.IP, a.Port), true
}
