package vless

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/portico-gw/portico/protocols"
)

// Wire layout of VLESS version 1 (docs/protocols/vless-v1.md). The part
// verysimple built (e1732a364fed/v2ray_simple proxy/vless client.go
// getBufWithCmd, server.go Handshake, docs/vless_v1.md) is matched byte for
// byte: version, UUID, addon type, command, address, and no response
// header, and the UDP framings (udpv1.go). The rest — addon types
// 0x10..0x13, chunk framing, the header of a reused connection, the
// resolved address, padding, the association id — is Portico's.
//
// Request header on a new connection, followed by PadLen padding bytes
// (when the padding addon is present) and then the payload:
//
//	+------+------+-------+------------+---------+------+------+-----------+
//	| ver  | UUID | addon | addon body | command | port | atyp | address   |
//	| 0x01 |  16  |   1   | 0..14      |    1    | 2 BE |  1   | 4|16|1+n  |
//	+------+------+-------+------------+---------+------+------+-----------+
//
// Request header on a reused connection (after a keep-alive stream ended
// cleanly both ways): the same without version and UUID; padding,
// association and command UDP refused (a reused connection carries TCP
// streams only):
//
//	+-------+------------+---------+------+------+-----------+
//	| addon | addon body | command | port | atyp | address   |
//	+-------+------------+---------+------+------+-----------+
//
// Addon types (the byte fixes the body):
//
//	0x00 none          no body                               (verysimple)
//	0x01 udp_multi     no body                               (verysimple)
//	0x02 list          count 2..4, then count × (type ‖ body),
//	                   types strictly ascending from {0x01, 0x10, 0x11, 0x12, 0x13}
//	                                                         (verysimple's layout)
//	0x10 keep_alive    no body; TCP only                     (Portico)
//	0x11 resolve       no body; TCP only                     (Portico)
//	0x12 padding       PadLen u16 BE, 0..MaxPadLen           (Portico)
//	0x13 association   8-byte id; UDP with udp_multi only    (Portico)
//
// Keep-alive chunks, both directions: length u16 BE (1..65535) ‖ data; a
// zero length ends the direction.
//
// Resolved address, server to client, first on a stream that asked:
//
//	type 0x00 (unknown) | 0x01 ‖ IPv4 (4) ‖ port | 0x03 ‖ IPv6 (16) ‖ port
const (
	Version1 = 1 // the version byte of VLESS v1

	// MaxRequestV1Len is the longest first header, padding excluded: a
	// UDP request with version, UUID, a list of udp_multi, padding and
	// association (02, count, 01, 12 and a u16, 13 and 8 id bytes: 15
	// bytes), command, port, atyp, length byte, 255-byte name. (The
	// longest TCP header, with a list of four body-less-or-u16 addons, is
	// 285.)
	MaxRequestV1Len = 1 + 16 + 15 + 1 + 2 + 1 + 1 + 255 // 292
	// MaxNextRequestLen is the longest header on a reused connection: a
	// list of three addons (no padding) and the longest address.
	MaxNextRequestLen = 5 + 1 + 2 + 1 + 1 + 255 // 265

	// MaxPadLen is the most padding bytes a header may announce.
	MaxPadLen = 16384
	// MinPadTo and MaxPadTo bound the size a padded first write may be
	// given: at least the longest header (so any request, UDP included,
	// can be padded), at most one TLS record.
	MinPadTo = MaxRequestV1Len
	MaxPadTo = 16384

	// MaxChunkLen is the largest chunk a keep-alive stream carries.
	MaxChunkLen = 65535
	// ChunkHeaderLen is the size of a chunk's length (and of the end marker).
	ChunkHeaderLen = 2

	// MaxResolvedLen is the longest resolved-address message (IPv6).
	MaxResolvedLen = 1 + 16 + 2
)

// AddonType is the byte after the UUID in a v1 request.
type AddonType byte

