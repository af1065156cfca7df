package grpc

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/encoding/protowire"
)

var update = flag.Bool("update", false, "rewrite the fuzz seeds in testdata/fuzz")

// Golden frames, checked against protowire below and against grpc-go in
// grpc_test.go.
var goldenFrames = []struct {
	name string
	data string
	hex  string
}{
	{"empty", "", "0000000002" + "0a00"},
	{"hi", "hi", "0000000004" + "0a026869"},
	{"127 bytes", strings.Repeat("a", 127), "0000000081" + "0a7f" + strings.Repeat("61", 127)},
	{"128 bytes", strings.Repeat("b", 128), "0000000083" + "0a8001" + strings.Repeat("62", 128)},
}

func TestGoldenFrames(t *testing.T) {
	for _, g := range goldenFrames {
		want, _ := hex.DecodeString(g.hex)
		if got := appendHunk(nil, []byte(g.data)); !bytes.Equal(got, want) {
			t.Errorf("%s: appendHunk = %x, want %x", g.name, got, want)
		}
		// The message is what protobuf makes of Hunk{data}.
		msg := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte(g.data))
		if !bytes.Equal(want[frameHeaderLen:], msg) {
			t.Errorf("%s: golden message %x, protowire %x", g.name, want[frameHeaderLen:], msg)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 16383, 16384, 1 << 20} {
		data := bytes.Repeat([]byte{0xa5, 0x5a, 0x01}, size/3+1)[:size]
		frame := appendHunk([]byte("prefix"), data)[len("prefix"):]
		if h := appendHunkHeader(nil, size); !bytes.HasPrefix(frame, h) || len(h) > maxHunkHeader {
			t.Fatalf("%d: header %x", size, h)
		}
		msg, n, err := readFrame(append(frame, "next frame"...), DefaultMaxMessageSize)
		if err != nil || n != len(frame) {
			t.Fatalf("%d: readFrame = %d, %v", size, n, err)
		}
		segs, err := appendHunkData(nil, msg)
		if err != nil {
			t.Fatalf("%d: %v", size, err)
		}
		if got := bytes.Join(segs, nil); !bytes.Equal(got, data) {
			t.Fatalf("%d: data differs", size)
		}
		if size == 0 && len(segs) != 0 {
			t.Errorf("empty data yields %d segments", len(segs))
		}
	}
}

// TestTruncated: every proper prefix of a frame needs more, and every
// proper prefix of a non-empty Hunk message is refused.
func TestTruncated(t *testing.T) {
	frame := appendHunk(nil, bytes.Repeat([]byte("x"), 200))
	for i := range len(frame) {
		if _, _, err := readFrame(frame[:i], DefaultMaxMessageSize); err != errNeedMore {
			t.Fatalf("frame prefix %d: %v", i, err)
		}
	}
	msg := frame[frameHeaderLen:]
	for i := 1; i < len(msg); i++ {
		if _, err := appendHunkData(nil, msg[:i]); !errors.Is(err, errMalformedHunk) {
			t.Fatalf("message prefix %d: %v", i, err)
		}
	}
}

func TestFrameHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want error
	}{
		{"0100000002", errCompressed},
		{"0200000002", errBadFlag},
		{"ff00000000", errBadFlag},
		{"0000400001", errTooLarge}, // 4 MiB + 1
	} {
		b, _ := hex.DecodeString(tc.hex)
		if _, err := parseFrameHeader(b, DefaultMaxMessageSize); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.hex, err, tc.want)
		}
	}
	if n, err := parseFrameHeader([]byte{0, 0, 0x40, 0, 0}, DefaultMaxMessageSize); n != 4<<20 || err != nil {
		t.Errorf("4 MiB exactly: %d, %v", n, err)
	}
}

