// Package tunnel holds the net-side contracts between Portico's layers:
// the authenticated [Request], the [Handler] the gateway provides, the
// [Server] each protocol provides, and the [Dialer] and [ConnDialer] of the
// client side. They live apart from package protocols because they speak
// net.Conn, and the pure codecs (which import protocols) must not pull in
// the network stack.
//
// Data flows one way: transport -> protocol [Server] -> [Handler] (the
// gateway's router) -> outbound [Dialer] -> relay. Nothing calls back up.
package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/portico-gw/portico/protocols"
)

// Request is what a protocol server learned from an authenticated handshake,
// handed to the [Handler] together with the tunnel's payload.
type Request struct {
	Protocol  string            // the protocol that accepted it: "vless", "vmess", "anytls", "socks", "http"
	User      string            // the user's name for logs and counters (email, or a short id); never a key
	Network   protocols.Network // TCP or UDP
	Target    protocols.Addr    // where the client wants to go
	Source    netip.AddrPort    // the client as the gateway saw it (after trusted-proxy headers)
	Inbound   string            // the inbound's tag, for routing and counters
	Transport string            // "tls", "ws", "grpc", … for logs and metrics

	// Association groups UDP tunnels that belong to one client
	// association but arrive as separate tunnels (VLESS v1 udp_multi
	// opens one per remote). Tunnels of one inbound with the same
	// non-empty Association share one outbound mapping: with a full-cone
	// gateway, one UDP socket, so every remote sees one mapped address and
	// may reach the client through any of them. Empty: the tunnel is an
	// association of its own. An opaque key, never logged.
	Association string
}

// Handler receives authenticated tunnels. The gateway's router implements
// it; protocol servers call it.
//
// HandleStream owns conn from the call on: it dials the target, relays, and
// closes conn before returning, whatever the outcome. It is called once per
// tunnel: once per connection for VLESS v0 and VMess, once per request (one
// at a time) on a kept-alive VLESS v1 connection, once per stream for
// AnyTLS; calls may be concurrent. The returned error is for logging:
// the tunnel is over either way. If conn implements [DialReporter], the
// handler calls ReportDial once, after the outbound dial and before it reads
// or writes conn.
type Handler interface {
	HandleStream(ctx context.Context, conn net.Conn, req Request) error
	HandlePacket(ctx context.Context, pc PacketConn, req Request) error
}

// DialReporter is implemented by tunnel streams whose protocol tells the
// client whether the outbound dial worked (AnyTLS's SYNACK). A nil error
// means the dial succeeded.
type DialReporter interface {
	ReportDial(err error)
}

// RemoteReporter is implemented by tunnel streams whose protocol can tell
// the client which address the outbound actually dialled (VLESS v1's
// resolved address). If conn implements it, the handler calls ReportRemote
// once, after a successful outbound dial and before [DialReporter]'s
// ReportDial, with the IP and port it connected to (for a direct outbound,
// the TCP peer's address). It does not call it when the dial failed or when
// the outbound cannot know (a proxy outbound whose far end resolves the
// name); the stream then tells its client "unknown" by itself. The call may
// write to the carrier, so it can block like a Write.
type RemoteReporter interface {
	ReportRemote(remote netip.AddrPort)
}

// Server is one protocol's server side. The gateway calls ServeConn once per
// accepted carrier connection (raw TLS, a WebSocket, a gRPC stream…);
// ServeConn authenticates, calls h once per tunnel inside the connection, and
// returns when the connection is done, having closed it.
//
// When conn is not for this protocol (unknown key or version, malformed
// header) ServeConn returns an error wrapping [protocols.ErrNotProtocol] before writing
// a byte and WITHOUT closing conn, so that the gateway can replay what was
// read into the decoy. Any other error is for logging only.
type Server interface {
	ServeConn(ctx context.Context, conn net.Conn, h Handler) error
}

// Dialer opens outbound tunnels: direct, block, and every protocol client.
// Methods are safe for concurrent use. Errors wrap [protocols.ErrBlocked] when a
// destination is refused by policy.
type Dialer interface {
	// DialStream connects to dst and returns a stream to it.
	DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error)
	// DialPacket returns a packet conn whose first destination is dst.
	DialPacket(ctx context.Context, dst protocols.Addr) (PacketConn, error)
}

// ConnDialer opens the carrier connection a protocol client speaks over: a
// TLS connection, a WebSocket, a gRPC stream. Transports implement it; the
// protocol clients know nothing else about them.
type ConnDialer interface {
	DialConn(ctx context.Context) (net.Conn, error)
}

// PacketConn carries datagrams with an address on each. Reads return the
// remote a packet came from; writes name where it goes. Close unblocks
// pending reads.
//
// ReadPacket returns one whole datagram per call. A datagram longer than b
// is cut to len(b) and the rest dropped, as a UDP socket does; callers pass
// a buffer of the largest datagram they carry (the gateway's relay uses
// 32 KiB). It returns io.EOF (or an error wrapping net.ErrClosed after
// Close) when the association is over, or another error when it broke.
// ReadPacket is called by one goroutine at a time, concurrently with
// WritePacket; WritePacket and Close are safe for concurrent use (the
// gateway's relay writes replies to the client from one goroutine per
// outbound conn).
//
// On the server side (a protocol server's PacketConn handed to
// [Handler.HandlePacket]) ReadPacket yields the client's payload and the
// destination it asked for, and WritePacket(b, from) sends a reply to the
// client saying it came from from. On the client side (an outbound's
// PacketConn) it is the other way round: WritePacket(b, to) sends to to and
// ReadPacket yields a reply and where it came from.
//
// A PacketConn that carries a single destination (a VLESS or VMess UDP
// tunnel) returns an error wrapping [ErrOtherDestination] from WritePacket
// for any other address and stays usable; the caller may open another
// PacketConn for that destination.
type PacketConn interface {
	ReadPacket(b []byte) (n int, from protocols.Addr, err error)
	WritePacket(b []byte, to protocols.Addr) error
	Close() error
}

// MultiSource is implemented by a server-side [PacketConn] whose
// WritePacket tells the client each datagram's source (VLESS v1, AnyTLS
// udp-over-tcp in per-packet-address mode, SOCKS5): datagrams from remotes
// the client never sent to can reach it, which a full-cone gateway allows.
// A PacketConn without it (VLESS v0, VMess, AnyTLS connect mode) presents
// every datagram as coming from the tunnel's target, so the gateway gives
// it only datagrams from addresses it has sent to.
type MultiSource interface {
	MultiSource() bool
}

// ErrOtherDestination is wrapped by WritePacket of a [PacketConn] that
// carries packets to one destination only, when asked to send elsewhere.
var ErrOtherDestination = errors.New("tunnel: this packet conn carries one destination only")
