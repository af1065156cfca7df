package gateway

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/transports/grpc"
	"github.com/portico-gw/portico/transports/httpupgrade"
	"github.com/portico-gw/portico/transports/quic"
	"github.com/portico-gw/portico/transports/ws"
)

// route is a tunnel inbound served on the site's HTTP server rather than
// on raw TLS: a WebSocket or HTTP-upgrade path, a gRPC service, or an
// HTTP/3 tunnel path.
type route struct {
	inbound InboundConfig
	proto   RawProtocol
	network string
}

// routeTable mounts every route in front of site. Each route claims its
// own path (or service) and hands everything else to the next, so a request
// for no route reaches the site unchanged.
func (g *Gateway) routeTable(site http.Handler, trusted []netip.Prefix) http.Handler {
	h := site
	for _, rt := range g.routes {
		ss := rt.inbound.StreamSettings
		serve := g.serveRoute(rt, trusted)
		switch rt.network {
		case "ws":
			h = &ws.Handler{Path: ss.WSSettings.Path, Host: ss.WSSettings.Host, Next: h, Serve: serve,
				EarlyDataHeader: ss.WSSettings.EarlyDataHeader}
		case "httpupgrade":
			h = &httpupgrade.Handler{Path: ss.HTTPUpgradeSettings.Path, Host: ss.HTTPUpgradeSettings.Host, Next: h, Serve: serve}
		case "grpc":
			h = &grpc.Handler{ServiceName: ss.GRPCSettings.ServiceName, Next: h, Serve: serve}
		case "quic":
			h = &quic.TunnelHandler{Path: ss.QUICSettings.Path, Host: ss.QUICSettings.Host, Next: h, Serve: serve}
		}
	}
	return h
}

// serveRoute hands a transport's tunnel conn to the route's protocol
// server, with the client's real address (forwarding headers believed only
// from trusted proxies).
func (g *Gateway) serveRoute(rt route, trusted []netip.Prefix) func(net.Conn, *http.Request) {
	return func(conn net.Conn, r *http.Request) {
		conn.SetDeadline(time.Now().Add(g.handshakeTimeout()))
		live := g.live() // a reload's routes serve through the running gateway
		h := &inboundHandler{next: live.router, carrier: conn, inbound: rt.proto.Inbound, transport: rt.network,
			source: realSource(r, trusted)}
		err := rt.proto.Server.ServeConn(live.lifeContext(), conn, h)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !h.authed() {
			live.failures.count(err)
		}
		if errors.Is(err, protocols.ErrNotProtocol) {
			g.log.Debug("refused on route", "protocol", rt.proto.Name, "transport", rt.network,
				"source", h.source.String(), "reason", err.Error())
			drainAndClose(conn, protocols.BytesReadBeforeRefusal(err))
			return
		}
		if err != nil {
			g.log.Debug("connection ended", "protocol", rt.proto.Name, "transport", rt.network, "err", err)
		}
	}
}

// drainAndClose ends a refused tunnel the way V2Ray does: it reads and
// discards a random amount, for a random while, before closing, so that
// where the server stops reading tells a prober nothing about the key.
// The protocol server's own reads (already, bytes) count against the
// amount, as V2Ray's drainer counts the header: one that read past it
// closes at once.
func drainAndClose(conn net.Conn, already int) {
	var b [4]byte
	rand.Read(b[:])
	n := binary.BigEndian.Uint32(b[:])
	limit := int64(256+n%3840) - int64(already)
	if limit > 0 {
		wait := time.Duration(500+n%2500) * time.Millisecond
		conn.SetReadDeadline(time.Now().Add(wait))
		io.Copy(io.Discard, io.LimitReader(conn, limit))
	}
	conn.Close()
}

func (g *Gateway) handshakeTimeout() time.Duration {
	return g.cfg.Timeouts.Handshake.Or(10 * time.Second)
}

// lifeContext is the parent of every tunnel: Shutdown cancels it.
func (g *Gateway) lifeContext() context.Context {
	if g.life == nil {
		return context.Background()
	}
	return g.life
}
