package anytls

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Padding scheme text (spec: "PaddingScheme"), the data of
// cmdUpdatePaddingScheme and the server's "paddingScheme" option:
//
//	stop=8                  packets 0..stop-1 are shaped; from packet stop on, writes go out as they are
//	0=30-30                 packet 0 is the authentication: its padding0 length is drawn from this range
//	1=100-400               packet 1: one record of 100..400 bytes
//	2=400-500,c,500-1000    packet 2: records of these sizes; "c" stops early once the payload is sent
//	5=                      an empty list, or a packet with no line: sent as it is
//
// Lines are "key=value", separated by "\n". A range is "min-max" in
// decimal, 0..65535 (a reversed range is swapped, as anytls-go does). Spaces
// and a "\r" around lines and tokens are ignored; keys other than "stop"
// and packet numbers are ignored (anytls-go forks add some, e.g. "jitter");
// a repeated key's last line counts. Anything else is an error, where
// anytls-go would silently read a zero.
//
// The scheme is identified by the lowercase hex MD5 of its exact bytes
// ([Scheme.MD5]); that is what a client advertises as padding-md5.

// DefaultSchemeText is the spec's default padding scheme, byte for byte (no
// trailing newline): the MD5 every stock client advertises.
const DefaultSchemeText = "stop=8\n" +
	"0=30-30\n" +
	"1=100-400\n" +
	"2=400-500,c,500-1000,c,500-1000,c,500-1000,c,500-1000\n" +
	"3=9-9,500-1000\n" +
	"4=500-1000\n" +
	"5=500-1000\n" +
	"6=500-1000\n" +
	"7=500-1000"

// DefaultSchemeMD5 is the MD5 of [DefaultSchemeText].
const DefaultSchemeMD5 = "75cff2ad89aadf5e257059ee571ebe11"

// Step is one token of a packet's list: a size range, or the check mark "c".
type Step struct {
	Min, Max int  // a record of Min..Max bytes (Max excluded unless Min == Max; see [Scheme.Plan])
	Check    bool // "c": stop here if the payload is all sent
}

// Scheme is a parsed padding scheme. It is immutable and safe to share.
type Scheme struct {
	raw     string
	md5     string
	stop    uint32
	packets map[uint32][]Step
}

var defaultScheme = mustParseScheme(DefaultSchemeText)

func mustParseScheme(text string) *Scheme {
	s, err := ParseScheme([]byte(text))
	if err != nil {
		panic(err)
	}
	return s
}

// DefaultScheme returns the parsed [DefaultSchemeText].
func DefaultScheme() *Scheme { return defaultScheme }

// ParseScheme parses a padding scheme text. It fails on a text longer than
// a frame holds, a line without "=", a missing or non-numeric stop, a packet
// number that is not plain decimal, or a token that is neither "c" nor a
// range of 0..65535.
func ParseScheme(raw []byte) (*Scheme, error) {
	if len(raw) > MaxDataLen {
		return nil, fmt.Errorf("%w: %d bytes do not fit a frame", ErrBadScheme, len(raw))
	}
	sum := md5.Sum(raw)
	s := &Scheme{raw: string(raw), md5: hex.EncodeToString(sum[:]), packets: map[uint32][]Step{}}
	haveStop := false
	for i, line := range strings.Split(s.raw, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: %q is not key=value", ErrBadScheme, i+1, line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if key == "stop" {
			n, err := strconv.ParseUint(value, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: stop=%q is not a number", ErrBadScheme, i+1, value)
			}
			s.stop, haveStop = uint32(n), true
			continue
		}
		if key == "" || key[0] < '0' || key[0] > '9' {
			continue // an unknown key
		}
		pkt, err := strconv.ParseUint(key, 10, 32)
		if err != nil || strconv.FormatUint(pkt, 10) != key {
			return nil, fmt.Errorf("%w: line %d: packet %q is not a plain decimal number", ErrBadScheme, i+1, key)
		}
		steps, err := parseSteps(value)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d (packet %s): %v", ErrBadScheme, i+1, key, err)
		}
		s.packets[uint32(pkt)] = steps
	}
	if !haveStop {
		return nil, fmt.Errorf("%w: no stop= line", ErrBadScheme)
	}
	return s, nil
}

