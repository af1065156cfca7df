package protocols

import (
	"context"
	"net"
	"net/netip"
)

// Network says what a tunnel carries.
type Network uint8

const (
	NetworkTCP Network = iota + 1 // a byte stream
	NetworkUDP                    // datagrams, each with its own address
)

func (n Network) String() string {
	switch n {
	case NetworkTCP:
		return "tcp"
	case NetworkUDP:
		return "udp"
	}
	return "unknown"
}

// Request is what a protocol server learned from an authenticated handshake,
// handed to the [Handler] together with the tunnel's payload.
type Request struct {
	User      string         // the user's name for logs and counters (email, or a short id); never a key
	Network   Network        // TCP or UDP
	Target    Addr           // where the client wants to go
	Source    netip.AddrPort // the client as the gateway saw it (after trusted-proxy headers)
	Inbound   string         // the inbound's tag, for routing and counters
	Transport string         // "tls", "ws", "grpc", … for logs and metrics
}

// Handler receives authenticated tunnels. The gateway's router implements
// it; protocol servers call it.
//
// HandleStream owns conn from the call on: it dials the target, relays, and
// closes conn before returning, whatever the outcome. It is called once per
// tunnel (once per connection for VLESS and VMess, once per stream for
// AnyTLS) and may be called concurrently. The returned error is for logging:
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

// Server is one protocol's server side. The gateway calls ServeConn once per
// accepted carrier connection (raw TLS, a WebSocket, a gRPC stream…);
// ServeConn authenticates, calls h once per tunnel inside the connection, and
// returns when the connection is done, having closed it.
//
// When conn is not for this protocol (unknown key or version, malformed
// header) ServeConn returns an error wrapping [ErrNotProtocol] before writing
// a byte and WITHOUT closing conn, so that the gateway can replay what was
// read into the decoy. Any other error is for logging only.
type Server interface {
	ServeConn(ctx context.Context, conn net.Conn, h Handler) error
}

// Matcher reports whether prefix, the first bytes a client sent after the
// TLS handshake, opens a connection for one protocol and one of its users.
// It is pure and cheap; it returns [ErrNeedMore] when prefix is too short to
// tell. A yes is a promise that ServeConn will most likely accept; the gateway
// still falls back if ServeConn then returns [ErrNotProtocol].
type Matcher func(prefix []byte) (bool, error)

// Dialer opens outbound tunnels: direct, block, and every protocol client.
// Methods are safe for concurrent use. Errors wrap [ErrBlocked] when a
// destination is refused by policy.
type Dialer interface {
	// DialStream connects to dst and returns a stream to it.
	DialStream(ctx context.Context, dst Addr) (net.Conn, error)
	// DialPacket returns a packet conn whose first destination is dst.
	DialPacket(ctx context.Context, dst Addr) (PacketConn, error)
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
type PacketConn interface {
	ReadPacket(b []byte) (n int, from Addr, err error)
	WritePacket(b []byte, to Addr) error
	Close() error
}