func TestParseFields(t *testing.T) {
	field := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	var multi []byte
	for _, s := range []string{"one", "", "two", "three"} {
		multi = protowire.AppendBytes(field(multi, 1, protowire.BytesType), []byte(s))
	}
	unknown := field(nil, 2, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 300)
	unknown = protowire.AppendFixed32(field(unknown, 3, protowire.Fixed32Type), 7)
	unknown = protowire.AppendFixed64(field(unknown, 4, protowire.Fixed64Type), 7)
	unknown = protowire.AppendBytes(field(unknown, 5, protowire.BytesType), []byte("skip me"))
	unknown = protowire.AppendBytes(field(unknown, 1, protowire.BytesType), []byte("kept"))

	for _, tc := range []struct {
		name string
		msg  []byte
		want string // data joined with "|"; "" with err
		err  error
	}{
		{"MultiHunk of four, one empty", multi, "one|two|three", nil},
		{"unknown fields skipped", unknown, "kept", nil},
		{"empty message", nil, "", nil},
		{"group", field(nil, 2, protowire.StartGroupType), "", errUnsupportedTag},
		{"wire type 7", []byte{0x0f}, "", errUnsupportedTag},
		{"field 1 as varint", protowire.AppendVarint(field(nil, 1, protowire.VarintType), 5), "", errMalformedHunk},
		{"field 0", []byte{0x02, 0x00}, "", errMalformedHunk},
		{"length past the end", []byte{0x0a, 0x05, 'a'}, "", errMalformedHunk},
		{"huge length", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, "", errMalformedHunk},
		{"bad varint key", bytes.Repeat([]byte{0xff}, 11), "", errMalformedHunk},
		{"short fixed64", []byte{0x11, 1, 2, 3}, "", errMalformedHunk},
		{"short fixed32", []byte{0x15, 1}, "", errMalformedHunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs, err := appendHunkData(nil, tc.msg)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, s := range segs {
				parts = append(parts, string(s))
			}
			if got := strings.Join(parts, "|"); got != tc.want {
				t.Errorf("data %q, want %q", got, tc.want)
			}
		})
	}
}

// seedFrames are the fuzz seeds, also kept in testdata/fuzz (regenerate
// with go test -run TestFuzzSeeds -update).
func seedFrames() map[string][]byte {
	two := appendHunk(appendHunk(nil, []byte("first")), []byte("second"))
	multi := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("a"))
	multi = protowire.AppendBytes(protowire.AppendTag(multi, 1, protowire.BytesType), []byte("b"))
	return map[string][]byte{
		"hunk_hi":     appendHunk(nil, []byte("hi")),
		"hunk_empty":  appendHunk(nil, nil),
		"hunk_128":    appendHunk(nil, bytes.Repeat([]byte{7}, 128)),
		"two_frames":  two,
		"multihunk":   append([]byte{0, 0, 0, 0, byte(len(multi))}, multi...),
		"compressed":  {1, 0, 0, 0, 0},
		"truncated":   appendHunk(nil, []byte("hello"))[:8],
		"huge_length": {0, 0xff, 0xff, 0xff, 0xff},
	}
}

func TestFuzzSeeds(t *testing.T) {
	for _, target := range []string{"FuzzReadFrame", "FuzzParseHunk"} {
		for name, frame := range seedFrames() {
			b := frame
			if target == "FuzzParseHunk" {
				if len(b) < frameHeaderLen {
					continue
				}
				b = b[frameHeaderLen:]
			}
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			path := filepath.Join("testdata", "fuzz", target, name)
			if *update {
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s is missing or stale (go test -run TestFuzzSeeds -update): %v", path, err)
			}
		}
	}
}

// FuzzReadFrame: readFrame never panics, never claims more than it has,
// splits a frame only when whole, and agrees with parseFrameHeader.
func FuzzReadFrame(f *testing.F) {
	for _, b := range seedFrames() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1 << 16
		msg, n, err := readFrame(b, limit)
		if err != nil {
			if msg != nil || n != 0 {
				t.Fatalf("error %v with %d bytes", err, n)
			}
			if err == errNeedMore {
				if l, herr := parseFrameHeader(b, limit); herr == nil && len(b) >= frameHeaderLen+l {
					t.Fatalf("need more, but %d bytes hold a %d-byte message", len(b), l)
				}
			}
			return
		}
		if n != frameHeaderLen+len(msg) || n > len(b) || !bytes.Equal(msg, b[frameHeaderLen:n]) {
			t.Fatalf("n %d, message %d bytes, input %d", n, len(msg), len(b))
		}
		// A frame re-encoded from its data reads back to the same data.
		segs, err := appendHunkData(nil, msg)
		if err != nil {
			return
		}
		data := bytes.Join(segs, nil)
		again, _, err := readFrame(appendHunk(nil, data), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		segs2, err := appendHunkData(nil, again)
		if err != nil || !bytes.Equal(bytes.Join(segs2, nil), data) {
			t.Fatalf("re-encoded frame: %v", err)
		}
	})
}