// The addon types; see the layout above.
const (
	AddonNone        AddonType = 0x00
	AddonUDPMulti    AddonType = 0x01
	AddonList        AddonType = 0x02
	AddonKeepAlive   AddonType = 0x10
	AddonResolve     AddonType = 0x11
	AddonPadding     AddonType = 0x12
	AddonAssociation AddonType = 0x13

	// AssociationLen is the size of the association addon's body.
	AssociationLen = 8
)

// Resolved-address types (VLESS atyp values).
const (
	resolvedUnknown = 0x00
	resolvedIPv4    = 0x01
	resolvedIPv6    = 0x03
)

// More sentinels for v1; use errors.Is.
var (
	ErrUnknownAddon = errors.New("vless: unknown addon type")
	ErrBadResolved  = errors.New("vless: malformed resolved address")
)

// RequestV1 is a decoded VLESS v1 request header, of either form.
type RequestV1 struct {
	ID        [16]byte       // the user's UUID; not on the wire (and zero) in a next request
	UDPMulti  bool           // addon 0x01: UDP over separate channels (verysimple)
	KeepAlive bool           // addon 0x10: chunked payload, the connection outlives the stream
	Resolve   bool           // addon 0x11: the server first sends the address it dialled
	Padded    bool           // addon 0x12 present (first header only)
	PadLen    int            // padding bytes after the header, 0..MaxPadLen; with Padded
	Command   Command        // TCP, UDP or Mux
	Target    protocols.Addr // destination; present for every command in v1

	// HasAssociation says the association addon (0x13) is present; it is
	// allowed only with command UDP and UDPMulti, in a first header.
	HasAssociation bool
	Association    [AssociationLen]byte // the client's association id; with HasAssociation
}

// AppendRequestV1 appends the first-header encoding of r (version, UUID,
// addons, command, target; not the padding bytes, see [AppendPadding]) to
// b. It fails, returning b unchanged, on an unknown command, a PadLen out of
// range, or a Target that cannot be encoded.
func AppendRequestV1(b []byte, r *RequestV1) ([]byte, error) {
	if err := checkRequestV1(r, true); err != nil {
		return b, err
	}
	b = append(b, Version1)
	b = append(b, r.ID[:]...)
	return appendRequestTail(b, r), nil
}

// AppendNextRequest appends the encoding of r as a request on a reused
// connection (no version, no UUID). r.ID is ignored; Padded is refused.
func AppendNextRequest(b []byte, r *RequestV1) ([]byte, error) {
	if err := checkRequestV1(r, false); err != nil {
		return b, err
	}
	return appendRequestTail(b, r), nil
}

func checkRequestV1(r *RequestV1, first bool) error {
	if r.Command != CommandTCP && r.Command != CommandUDP && r.Command != CommandMux {
		return fmt.Errorf("%w: %d", ErrUnsupportedCommand, byte(r.Command))
	}
	if r.Padded && !first {
		return fmt.Errorf("%w: padding only in a connection's first request", ErrBadAddons)
	}
	if r.Padded && (r.PadLen < 0 || r.PadLen > MaxPadLen) {
		return fmt.Errorf("%w: padding length %d outside 0..%d", ErrBadAddons, r.PadLen, MaxPadLen)
	}
	if protocols.VAddr.Len(r.Target) < 0 {
		return fmt.Errorf("vless: target: %w: cannot encode %v", protocols.ErrBadAddr, r.Target)
	}
	return checkUDPRules(r.Command, r.UDPMulti, r.KeepAlive, r.Resolve, r.HasAssociation, first)
}

// checkUDPRules enforces, for encoder and parser alike, what section 9
// allows: keep_alive and resolve frame and answer TCP streams, which a UDP
// tunnel is not; the association names a udp_multi client's association,
// meaningless elsewhere; and a reused connection carries TCP streams only,
// since a UDP tunnel has no end marker after which another request could
// follow.
func checkUDPRules(cmd Command, udpMulti, keepAlive, resolve, assoc, first bool) error {
	if !first && cmd == CommandUDP {
		return fmt.Errorf("%w: command UDP on a reused connection (it carries TCP streams only)", ErrBadAddons)
	}
	if !first && assoc {
		return fmt.Errorf("%w: association only in a connection's first request", ErrBadAddons)
	}
	if cmd == CommandUDP && (keepAlive || resolve) {
		return fmt.Errorf("%w: keep_alive and resolve are for TCP streams", ErrBadAddons)
	}
	if assoc && (cmd != CommandUDP || !udpMulti) {
		return fmt.Errorf("%w: association only with command UDP and udp_multi", ErrBadAddons)
	}
	return nil
}

