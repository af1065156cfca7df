// Package vless is the pure codec of VLESS version 0, the protocol V2Ray and
// Xray speak: the request header a client sends before its payload, the
// response header a server sends before its first payload byte, the
// protobuf "addons" inside both, and a cheap [Match] for the gateway's
// raw-TLS dispatcher. It also holds version 1 (v1.go,
// docs/protocols/vless-v1.md): verysimple's v1 request, and Portico's
// keep-alive chunks, resolved address and padding.
//
// It reads no sockets, starts no goroutines and reads no clock, so it builds
// for js/wasm and wasip1/wasm. The net side lives in the vlessserver and
// vlessclient packages below it.
//
// Codecs follow the project's habit: Append* appends to a caller-owned slice,
// Parse* returns (value, bytes consumed, error) and [protocols.ErrNeedMore]
// for a valid but truncated prefix. Every other parse failure wraps one of
// the sentinels below (or [protocols.ErrBadAddr] for the target address).
//
// The byte layout is documented beside the constants and in
// docs/protocols/vless.md.
package vless

import (
	"errors"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// Wire layout of VLESS version 0, as V2Ray encodes it in
// proxy/vless/encoding/encoding.go (EncodeRequestHeader, EncodeResponseHeader)
// and addons.go (EncodeHeaderAddons); Xray-core's proxy/vless/encoding is the
// same for version 0.
//
// Request header, client to server, followed directly by the payload:
//
//	+---------+----------+------------+---------------+---------+------+------+---------+
//	| version | UUID     | addons len | addons        | command | port | atyp | address |
//	| 1: 0x00 | 16       | 1: 0..255  | 0..255 bytes  | 1       | 2 BE | 1    | 4|16|1+n|
//	+---------+----------+------------+---------------+---------+------+------+---------+
//
//	version     always 0 here (VLESS "v0"; v1 is in v1.go).
//	UUID        the user's id, the RFC 4122 bytes in order (no hashing).
//	addons len  length of the protobuf message that follows; 0 = no addons.
//	addons      protobuf `message Addons { string Flow = 1; bytes Seed = 2; }`
//	            (V2Ray proxy/vless/encoding/addons.proto, Xray proxy/addons.proto).
//	command     1 TCP, 2 UDP, 3 Mux (V2Ray common/protocol RequestCommand).
//	port        big-endian; present for TCP and UDP, absent for Mux.
//	atyp        1 IPv4 (4 bytes), 2 domain (length byte 1..255, then the
//	            name), 3 IPv6 (16 bytes); absent for Mux. This is
//	            [protocols.VAddr], V2Ray's "port then address" parser.
//
// Response header, server to client, followed directly by the payload:
//
//	+---------+------------+--------------+
//	| version | addons len | addons       |
//	| 1: 0x00 | 1: 0..255  | 0..255 bytes |
//	+---------+------------+--------------+
//
// V2Ray writes the response header together with the first response payload
// and never alone; a server that has nothing to send sends no header.
const (
	Version = 0 // VLESS v0; see [Version1] for v1

	// MaxRequestLen is the longest request header: version, UUID, addons
	// length, 255 addon bytes, command, port, atyp, length byte, 255-byte name.
	MaxRequestLen = 1 + 16 + 1 + 255 + 1 + 2 + 1 + 1 + 255
	// MaxResponseLen is the longest response header.
	MaxResponseLen = 1 + 1 + 255
	// MaxAddonsLen is the longest encoded addons message (one length byte).
	MaxAddonsLen = 255

	// FlowVision is XTLS Vision's flow name. The codec carries it; the
	// servers and clients in this project refuse it for now.
	FlowVision = "xtls-rprx-vision"
)

// Command is the request's command byte.
type Command byte

// The commands of V2Ray's common/protocol (RequestCommandTCP/UDP/Mux).
const (
	CommandTCP Command = 1 // a TCP stream to Target
	CommandUDP Command = 2 // UDP packets to Target, each framed by a 2-byte length
	CommandMux Command = 3 // Mux.Cool sub-connections; no Target on the wire
)

func (c Command) String() string {
	switch c {
	case CommandTCP:
		return "tcp"
	case CommandUDP:
		return "udp"
	case CommandMux:
		return "mux"
	}
	return fmt.Sprintf("command(%d)", byte(c))
}

// Sentinel errors. Parse failures wrap one of them (and address failures
// wrap [protocols.ErrBadAddr]); use errors.Is.
var (
	ErrUnknownVersion     = errors.New("vless: unknown version")
	ErrUnsupportedCommand = errors.New("vless: unsupported command")
	ErrBadAddons          = errors.New("vless: malformed addons")
	ErrAddonsTooLong      = errors.New("vless: addons longer than 255 bytes")
)

// Addons is the protobuf message both headers carry. The zero Addons
// encodes as no addons at all (a single 0 length byte).
type Addons struct {
	Flow string // "" or a flow name such as [FlowVision]
	Seed []byte // opaque; unused by version 0 flows in practice
}

// RequestHeader is a decoded VLESS request header.
type RequestHeader struct {
	ID      [16]byte       // the user's UUID, as on the wire
	Addons  Addons         // request addons
	Command Command        // TCP, UDP or Mux
	Target  protocols.Addr // destination; zero for Mux
}

// ResponseHeader is a decoded VLESS response header.
type ResponseHeader struct {
	Addons Addons
}

// AppendRequest appends the encoding of r to b. It fails, returning b
// unchanged, on an unknown command, on addons longer than [MaxAddonsLen],
// or on a TCP/UDP Target that cannot be encoded. For Mux, Target is ignored.
func AppendRequest(b []byte, r *RequestHeader) ([]byte, error) {
	if r.Command != CommandTCP && r.Command != CommandUDP && r.Command != CommandMux {
		return b, fmt.Errorf("%w: %d", ErrUnsupportedCommand, byte(r.Command))
	}
	n := addonsLen(&r.Addons)
	if n > MaxAddonsLen {
		return b, fmt.Errorf("%w: %d bytes", ErrAddonsTooLong, n)
	}
	if r.Command != CommandMux && protocols.VAddr.Len(r.Target) < 0 {
		return b, fmt.Errorf("vless: target: %w: cannot encode %v", protocols.ErrBadAddr, r.Target)
	}
	orig := len(b)
	b = append(b, Version)
	b = append(b, r.ID[:]...)
	b = append(b, byte(n))
	b = appendAddons(b, &r.Addons)
	b = append(b, byte(r.Command))
	if r.Command != CommandMux {
		var err error
		if b, err = protocols.VAddr.Append(b, r.Target); err != nil {
			return b[:orig], fmt.Errorf("vless: target: %w", err)
		}
	}
	return b, nil
}

// ParseRequest decodes a request header from the start of b and returns it
// with the number of bytes it used; the payload starts at b[n:]. A valid but
// incomplete prefix gives [protocols.ErrNeedMore]. It does not look the
// UUID up: that is the server's job (see [Match]).
//
// The result does not alias b. It allocates only for a domain target, a
// flow other than "" and [FlowVision], and a seed.
func ParseRequest(b []byte) (RequestHeader, int, error) {
	var r RequestHeader
	if len(b) < 1 {
		return r, 0, protocols.ErrNeedMore
	}
	if b[0] != Version {
		return r, 0, fmt.Errorf("%w %d", ErrUnknownVersion, b[0])
	}
	if len(b) < 1+16+1 {
		return r, 0, protocols.ErrNeedMore
	}
	copy(r.ID[:], b[1:17])
	i := 17
	m, err := parseAddonsField(b[i:], &r.Addons)
	if err != nil {
		return RequestHeader{}, 0, err
	}
	i += m
	if len(b) < i+1 {
		return RequestHeader{}, 0, protocols.ErrNeedMore
	}
	r.Command = Command(b[i])
	i++
	switch r.Command {
	case CommandMux:
		return r, i, nil
	case CommandTCP, CommandUDP:
	default:
		return RequestHeader{}, 0, fmt.Errorf("%w %d", ErrUnsupportedCommand, byte(r.Command))
	}
	a, m, err := protocols.VAddr.Parse(b[i:])
	if err != nil {
		if err == protocols.ErrNeedMore {
			return RequestHeader{}, 0, err
		}
		return RequestHeader{}, 0, fmt.Errorf("vless: target: %w", err)
	}
	r.Target = a
	return r, i + m, nil
}

// AppendResponse appends the encoding of r to b; it fails, returning b
// unchanged, only when the addons are longer than [MaxAddonsLen].
func AppendResponse(b []byte, r *ResponseHeader) ([]byte, error) {
	n := addonsLen(&r.Addons)
	if n > MaxAddonsLen {
		return b, fmt.Errorf("%w: %d bytes", ErrAddonsTooLong, n)
	}
	b = append(b, Version, byte(n))
	return appendAddons(b, &r.Addons), nil
}

// ParseResponse decodes a response header from the start of b and returns
// it with the number of bytes it used. A valid but incomplete prefix gives
// [protocols.ErrNeedMore].
func ParseResponse(b []byte) (ResponseHeader, int, error) {
	var r ResponseHeader
	if len(b) < 1 {
		return r, 0, protocols.ErrNeedMore
	}
	if b[0] != Version {
		return r, 0, fmt.Errorf("%w %d", ErrUnknownVersion, b[0])
	}
	m, err := parseAddonsField(b[1:], &r.Addons)
	if err != nil {
		return ResponseHeader{}, 0, err
	}
	return r, 1 + m, nil
}

// Match reports whether prefix opens a VLESS v0 request from a user that
// known recognises: the version byte is 0 and the 16 bytes after it are a
// known UUID. It returns [protocols.ErrNeedMore] while prefix is shorter than
// 17 bytes and could still match, and false with no error for anything
// else. It is cheap (one call to known, typically a map look-up) and is
// meant to be wrapped into a [protocols.Matcher].
func Match(prefix []byte, known func(id [16]byte) bool) (bool, error) {
	if len(prefix) < 1 {
		return false, protocols.ErrNeedMore
	}
	if prefix[0] != Version {
		return false, nil
	}
	if len(prefix) < 17 {
		return false, protocols.ErrNeedMore
	}
	return known([16]byte(prefix[1:17])), nil
}

// parseAddonsField decodes the addons length byte and the message at the
// start of b into a, returning the bytes used.
func parseAddonsField(b []byte, a *Addons) (int, error) {
	if len(b) < 1 {
		return 0, protocols.ErrNeedMore
	}
	n := int(b[0])
	if len(b) < 1+n {
		return 0, protocols.ErrNeedMore
	}
	if n > 0 {
		if err := parseAddons(b[1:1+n], a); err != nil {
			return 0, err
		}
	}
	return 1 + n, nil
}