// FuzzParseHunk: appendHunkData never panics, returns slices of its input
// only, and agrees with protowire on which messages are well-formed.
func FuzzParseHunk(f *testing.F) {
	for _, b := range seedFrames() {
		if len(b) >= frameHeaderLen {
			f.Add(b[frameHeaderLen:])
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		segs, err := appendHunkData(nil, msg)
		// protowire's view: every field consumable, field 1 bytes-typed,
		// no groups.
		var want [][]byte
		ok := true
		for rest := msg; len(rest) > 0; {
			num, typ, n := protowire.ConsumeTag(rest)
			if n < 0 || num > protowire.MaxValidNumber || typ == protowire.StartGroupType || typ == protowire.EndGroupType || num == 1 && typ != protowire.BytesType {
				ok = false
				break
			}
			rest = rest[n:]
			if num == 1 {
				v, m := protowire.ConsumeBytes(rest)
				if m < 0 {
					ok = false
					break
				}
				if len(v) > 0 {
					want = append(want, v)
				}
				rest = rest[m:]
				continue
			}
			m := protowire.ConsumeFieldValue(num, typ, rest)
			if m < 0 {
				ok = false
				break
			}
			rest = rest[m:]
		}
		if ok != (err == nil) {
			t.Fatalf("appendHunkData err %v; protowire well-formed %v", err, ok)
		}
		if err != nil {
			return
		}
		if len(segs) != len(want) {
			t.Fatalf("%d segments, protowire %d", len(segs), len(want))
		}
		for i := range segs {
			if !bytes.Equal(segs[i], want[i]) {
				t.Fatalf("segment %d differs", i)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	data := make([]byte, maxChunk)
	buf := make([]byte, 0, maxHunkHeader)
	b.ReportAllocs()
	for range b.N {
		buf = appendHunkHeader(buf[:0], len(data))
	}
	_ = buf
}

func BenchmarkDecode(b *testing.B) {
	frame := appendHunk(nil, make([]byte, maxChunk))
	var segs [][]byte
	b.ReportAllocs()
	for range b.N {
		msg, _, err := readFrame(frame, DefaultMaxMessageSize)
		if err != nil {
			b.Fatal(err)
		}
		if segs, err = appendHunkData(segs[:0], msg); err != nil || len(segs) != 1 {
			b.Fatal(err)
		}
	}
}

// TestClaimedLengthCostsNoMemory: a header claiming a message of the
// limit (4 MiB) followed by a few bytes and the end of the stream costs
// what arrived, not what was claimed; a claim past the limit is refused
// before any read of the message. Before, the reader allocated the
// claimed length at once (4 MiB per stream for 5 bytes sent).
func TestClaimedLengthCostsNoMemory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		claim uint32
		want  error
	}{
		{"claim at the limit, 100 bytes sent", DefaultMaxMessageSize, errTruncated},
		{"claim of 1 GiB", 1 << 30, errTooLarge},
		{"claim of 4 GiB - 1", 1<<32 - 1, errTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := append([]byte{0}, byte(tc.claim>>24), byte(tc.claim>>16), byte(tc.claim>>8), byte(tc.claim))
			stream = append(stream, bytes.Repeat([]byte{0x0a}, 100)...)
			f := frameReader{r: bytes.NewReader(stream), limit: DefaultMaxMessageSize}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := f.Read(make([]byte, 512))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.want) {
				t.Fatalf("read: %v, want %v", err, tc.want)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 2*largeMessageStep {
				t.Fatalf("the reader allocated %d bytes for a %d-byte claim with 100 bytes sent; want at most %d", got, tc.claim, 2*largeMessageStep)
			}
		})
	}
}

// TestLargeMessagesInPieces: messages longer than a pooled buffer, up to
// the limit, arrive whole when the stream hands them out in small reads.
func TestLargeMessagesInPieces(t *testing.T) {
	var stream, want []byte
	for i, size := range []int{maxChunk + 17, largeMessageStep, largeMessageStep + 1, 1 << 20, DefaultMaxMessageSize - maxHunkHeader} {
		data := bytes.Repeat([]byte{byte(i), 0x5a, 0xa5}, size/3+1)[:size]
		stream = appendHunk(stream, data)
		want = append(want, data...)
	}
	f := frameReader{r: iotest.HalfReader(bytes.NewReader(stream)), limit: DefaultMaxMessageSize}
	got, err := io.ReadAll(&f)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes of %d (equal %v): %v", len(got), len(want), bytes.Equal(got, want), err)
	}
	// Cut inside a large message: truncated, not a clean end.
	f = frameReader{r: bytes.NewReader(stream[:len(stream)-1]), limit: DefaultMaxMessageSize}
	if _, err := io.ReadAll(&f); !errors.Is(err, errTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut stream: %v", err)
	}
}
