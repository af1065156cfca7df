package vless

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// UDP over VLESS version 0 (command 2), as V2Ray does it
// (proxy/vless/encoding: EncodeBodyAddons / DecodeBodyAddons with a UDP
// request wrap the stream in buf's length-prefixed packet reader and
// writer). After the request header, whose address is the one destination
// of the tunnel, every datagram is framed the same way in both directions;
// the response direction starts with the response header as for TCP:
//
//	+-----------+-----------------+
//	| length    | payload         |
//	| 2 BE      | length bytes    |
//	+-----------+-----------------+
//
// The frames carry no address: a tunnel carries packets to and from its
// request's target only. A zero length is an empty datagram.
const (
	PacketHeaderLen = 2     // the length field
	MaxPacketLen    = 65535 // the longest payload one frame carries
)

// ErrPacketTooLong is returned by [AppendPacket] for a payload over
// [MaxPacketLen] bytes.
var ErrPacketTooLong = errors.New("vless: UDP payload longer than 65535 bytes")

// AppendPacket appends the frame of one datagram to b. It fails, leaving b
// unchanged, when payload is longer than [MaxPacketLen].
func AppendPacket(b, payload []byte) ([]byte, error) {
	if len(payload) > MaxPacketLen {
		return b, fmt.Errorf("%w: %d bytes", ErrPacketTooLong, len(payload))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...), nil
}

// ParsePacket decodes one frame from the start of b and returns its
// payload (aliasing b) and the bytes the frame used. A valid but incomplete
// frame gives [protocols.ErrNeedMore]; every prefix of 2 or more bytes is
// valid, so that is the only error.
func ParsePacket(b []byte) (payload []byte, n int, err error) {
	if len(b) < PacketHeaderLen {
		return nil, 0, protocols.ErrNeedMore
	}
	l := int(binary.BigEndian.Uint16(b))
	if len(b) < PacketHeaderLen+l {
		return nil, 0, protocols.ErrNeedMore
	}
	return b[PacketHeaderLen : PacketHeaderLen+l], PacketHeaderLen + l, nil
}

// PacketLen decodes the length field at the start of b (at least
// [PacketHeaderLen] bytes); it is for readers that read the payload
// straight into their own buffer.
func PacketLen(b []byte) (int, error) {
	if len(b) < PacketHeaderLen {
		return 0, protocols.ErrNeedMore
	}
	return int(binary.BigEndian.Uint16(b)), nil
}
