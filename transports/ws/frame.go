package ws

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// Frames (RFC 6455 §5.2), all that this package sends and reads:
//
//	byte 0: FIN (bit 7) | RSV1-3 (bits 6-4, always 0: no extension is
//	        negotiated) | opcode (bits 3-0)
//	byte 1: MASK (bit 7) | payload length (bits 6-0): 0-125 as is, 126 =
//	        a 16-bit length follows, 127 = a 64-bit length follows (its top
//	        bit 0). §5.2 asks for the shortest form; this package sends it
//	        and, as gorilla/websocket (Xray's) does, accepts a longer one.
//	then:   the extended length, big endian, if any
//	        the 4-byte masking key, when MASK is set: every frame a client
//	        sends is masked, no frame a server sends is (§5.3)
//	then:   the payload, XORed with the key repeated when masked
//
// Data travels in binary messages: a binary frame, then continuation frames
// until one has FIN. Control frames (close, ping, pong) carry at most 125
// bytes, are never fragmented, and may come between the frames of a
// message (§5.5).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	finBit  = 0x80
	rsvBits = 0x70
	maskBit = 0x80

	maxFrameHeader  = 14 // 2 + 8 (64-bit length) + 4 (masking key)
	maxControlBytes = 125
)

// Close codes (RFC 6455 §7.4.1) this package sends or names.
const (
	closeNormal          = 1000
	closeGoingAway       = 1001
	closeProtocolError   = 1002
	closeUnsupportedData = 1003
	closeNoStatus        = 1005 // never sent: "the close frame had no code"
	closeAbnormal        = 1006 // never sent: "the connection ended without a close frame"
)

var (
	errNeedMore = errors.New("ws: need more bytes")
	// errProtocol is the peer breaking the framing; the conn answers it
	// with close code 1002.
	errProtocol = errors.New("ws: protocol error")
)

// frameHeader is a parsed frame header.
type frameHeader struct {
	fin    bool
	op     byte
	masked bool
	key    [4]byte
	length int64 // payload bytes
}

func (h frameHeader) control() bool { return h.op&0x8 != 0 }

// parseFrameHeader parses the frame header at the start of b and returns
// it with its length in bytes, errNeedMore when b holds only part of it, or
// an error wrapping errProtocol for a header no endpoint may send: reserved
// bits or opcodes, a 64-bit length with its top bit set, a fragmented or
// over-long control frame.
func parseFrameHeader(b []byte) (frameHeader, int, error) {
	if len(b) < 2 {
		return frameHeader{}, 0, errNeedMore
	}
	var h frameHeader
	h.fin, h.op = b[0]&finBit != 0, b[0]&0x0f
	h.masked = b[1]&maskBit != 0
	if b[0]&rsvBits != 0 {
		return frameHeader{}, 0, fmt.Errorf("%w: reserved bits 0x%02x set (no extension was negotiated)", errProtocol, b[0]&rsvBits)
	}
	switch h.op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return frameHeader{}, 0, fmt.Errorf("%w: reserved opcode 0x%x", errProtocol, h.op)
	}
	n := 2
	switch l := b[1] &^ maskBit; l {
	case 126:
		if len(b) < n+2 {
			return frameHeader{}, 0, errNeedMore
		}
		h.length = int64(binary.BigEndian.Uint16(b[n:]))
		n += 2
	case 127:
		if len(b) < n+8 {
			return frameHeader{}, 0, errNeedMore
		}
		u := binary.BigEndian.Uint64(b[n:])
		n += 8
		if u>>63 != 0 {
			return frameHeader{}, 0, fmt.Errorf("%w: 64-bit length with its top bit set", errProtocol)
		}
		h.length = int64(u)
	default:
		h.length = int64(l)
	}
	if h.control() && (!h.fin || h.length > maxControlBytes) {
		return frameHeader{}, 0, fmt.Errorf("%w: control frame 0x%x fragmented or of %d bytes", errProtocol, h.op, h.length)
	}
	if h.masked {
		if len(b) < n+4 {
			return frameHeader{}, 0, errNeedMore
		}
		copy(h.key[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// appendFrameHeader appends the header of a final frame of opcode op with
// length payload bytes, masked with key when key is not nil.
func appendFrameHeader(dst []byte, op byte, length int, key *[4]byte) []byte {
	var maskFlag byte
	if key != nil {
		maskFlag = maskBit
	}
	switch {
	case length <= 125:
		dst = append(dst, finBit|op, maskFlag|byte(length))
	case length <= 0xffff:
		dst = append(dst, finBit|op, maskFlag|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(length))
	default:
		dst = append(dst, finBit|op, maskFlag|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(length))
	}
	if key != nil {
		dst = append(dst, key[:]...)
	}
	return dst
}

// maskBytes XORs b in place with key, starting at position pos of the
// key's repetition, and returns the position after b.
func maskBytes(key [4]byte, pos int, b []byte) int { return maskCopy(b, b, key, pos) }

// maskBlock is how much of the key's repetition maskCopy lays out at a
// time for crypto/subtle's XOR, which runs in vector registers.
const maskBlock = 512

// maskCopy sets dst[:len(src)] to src XORed with key's repetition from
// position pos, in one pass (copying and then masking in place reads the
// payload twice), and returns the position after it. dst and src are the
// same slice or do not overlap.
func maskCopy(dst, src []byte, key [4]byte, pos int) int {
	var k [maskBlock]byte
	n := min(len(src), maskBlock)
	for i := range min(n, 4) {
		k[i] = key[(pos+i)&3]
	}
	for filled := 4; filled < n; filled *= 2 {
		copy(k[filled:n], k[:filled])
	}
	// maskBlock is a multiple of 4, so each block starts at pos again.
	i := 0
	for ; i+maskBlock <= len(src); i += maskBlock {
		subtle.XORBytes(dst[i:i+maskBlock], src[i:i+maskBlock], k[:])
	}
	subtle.XORBytes(dst[i:len(src)], src[i:], k[:len(src)-i])
	return (pos + len(src)) & 3
}