// appendRequestTail appends addons, command and target of a checked r.
func appendRequestTail(b []byte, r *RequestV1) []byte {
	var types [5]AddonType // checkUDPRules leaves at most 4 on
	n := 0
	for _, a := range []struct {
		on bool
		t  AddonType
	}{{r.UDPMulti, AddonUDPMulti}, {r.KeepAlive, AddonKeepAlive}, {r.Resolve, AddonResolve}, {r.Padded, AddonPadding}, {r.HasAssociation, AddonAssociation}} {
		if a.on {
			types[n] = a.t
			n++
		}
	}
	switch n {
	case 0:
		b = append(b, byte(AddonNone))
	case 1:
	default:
		b = append(b, byte(AddonList), byte(n))
	}
	for _, t := range types[:n] {
		b = append(b, byte(t))
		switch t {
		case AddonPadding:
			b = binary.BigEndian.AppendUint16(b, uint16(r.PadLen))
		case AddonAssociation:
			b = append(b, r.Association[:]...)
		}
	}
	b = append(b, byte(r.Command))
	b, _ = protocols.VAddr.Append(b, r.Target) // checked by checkRequestV1
	return b
}

// ParseRequestV1 decodes a first header from the start of b and returns it
// with the number of bytes it used. The r.PadLen padding bytes that follow
// are not counted: the caller skips them, and the payload starts after
// them. A valid but incomplete prefix gives [protocols.ErrNeedMore]; other
// failures wrap [ErrUnknownVersion], [ErrUnknownAddon], [ErrBadAddons],
// [ErrUnsupportedCommand] or [protocols.ErrBadAddr]. It does not look the
// UUID up. The result does not alias b; it allocates only for a domain.
func ParseRequestV1(b []byte) (RequestV1, int, error) {
	if len(b) < 1 {
		return RequestV1{}, 0, protocols.ErrNeedMore
	}
	if b[0] != Version1 {
		return RequestV1{}, 0, fmt.Errorf("%w %d", ErrUnknownVersion, b[0])
	}
	if len(b) < 17 {
		return RequestV1{}, 0, protocols.ErrNeedMore
	}
	r, n, err := parseRequestTail(b[17:], true)
	if err != nil {
		return RequestV1{}, 0, err
	}
	copy(r.ID[:], b[1:17])
	return r, 17 + n, nil
}

// ParseNextRequest decodes a request on a reused connection from the start
// of b, with ParseRequestV1's conventions. A padding addon is refused.
func ParseNextRequest(b []byte) (RequestV1, int, error) {
	return parseRequestTail(b, false)
}

