package gateway

import (
	"net/http"
	"net/netip"
	"strings"
)

// realSource is the client address of a tunnel that arrived over HTTP (a
// WebSocket, gRPC or HTTP/3 route). Forwarding headers are believed only
// when the peer itself is a trusted proxy (Caddy on loopback, a CDN's
// ranges): then the client is the rightmost X-Forwarded-For entry that is
// not a trusted proxy, or X-Real-IP. A forwarded address has no port.
func realSource(r *http.Request, trusted []netip.Prefix) netip.AddrPort {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.AddrPort{}
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if !inPrefixes(peer.Addr(), trusted) {
		return peer
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			ip, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a malformed entry ends what can be believed
			}
			ip = ip.Unmap()
			if !inPrefixes(ip, trusted) {
				return netip.AddrPortFrom(ip, 0)
			}
		}
	}
	if ip, err := netip.ParseAddr(strings.TrimSpace(r.Header.Get("X-Real-IP"))); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 0)
	}
	return peer
}

func inPrefixes(ip netip.Addr, list []netip.Prefix) bool {
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
