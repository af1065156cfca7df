package protocols

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

// Matcher reports whether prefix, the first bytes a client sent after the
// TLS handshake, opens a connection for one protocol and one of its users.
// It is pure and cheap; it returns [ErrNeedMore] when prefix is too short to
// tell. A no may carry an error saying why (an unknown key, say) for the
// gateway's debug log; it must not name the key. A yes is a promise that
// ServeConn will most likely accept; the gateway still falls back if
// ServeConn then returns [ErrNotProtocol].
type Matcher func(prefix []byte) (bool, error)
