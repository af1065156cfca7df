package vless

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// UDP over VLESS version 1 (docs/protocols/vless-v1.md section 9), as
// verysimple frames it (e1732a364fed/v2ray_simple proxy/vless udpConn.go).
// All lengths are u16 BE; a zero length is an empty datagram. Addresses are
// protocols.VAddr (port ‖ atyp ‖ address, atyp 1 IPv4, 2 domain, 3 IPv6).
//
// Classic (no udp_multi), both directions; the address is the destination
// client to server and the source server to client:
//
//	+------+------+-----------+--------+---------+
//	| port | atyp | address   | length | payload |
//	|  2   |  1   | 4|16|1+n  |   2    | length  |
//	+------+------+-----------+--------+---------+
//
// udp_multi, server to client (client to server it is [AppendPacket]'s
// length ‖ payload, always to the tunnel's remote):
//
//	+------+-----------------------------+--------+---------+
//	| flag | port ‖ atyp ‖ address       | length | payload |
//	|  1   | only when flag = 1          |   2    | length  |
//	+------+-----------------------------+--------+---------+
//
// flag 0 (verysimple's flag_orig): from the tunnel's remote; flag 1
// (flag_new_source): from the address that follows.
const (
	// MaxPacketV1Prefix is the longest classic frame before its payload:
	// a 255-byte domain address and the length.
	MaxPacketV1Prefix = 2 + 1 + 1 + 255 + 2 // 261
	// MaxMultiPacketPrefix is the longest udp_multi server frame before
	// its payload: the flag, a 255-byte domain address and the length.
	MaxMultiPacketPrefix = 1 + MaxPacketV1Prefix // 262

	multiFlagRemote = 0x00 // from the tunnel's remote, no address
	multiFlagOther  = 0x01 // from the address that follows
)

// ErrBadFlag is wrapped by [ParseMultiPacket] for a flag other than 0 and
// 1: the client cannot tell the frame's length and ends the tunnel.
var ErrBadFlag = errors.New("vless: udp_multi: unknown flag")

// sourceAddr returns a as it goes on the wire: an IPv4-mapped IPv6 address
// as IPv4, so that a gateway with a dual-stack socket reports the same
// address a client sent to.
func sourceAddr(a protocols.Addr) protocols.Addr {
	if a.Domain == "" && a.IP.Is4In6() {
		a.IP = a.IP.Unmap()
	}
	return a
}

// AppendPacketV1 appends one classic v1 UDP frame (addr ‖ length ‖
// payload) to b. An IPv4-mapped IPv6 addr is written as IPv4. It fails,
// leaving b unchanged, on a payload over [MaxPacketLen] bytes
// ([ErrPacketTooLong]) or an address that cannot be encoded
// ([protocols.ErrBadAddr]).
func AppendPacketV1(b, payload []byte, addr protocols.Addr) ([]byte, error) {
	if len(payload) > MaxPacketLen {
		return b, fmt.Errorf("%w: %d bytes", ErrPacketTooLong, len(payload))
	}
	out, err := protocols.VAddr.Append(b, sourceAddr(addr))
	if err != nil {
		return b, fmt.Errorf("vless: UDP packet address: %w", err)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(payload)))
	return append(out, payload...), nil
}

// ParsePacketV1 decodes one classic v1 UDP frame from the start of b and
// returns its payload (aliasing b), its address and the bytes it used. A
// valid but incomplete frame gives [protocols.ErrNeedMore]; a bad address
// an error wrapping [protocols.ErrBadAddr].
func ParsePacketV1(b []byte) (payload []byte, addr protocols.Addr, n int, err error) {
	addr, i, err := parseFrameAddr(b)
	if err != nil {
		return nil, protocols.Addr{}, 0, err
	}
	payload, m, err := ParsePacket(b[i:])
	if err != nil {
		return nil, protocols.Addr{}, 0, err
	}
	return payload, addr, i + m, nil
}

func parseFrameAddr(b []byte) (protocols.Addr, int, error) {
	addr, n, err := protocols.VAddr.Parse(b)
	if err != nil {
		if err == protocols.ErrNeedMore {
			return protocols.Addr{}, 0, err
		}
		return protocols.Addr{}, 0, fmt.Errorf("vless: UDP packet address: %w", err)
	}
	return addr, n, nil
}

// AppendMultiPacket appends one udp_multi server-to-client frame to b:
// with other false, flag 0 and no address (the datagram is from the
// tunnel's remote, from is ignored); with other true, flag 1 and from
// (an IPv4-mapped IPv6 address written as IPv4). It fails, leaving b
// unchanged, like [AppendPacketV1].
func AppendMultiPacket(b, payload []byte, from protocols.Addr, other bool) ([]byte, error) {
	if len(payload) > MaxPacketLen {
		return b, fmt.Errorf("%w: %d bytes", ErrPacketTooLong, len(payload))
	}
	if !other {
		out, _ := AppendPacket(append(b, multiFlagRemote), payload) // length checked above
		return out, nil
	}
	out, err := AppendPacketV1(append(b, multiFlagOther), payload, from)
	if err != nil {
		return b, err
	}
	return out, nil
}

// ParseMultiPacket decodes one udp_multi server-to-client frame from the
// start of b: its payload (aliasing b), and, when other is true, the
// address it came from (otherwise from is the zero Addr: the tunnel's
// remote). A valid but incomplete frame gives [protocols.ErrNeedMore]; a
// flag other than 0 or 1 an error wrapping [ErrBadFlag]; a bad address one
// wrapping [protocols.ErrBadAddr].
func ParseMultiPacket(b []byte) (payload []byte, from protocols.Addr, other bool, n int, err error) {
	if len(b) < 1 {
		return nil, protocols.Addr{}, false, 0, protocols.ErrNeedMore
	}
	switch b[0] {
	case multiFlagRemote:
		payload, m, err := ParsePacket(b[1:])
		if err != nil {
			return nil, protocols.Addr{}, false, 0, err
		}
		return payload, protocols.Addr{}, false, 1 + m, nil
	case multiFlagOther:
		payload, from, m, err := ParsePacketV1(b[1:])
		if err != nil {
			return nil, protocols.Addr{}, false, 0, err
		}
		return payload, from, true, 1 + m, nil
	}
	return nil, protocols.Addr{}, false, 0, fmt.Errorf("%w 0x%02x", ErrBadFlag, b[0])
}
