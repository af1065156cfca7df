// Package httpproxy is the HTTP proxy entry point of Portico's client: a
// browser or an application configured with an HTTP proxy (127.0.0.1:1080)
// talks HTTP/1.1 to [Server], and every tunnel it asks for becomes a
// [tunnel.Request] handed to a [tunnel.Handler], the router that dials
// through the tunnel and relays.
//
// Two kinds of proxy request are served on one client connection:
//
//   - CONNECT host:port (RFC 9110 §9.3.6), used for https and anything that
//     is not plain HTTP: the connection becomes a byte stream to the target
//     once the router's dial succeeded.
//   - Absolute-URI requests such as "GET http://host/path HTTP/1.1"
//     (RFC 9112 §3.2.2): each request is sent through its own tunnel to
//     host:port in origin form, hop-by-hop headers removed, and the response
//     is copied back. The client connection is kept alive across requests,
//     which may go to different hosts.
//
// Clients authenticate, when the server has users, with Basic credentials in
// Proxy-Authorization (RFC 9110 §11.7.1). Request headers are limited to
// 64 KiB. Upgrade requests (WebSocket over plain http://) are forwarded
// without their Upgrade headers; clients use CONNECT for those.
package httpproxy
