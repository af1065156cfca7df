package anytls

import (
	"encoding/binary"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// UDP over an AnyTLS stream is sing-box's udp-over-tcp, version 2 (sing
// common/uot: protocol.go, conn.go). The stream's target is the magic
// domain [UoTMagicAddress]; the stream's payload then starts with a
// request, and carries packets both ways:
//
// Request, client to server, once:
//
//	+-----------+------------------------------+
//	| isConnect | destination                  |
//	| 1: 0 or 1 | SOCKS layout: atyp addr port |
//	+-----------+------------------------------+
//
// Packet, both ways, repeated:
//
//	+------------------------------------+-----------+----------+
//	| address (only when isConnect is 0) | length    | payload  |
//	| UoT layout: atyp addr port         | 2, BE     | 0..65535 |
//	+------------------------------------+-----------+----------+
//
// The request's destination uses [protocols.SOCKSAddr] (IPv4=1 domain=3
// IPv6=4); the per-packet address uses [protocols.UoTAddr] (IPv4=0 IPv6=1
// domain=2). In connect mode every packet goes to, and comes from, the
// request's destination and carries no address. sing reads isConnect with
// binary.Read into a bool (any non-zero byte is true); this codec accepts
// only 0 and 1.
const (
	UoTMagicAddress       = "sp.v2.udp-over-tcp.arpa" // version 2, the one AnyTLS uses
	UoTLegacyMagicAddress = "sp.udp-over-tcp.arpa"    // version 1, another layout; recognised only to refuse it
)

// IsUoT reports whether a stream to target asks for udp-over-tcp (either
// version; anytls-go's server tests for "udp-over-tcp.arpa").
func IsUoT(target protocols.Addr) bool {
	return target.Domain == UoTMagicAddress || target.Domain == UoTLegacyMagicAddress
}

// UoTRequest is the request that opens a udp-over-tcp v2 stream.
type UoTRequest struct {
	Connect bool           // true: one destination, packets without addresses
	Target  protocols.Addr // the destination (connect mode) or the first one
}

// UoTPacket is one datagram. Addr is its destination (client to server) or
// source (server to client); zero in connect mode. Payload aliases the
// parsed buffer.
type UoTPacket struct {
	Addr    protocols.Addr
	Payload []byte
}

// AppendUoTRequest appends r to b; it fails, returning b unchanged, when
// the target cannot be encoded.
func AppendUoTRequest(b []byte, r UoTRequest) ([]byte, error) {
	if protocols.SOCKSAddr.Len(r.Target) < 0 {
		return b, fmt.Errorf("%w: request: %w: cannot encode %v", ErrBadUoT, protocols.ErrBadAddr, r.Target)
	}
	flag := byte(0)
	if r.Connect {
		flag = 1
	}
	b = append(b, flag)
	return protocols.SOCKSAddr.Append(b, r.Target)
}

// ParseUoTRequest decodes a request from the start of b.
func ParseUoTRequest(b []byte) (UoTRequest, int, error) {
	if len(b) < 1 {
		return UoTRequest{}, 0, protocols.ErrNeedMore
	}
	if b[0] > 1 {
		return UoTRequest{}, 0, fmt.Errorf("%w: isConnect byte %d is neither 0 nor 1", ErrBadUoT, b[0])
	}
	a, n, err := protocols.SOCKSAddr.Parse(b[1:])
	if err != nil {
		if err == protocols.ErrNeedMore {
			return UoTRequest{}, 0, err
		}
		return UoTRequest{}, 0, fmt.Errorf("%w: request: %w", ErrBadUoT, err)
	}
	return UoTRequest{Connect: b[0] == 1, Target: a}, 1 + n, nil
}

// AppendUoTPacket appends p to b, with its address unless connect. It
// fails, returning b unchanged, on a payload longer than 65535 bytes or an
// address that cannot be encoded.
func AppendUoTPacket(b []byte, connect bool, p UoTPacket) ([]byte, error) {
	if len(p.Payload) > MaxDataLen {
		return b, fmt.Errorf("%w: packet of %d bytes", ErrBadUoT, len(p.Payload))
	}
	orig := len(b)
	if !connect {
		var err error
		if b, err = protocols.UoTAddr.Append(b, p.Addr); err != nil {
			return b[:orig], fmt.Errorf("%w: packet: %w", ErrBadUoT, err)
		}
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.Payload)))
	return append(b, p.Payload...), nil
}

// ParseUoTPacket decodes one packet from the start of b (with an address
// unless connect). The payload aliases b.
func ParseUoTPacket(b []byte, connect bool) (UoTPacket, int, error) {
	var p UoTPacket
	i := 0
	if !connect {
		a, n, err := protocols.UoTAddr.Parse(b)
		if err != nil {
			if err == protocols.ErrNeedMore {
				return UoTPacket{}, 0, err
			}
			return UoTPacket{}, 0, fmt.Errorf("%w: packet: %w", ErrBadUoT, err)
		}
		p.Addr, i = a, n
	}
	if len(b) < i+2 {
		return UoTPacket{}, 0, protocols.ErrNeedMore
	}
	n := int(binary.BigEndian.Uint16(b[i:]))
	i += 2
	if len(b) < i+n {
		return UoTPacket{}, 0, protocols.ErrNeedMore
	}
	p.Payload = b[i : i+n : i+n]
	return p, i + n, nil
}
