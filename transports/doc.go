// Package transports holds the carriers tunnels ride on, one package each:
// rawtls (TLS straight to the front door), and later ws, grpc, httpupgrade
// and quic. A transport's server side yields net.Conn, its client side dials
// one; none of them knows which protocol rides on it.
package transports
