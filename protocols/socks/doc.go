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
// CONNECT and UDP ASSOCIATE (RFC 1928 §6, §7) are served. For UDP ASSOCIATE
// the server opens a UDP relay socket on the control connection's local IP,
// accepts datagrams only from the control connection's peer IP, drops
// fragments (FRAG != 0), and hands the association to
// [tunnel.Handler.HandlePacket] once the first datagram names a
// destination; it ends when the control connection closes. [DialUDP] is the
// matching client. BIND and unknown commands are answered with reply 0x07
// (command not supported). SOCKS4 and other
// versions are refused before a byte is written, with an error wrapping
// [protocols.ErrNotProtocol].
package socks
