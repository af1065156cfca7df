package grpc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire format of "gun", Xray's gRPC transport
// (transport/internet/grpc/encoding/stream.proto), is a bidirectional gRPC
// stream of protobuf messages. Each message travels as a gRPC
// Length-Prefixed-Message (grpc/doc/PROTOCOL-HTTP2.md):
//
//	+------------+----------------------+---------------------+
//	| flag (1)   | length (4, big end.) | message (length)    |
//	+------------+----------------------+---------------------+
//
// flag 0 is an uncompressed message; 1 (compressed) is refused, as
// neither side ever offers an encoding. The message is, for Tun,
//
//	message Hunk      { bytes data = 1; }          // 0x0A varint(len) data
//
// and for TunMulti
//
//	message MultiHunk { repeated bytes data = 1; } // (0x0A varint(len) data)*
//
// Both share field 1, so a Hunk is a MultiHunk of one element: this
// package reads every message as a MultiHunk (the data of each field 1,
// in order; other fields skipped as protobuf requires, proto3 "last one
// wins" not applying to a repeated field) and writes one element per
// message, valid for both.
const (
	frameHeaderLen = 5    // flag + length
	hunkTag        = 0x0A // field 1, wire type 2 (length-delimited): (1 << 3) | 2
	// maxHunkHeader is the longest prefix appendHunkHeader writes: the
	// frame header, the tag and a varint of up to 5 bytes.
	maxHunkHeader = frameHeaderLen + 1 + binary.MaxVarintLen32
)

// DefaultMaxMessageSize bounds a received message, as gRPC's default
// receive limit does (4 MiB).
const DefaultMaxMessageSize = 4 << 20

// Errors of the codec; the conn reports them wrapped.
var (
	errNeedMore       = errors.New("grpc: need more data")
	errCompressed     = errors.New("grpc: compressed message (no encoding was offered)")
	errTooLarge       = errors.New("grpc: message larger than the limit")
	errBadFlag        = errors.New("grpc: bad message flag")
	errMalformedHunk  = errors.New("grpc: malformed Hunk message")
	errUnsupportedTag = errors.New("grpc: unsupported protobuf wire type in Hunk")
	errTruncated      = errors.New("grpc: stream ended inside a message")
)

// appendHunkHeader appends the frame header of a Hunk message carrying
// dataLen bytes, and the message's own tag and length: what goes on the
// wire before the data itself.
func appendHunkHeader(dst []byte, dataLen int) []byte {
	var v [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(v[:], uint64(dataLen))
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+n+dataLen))
	dst = append(dst, hunkTag)
	return append(dst, v[:n]...)
}

// appendHunk appends a whole frame carrying data as one Hunk.
func appendHunk(dst, data []byte) []byte {
	return append(appendHunkHeader(dst, len(data)), data...)
}

// parseFrameHeader reads the 5-byte frame header at the start of b and
// returns the message length. It returns errNeedMore when b is shorter,
// errCompressed or errBadFlag for a flag other than 0, and errTooLarge
// when the length exceeds limit.
func parseFrameHeader(b []byte, limit int) (int, error) {
	if len(b) < frameHeaderLen {
		return 0, errNeedMore
	}
	switch b[0] {
	case 0:
	case 1:
		return 0, errCompressed
	default:
		return 0, fmt.Errorf("%w 0x%02x", errBadFlag, b[0])
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) > uint64(limit) {
		return 0, fmt.Errorf("%w: %d > %d bytes", errTooLarge, n, limit)
	}
	return int(n), nil
}

// readFrame splits the first whole frame off b: it returns the message
// (aliasing b) and the bytes the frame takes, or errNeedMore when b holds
// only part of it.
func readFrame(b []byte, limit int) (msg []byte, n int, err error) {
	l, err := parseFrameHeader(b, limit)
	if err != nil {
		return nil, 0, err
	}
	if len(b)-frameHeaderLen < l {
		return nil, 0, errNeedMore
	}
	return b[frameHeaderLen : frameHeaderLen+l], frameHeaderLen + l, nil
}

// appendHunkData parses msg as a MultiHunk (which a Hunk is too) and
// appends the data of each field 1 to dst, aliasing msg. Empty data fields
// are left out. Unknown fields are skipped; groups, wrong wire types for
// field 1, field number 0 and truncated fields are errors.
func appendHunkData(dst [][]byte, msg []byte) ([][]byte, error) {
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			return dst, fmt.Errorf("%w: bad field key", errMalformedHunk)
		}
		msg = msg[n:]
		field, wire := key>>3, key&7
		if field == 0 || field > 1<<29-1 {
			return dst, fmt.Errorf("%w: field number %d", errMalformedHunk, field)
		}
		switch wire {
		case 0: // varint
			_, n := binary.Uvarint(msg)
			if n <= 0 {
				return dst, fmt.Errorf("%w: bad varint in field %d", errMalformedHunk, field)
			}
			msg = msg[n:]
		case 1: // fixed64
			if len(msg) < 8 {
				return dst, fmt.Errorf("%w: short fixed64 field %d", errMalformedHunk, field)
			}
			msg = msg[8:]
		case 5: // fixed32
			if len(msg) < 4 {
				return dst, fmt.Errorf("%w: short fixed32 field %d", errMalformedHunk, field)
			}
			msg = msg[4:]
		case 2: // length-delimited
			l, n := binary.Uvarint(msg)
			if n <= 0 || l > uint64(len(msg)-n) {
				return dst, fmt.Errorf("%w: field %d length", errMalformedHunk, field)
			}
			data := msg[n : n+int(l)]
			msg = msg[n+int(l):]
			if field == 1 && len(data) > 0 {
				dst = append(dst, data)
			}
		default: // 3, 4: groups; 6, 7: invalid
			return dst, fmt.Errorf("%w %d (field %d)", errUnsupportedTag, wire, field)
		}
		if field == 1 && wire != 2 {
			return dst, fmt.Errorf("%w: field 1 has wire type %d", errMalformedHunk, wire)
		}
	}
	return dst, nil
}
