// Package transports holds the carriers tunnels ride on, one package each:
// rawtls (TLS straight to the front door), ws (WebSocket, with early data),
// httpupgrade (Xray's HTTP upgrade), grpc (Xray's "gun" over HTTP/2 and
// h2c) and quic (HTTP/3 request streams). A transport's server side yields net.Conn, its client side dials
// one; none of them knows which protocol rides on it.
package transports