func parseRequestTail(b []byte, first bool) (RequestV1, int, error) {
	var r RequestV1
	if len(b) < 1 {
		return r, 0, protocols.ErrNeedMore
	}
	i := 1
	switch t := AddonType(b[0]); t {
	case AddonNone:
	case AddonList:
		if len(b) < 2 {
			return r, 0, protocols.ErrNeedMore
		}
		count := int(b[1])
		if count < 2 || count > 4 {
			return RequestV1{}, 0, fmt.Errorf("%w: list of %d addons (want 2 to 4)", ErrBadAddons, count)
		}
		i = 2
		var last AddonType
		for k := 0; k < count; k++ {
			if len(b) < i+1 {
				return RequestV1{}, 0, protocols.ErrNeedMore
			}
			t := AddonType(b[i])
			if t == AddonNone || t == AddonList {
				return RequestV1{}, 0, fmt.Errorf("%w: addon type 0x%02x inside a list", ErrBadAddons, byte(t))
			}
			if k > 0 && t <= last {
				if t == last {
					return RequestV1{}, 0, fmt.Errorf("%w: addon type 0x%02x twice", ErrBadAddons, byte(t))
				}
				return RequestV1{}, 0, fmt.Errorf("%w: addon types out of order", ErrBadAddons)
			}
			last = t
			m, err := parseAddon(b[i+1:], t, &r, first)
			if err != nil {
				return RequestV1{}, 0, err
			}
			i += 1 + m
		}
	default:
		m, err := parseAddon(b[1:], t, &r, first)
		if err != nil {
			return RequestV1{}, 0, err
		}
		i += m
	}
	if len(b) < i+1 {
		return RequestV1{}, 0, protocols.ErrNeedMore
	}
	r.Command = Command(b[i])
	i++
	if r.Command != CommandTCP && r.Command != CommandUDP && r.Command != CommandMux {
		return RequestV1{}, 0, fmt.Errorf("%w %d", ErrUnsupportedCommand, byte(r.Command))
	}
	if err := checkUDPRules(r.Command, r.UDPMulti, r.KeepAlive, r.Resolve, r.HasAssociation, first); err != nil {
		return RequestV1{}, 0, err
	}
	a, m, err := protocols.VAddr.Parse(b[i:])
	if err != nil {
		if err == protocols.ErrNeedMore {
			return RequestV1{}, 0, err
		}
		return RequestV1{}, 0, fmt.Errorf("vless: target: %w", err)
	}
	r.Target = a
	return r, i + m, nil
}

// parseAddon reads the body of one addon of type t (not a list) into r and
// returns its length.
func parseAddon(b []byte, t AddonType, r *RequestV1, first bool) (int, error) {
	switch t {
	case AddonUDPMulti:
		r.UDPMulti = true
	case AddonKeepAlive:
		r.KeepAlive = true
	case AddonResolve:
		r.Resolve = true
	case AddonPadding:
		if !first {
			return 0, fmt.Errorf("%w: padding only in a connection's first request", ErrBadAddons)
		}
		if len(b) < 2 {
			return 0, protocols.ErrNeedMore
		}
		n := int(binary.BigEndian.Uint16(b))
		if n > MaxPadLen {
			return 0, fmt.Errorf("%w: padding length %d above %d", ErrBadAddons, n, MaxPadLen)
		}
		r.Padded, r.PadLen = true, n
		return 2, nil
	case AddonAssociation:
		if !first {
			return 0, fmt.Errorf("%w: association only in a connection's first request", ErrBadAddons)
		}
		if len(b) < AssociationLen {
			return 0, protocols.ErrNeedMore
		}
		r.HasAssociation = true
		copy(r.Association[:], b)
		return AssociationLen, nil
	default:
		return 0, fmt.Errorf("%w 0x%02x", ErrUnknownAddon, byte(t))
	}
	return 0, nil
}

// AppendPadding appends n zero bytes to b (n ≤ 0 appends nothing).
func AppendPadding(b []byte, n int) []byte {
	for ; n > 0; n-- {
		b = append(b, 0)
	}
	return b
}

// SplitFirstWrite says how a padded first write of exactly size bytes is
// made of a header of hdrLen bytes, pad padding bytes and the first take of
// payloadLen payload bytes. With framed (keep-alive) the payload part is one
// chunk, whose 2-byte length is counted in size; a chunk is used only when
// at least one payload byte fits. ok is false when the header alone is
// longer than size: then nothing can be padded (pad and take are 0).
func SplitFirstWrite(size, hdrLen, payloadLen int, framed bool) (pad, take int, ok bool) {
	room := size - hdrLen
	if room < 0 {
		return 0, 0, false
	}
	if !framed {
		take = min(max(payloadLen, 0), room)
		return room - take, take, true
	}
	if payloadLen > 0 && room >= ChunkHeaderLen+1 {
		take = min(payloadLen, room-ChunkHeaderLen, MaxChunkLen)
		return room - ChunkHeaderLen - take, take, true
	}
	return room, 0, true
}