func parseSteps(value string) ([]Step, error) {
	if value == "" {
		return nil, nil
	}
	var steps []Step
	for tok := range strings.SplitSeq(value, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "c" {
			steps = append(steps, Step{Check: true})
			continue
		}
		lo, hi, ok := strings.Cut(tok, "-")
		if !ok {
			return nil, fmt.Errorf("%q is neither c nor min-max", tok)
		}
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%q: sizes must be numbers from 0 to 65535", tok)
		}
		steps = append(steps, Step{Min: int(min(a, b)), Max: int(max(a, b))})
	}
	return steps, nil
}

// Raw is the scheme's exact text.
func (s *Scheme) Raw() string { return s.raw }

// MD5 is the lowercase hex MD5 of the text: a client's padding-md5.
func (s *Scheme) MD5() string { return s.md5 }

// Stop is the first packet that is no longer shaped.
func (s *Scheme) Stop() uint32 { return s.stop }

// Steps returns packet pkt's list (nil when the scheme has none). The
// slice is the scheme's own: do not modify it.
func (s *Scheme) Steps(pkt uint32) []Step { return s.packets[pkt] }

// Rand is the randomness a plan draws sizes from: IntN returns a uniform
// int in [0, n) for n > 0. *math/rand/v2.Rand implements it; the codec has
// none of its own.
type Rand interface {
	IntN(n int) int
}

// draw picks a size from st as anytls-go does: Min when the range is a
// point, else Min + a uniform draw from [0, Max-Min) (crypto/rand.Int), so
// Max itself is never drawn.
func (st Step) draw(r Rand) int {
	if st.Max <= st.Min {
		return st.Min
	}
	return st.Min + r.IntN(st.Max-st.Min)
}

// Padding0 draws the length of the authentication's padding0: packet 0's
// first range, or 0 when the scheme has none.
func (s *Scheme) Padding0(r Rand) int {
	for _, st := range s.packets[0] {
		if !st.Check {
			return st.draw(r)
		}
	}
	return 0
}

// NoWaste in [Record.Waste] means the record has no cmdWaste frame.
const NoWaste = -1

// Record is one write to the TLS connection, as a plan lays it out: the
// next Payload bytes of the packet, then, unless Waste is [NoWaste], a
// cmdWaste frame with Waste bytes of data (HeaderLen+Waste bytes).
type Record struct {
	Payload int
	Waste   int
}

// Len is the record's size: what one TLS write carries.
func (r Record) Len() int {
	if r.Waste == NoWaste {
		return r.Payload
	}
	return r.Payload + HeaderLen + r.Waste
}

// Plan appends to dst the records that packet pkt (a session's pkt-th
// write to TLS; the authentication is packet 0) of payload bytes is sent
// as, following anytls-go's Session.writeConn step by step:
//
//   - A "c" step: if the payload is all sent, the packet ends here;
//     otherwise it is skipped.
//   - A range step draws a size l. If more than l payload bytes remain, a
//     record carries the next l of them (none for l = 0: an empty write
//     sends nothing). If 1..l remain, a record carries
//     them followed by a cmdWaste frame of l-remaining-7 bytes when that
//     is positive, so the record is exactly l bytes (or just the payload
//     when it is not). If none remain, the record is a cmdWaste frame of l
//     bytes of data: l+7 bytes in all (anytls-go counts the data, not the
//     header, for pure padding).
//   - Payload left after the last step goes out as one more record.
//
// A packet past the scheme's stop, or with no list, is one record of the
// whole payload. Plan draws from r once per range step whose range is not a
// point; it does not allocate when dst has room.
func (s *Scheme) Plan(dst []Record, pkt uint32, payload int, r Rand) []Record {
	rem := payload
	if pkt < s.stop {
		for _, st := range s.packets[pkt] {
			if st.Check {
				if rem == 0 {
					return dst
				}
				continue
			}
			l := st.draw(r)
			switch {
			case rem > l:
				if l > 0 { // a 0-byte write would send nothing
					dst = append(dst, Record{Payload: l, Waste: NoWaste})
					rem -= l
				}
			case rem > 0:
				waste := NoWaste
				if pad := l - rem - HeaderLen; pad > 0 {
					waste = pad
				}
				dst = append(dst, Record{Payload: rem, Waste: waste})
				rem = 0
			default:
				dst = append(dst, Record{Waste: l})
			}
		}
	}
	if rem > 0 {
		dst = append(dst, Record{Payload: rem, Waste: NoWaste})
	}
	return dst
}
