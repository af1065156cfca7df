// Package socks is the SOCKS5 entry point of Portico's client: a browser or
// an application pointed at a local listener (127.0.0.1:1080) speaks SOCKS5
// to [Server], and every CONNECT becomes a [tunnel.Request] handed to a
// [tunnel.Handler], the router that dials through the tunnel and relays.
//
// The package has two layers:
//
//   - A pure codec for the RFC 1928 messages and the RFC 1929
//     username/password sub-negotiation: ParseX functions decode from the
//     start of a slice into (value, bytes consumed, error) and return
//     [protocols.ErrNeedMore] on a short but valid prefix; AppendX functions
//     append an encoding to a caller-owned slice. They do no I/O and never
//     panic on bad bytes.
//   - The net side: [Server.ServeConn] runs the server handshake on an
//     accepted connection, and [Dial] runs the client handshake on an
//     existing connection to a SOCKS5 proxy (used by tests of the whole
//     gateway).
//
// Only the CONNECT command is served. UDP ASSOCIATE and BIND are answered with
// reply 0x07 (command not supported): UDP relaying over the tunnel is a
// separate feature that this package does not provide yet. SOCKS4 and other
// versions are refused before a byte is written, with an error wrapping
// [protocols.ErrNotProtocol].
package socks
