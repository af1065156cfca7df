package vless

import (
	"fmt"
	"unicode/utf8"
)

// The addons are a protobuf (proto3) message, encoded and decoded here by
// hand with just enough of the wire format
// (https://protobuf.dev/programming-guides/encoding/):
//
//	message Addons {
//	  string Flow = 1;  // tag 0x0a = field 1 << 3 | wire type 2 (LEN)
//	  bytes  Seed = 2;  // tag 0x12 = field 2 << 3 | wire type 2 (LEN)
//	}
//
// Encoding writes the non-empty fields in field order, as protobuf-go's
// Marshal does: tag ‖ varint length ‖ bytes. Decoding accepts what
// protobuf-go's Unmarshal accepts: fields in any order (the last occurrence
// wins), unknown fields of every wire type (skipped, groups included), and a
// known field sent with another wire type (treated as unknown); it refuses
// truncated data, field number 0, stray end-group tags, overlong varints and
// a Flow that is not valid UTF-8.
const (
	tagFlow = 1<<3 | wireLen // 0x0a
	tagSeed = 2<<3 | wireLen // 0x12

	wireVarint     = 0
	wireFixed64    = 1
	wireLen        = 2
	wireStartGroup = 3
	wireEndGroup   = 4
	wireFixed32    = 5

	maxFieldNumber = 1<<29 - 1
	maxGroupDepth  = 16 // well above what fits in 255 bytes of sane input
)

// addonsLen is the encoded size of a, which may exceed MaxAddonsLen.
func addonsLen(a *Addons) int {
	n := 0
	if len(a.Flow) > 0 {
		n += 1 + varintLen(uint64(len(a.Flow))) + len(a.Flow)
	}
	if len(a.Seed) > 0 {
		n += 1 + varintLen(uint64(len(a.Seed))) + len(a.Seed)
	}
	return n
}

// appendAddons appends the protobuf message for a (without the length byte).
func appendAddons(b []byte, a *Addons) []byte {
	if len(a.Flow) > 0 {
		b = append(b, tagFlow)
		b = appendVarint(b, uint64(len(a.Flow)))
		b = append(b, a.Flow...)
	}
	if len(a.Seed) > 0 {
		b = append(b, tagSeed)
		b = appendVarint(b, uint64(len(a.Seed)))
		b = append(b, a.Seed...)
	}
	return b
}

// parseAddons decodes a complete protobuf message into a.
func parseAddons(b []byte, a *Addons) error {
	var flow, seed []byte
	var haveFlow, haveSeed bool
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if typ == wireLen && (num == 1 || num == 2) {
			v, n, err := consumeBytes(b)
			if err != nil {
				return err
			}
			b = b[n:]
			if num == 1 {
				flow, haveFlow = v, true
			} else {
				seed, haveSeed = v, true
			}
			continue
		}
		n, err = skipValue(b, num, typ, 0)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	if haveFlow {
		if !utf8.Valid(flow) {
			return fmt.Errorf("%w: flow is not valid UTF-8", ErrBadAddons)
		}
		a.Flow = internFlow(flow)
	}
	if haveSeed && len(seed) > 0 {
		a.Seed = append([]byte(nil), seed...)
	}
	return nil
}

// internFlow returns the flow as a string without allocating for the
// values seen in practice.
func internFlow(b []byte) string {
	switch string(b) { // no allocation: the compiler compares in place
	case "":
		return ""
	case FlowVision:
		return FlowVision
	}
	return string(b)
}

func consumeTag(b []byte) (num uint64, typ byte, n int, err error) {
	v, n, err := consumeVarint(b)
	if err != nil {
		return 0, 0, 0, err
	}
	num, typ = v>>3, byte(v&7)
	if num == 0 || num > maxFieldNumber {
		return 0, 0, 0, fmt.Errorf("%w: invalid field number %d", ErrBadAddons, num)
	}
	return num, typ, n, nil
}

func consumeVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		if i == 9 && c > 1 {
			return 0, 0, fmt.Errorf("%w: varint overflows 64 bits", ErrBadAddons)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: truncated varint", ErrBadAddons)
}

func consumeBytes(b []byte) ([]byte, int, error) {
	l, n, err := consumeVarint(b)
	if err != nil {
		return nil, 0, err
	}
	if l > uint64(len(b)-n) {
		return nil, 0, fmt.Errorf("%w: field longer than the message", ErrBadAddons)
	}
	return b[n : n+int(l)], n + int(l), nil
}

// skipValue skips the value of an unknown field whose tag has been read.
func skipValue(b []byte, num uint64, typ byte, depth int) (int, error) {
	switch typ {
	case wireVarint:
		_, n, err := consumeVarint(b)
		return n, err
	case wireFixed64:
		if len(b) < 8 {
			return 0, fmt.Errorf("%w: truncated fixed64", ErrBadAddons)
		}
		return 8, nil
	case wireFixed32:
		if len(b) < 4 {
			return 0, fmt.Errorf("%w: truncated fixed32", ErrBadAddons)
		}
		return 4, nil
	case wireLen:
		_, n, err := consumeBytes(b)
		return n, err
	case wireStartGroup:
		if depth >= maxGroupDepth {
			return 0, fmt.Errorf("%w: groups nested too deep", ErrBadAddons)
		}
		i := 0
		for {
			inNum, inTyp, n, err := consumeTag(b[i:])
			if err != nil {
				return 0, err
			}
			i += n
			if inTyp == wireEndGroup {
				if inNum != num {
					return 0, fmt.Errorf("%w: mismatched end group", ErrBadAddons)
				}
				return i, nil
			}
			n, err = skipValue(b[i:], inNum, inTyp, depth+1)
			if err != nil {
				return 0, err
			}
			i += n
		}
	case wireEndGroup:
		return 0, fmt.Errorf("%w: end group without start", ErrBadAddons)
	}
	return 0, fmt.Errorf("%w: unknown wire type %d", ErrBadAddons, typ)
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