// AppendChunks appends data to b as keep-alive chunks of at most max bytes
// each (max ≤ 0 or above MaxChunkLen means MaxChunkLen). Empty data appends
// nothing: a zero length is the end marker, see [AppendChunkEnd].
func AppendChunks(b, data []byte, max int) []byte {
	if max <= 0 || max > MaxChunkLen {
		max = MaxChunkLen
	}
	for len(data) > 0 {
		n := min(len(data), max)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = append(b, data[:n]...)
		data = data[n:]
	}
	return b
}

// AppendChunkHeader appends the length of a chunk of n bytes, 1..MaxChunkLen;
// the data follows. It panics on any other n.
func AppendChunkHeader(b []byte, n int) []byte {
	if n < 1 || n > MaxChunkLen {
		panic(fmt.Sprintf("vless: chunk length %d outside 1..%d", n, MaxChunkLen))
	}
	return binary.BigEndian.AppendUint16(b, uint16(n))
}

// AppendChunkEnd appends the end marker (a zero length) to b.
func AppendChunkEnd(b []byte) []byte { return append(b, 0, 0) }

// ParseChunkHeader reads a chunk length from the start of b: size is the
// chunk's data length, 0 for the end marker; n is 2.
func ParseChunkHeader(b []byte) (size, n int, err error) {
	if len(b) < ChunkHeaderLen {
		return 0, 0, protocols.ErrNeedMore
	}
	return int(binary.BigEndian.Uint16(b)), ChunkHeaderLen, nil
}

// ParseChunk reads one whole chunk from the start of b: its data (aliasing
// b), whether it was the end marker, and the bytes used.
func ParseChunk(b []byte) (data []byte, end bool, n int, err error) {
	size, h, err := ParseChunkHeader(b)
	if err != nil {
		return nil, false, 0, err
	}
	if size == 0 {
		return nil, true, h, nil
	}
	if len(b) < h+size {
		return nil, false, 0, protocols.ErrNeedMore
	}
	return b[h : h+size], false, h + size, nil
}

// AppendResolved appends the resolved-address message for ap to b; an
// invalid ap gives the "unknown" marker. IPv4-mapped addresses are sent as
// IPv4, zones are dropped.
func AppendResolved(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	switch {
	case ip.Is4():
		a := ip.As4()
		b = append(b, resolvedIPv4)
		b = append(b, a[:]...)
	case ip.Is6():
		a := ip.As16()
		b = append(b, resolvedIPv6)
		b = append(b, a[:]...)
	default:
		return append(b, resolvedUnknown)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// ParseResolved reads a resolved-address message from the start of b. For
// the "unknown" marker ap is the zero AddrPort (not valid) and n is 1.
func ParseResolved(b []byte) (ap netip.AddrPort, n int, err error) {
	if len(b) < 1 {
		return netip.AddrPort{}, 0, protocols.ErrNeedMore
	}
	var size int
	switch b[0] {
	case resolvedUnknown:
		return netip.AddrPort{}, 1, nil
	case resolvedIPv4:
		size = 4
	case resolvedIPv6:
		size = 16
	default:
		return netip.AddrPort{}, 0, fmt.Errorf("%w: type %d", ErrBadResolved, b[0])
	}
	if len(b) < 1+size+2 {
		return netip.AddrPort{}, 0, protocols.ErrNeedMore
	}
	var ip netip.Addr
	if size == 4 {
		ip = netip.AddrFrom4([4]byte(b[1:5]))
	} else {
		ip = netip.AddrFrom16([16]byte(b[1:17]))
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[1+size:])), 1 + size + 2, nil
}

// MatchV1 is [Match] for a server that also speaks version 1: it reports
// whether prefix opens a VLESS request of version 0 or 1 from a user that
// known recognises. Both versions put the UUID at bytes 1..16.
func MatchV1(prefix []byte, known func(id [16]byte) bool) (bool, error) {
	if len(prefix) < 1 {
		return false, protocols.ErrNeedMore
	}
	if prefix[0] != Version && prefix[0] != Version1 {
		return false, nil
	}
	if len(prefix) < 17 {
		return false, protocols.ErrNeedMore
	}
	return known([16]byte(prefix[1:17])), nil
}
