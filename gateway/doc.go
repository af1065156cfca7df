// Package gateway is Portico's running core: it loads and validates the
// config, runs the HTTPS front door (TLS, first-bytes classifier, raw-TLS
// dispatcher, decoy site and fallback), the local proxy listeners of a
// client, the router that sends each authenticated tunnel to an outbound,
// the outbounds direct and block, and the one relay every tunnel's bytes go
// through.
//
// A connection travels: listener -> TLS -> classify first bytes -> either the
// net/http server (decoy site, later WebSocket and gRPC routes) or a
// protocol Server from protocols/... -> Router (a tunnel.Handler) ->
// outbound tunnel.Dialer -> Relay. Nothing calls back up that chain; the
// decision to fall back to the decoy is made here alone.
package gateway
