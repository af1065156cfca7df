package ws

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFrameExamples: the frames of RFC 6455 §5.7, byte for byte, parsed and
// built.
func TestFrameExamples(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, tc := range []struct {
		name    string
		wire    string
		op      byte
		masked  bool
		payload string // hex, unmasked
	}{
		{"unmasked text Hello", "81 05 48656c6c6f", opText, false, "48656c6c6f"},
		{"masked text Hello", "81 85 37fa213d 7f9f4d5158", opText, true, "48656c6c6f"},
		{"unmasked ping Hello", "89 05 48656c6c6f", opPing, false, "48656c6c6f"},
		{"masked pong Hello", "8a 85 37fa213d 7f9f4d5158", opPong, true, "48656c6c6f"},
	} {
		wire := unhex(t, tc.wire)
		h, n, err := parseFrameHeader(wire)
		if err != nil || !h.fin || h.op != tc.op || h.masked != tc.masked || h.length != 5 {
			t.Fatalf("%s: parse = %+v, %d, %v", tc.name, h, n, err)
		}
		payload := bytes.Clone(wire[n:])
		if h.masked {
			if h.key != key {
				t.Fatalf("%s: key % x", tc.name, h.key)
			}
			maskBytes(h.key, 0, payload)
		}
		if hex.EncodeToString(payload) != tc.payload {
			t.Errorf("%s: payload %x", tc.name, payload)
		}
		var k *[4]byte
		if tc.masked {
			k = &key
		}
		built := appendFrameHeader(nil, tc.op, 5, k)
		body := unhex(t, tc.payload)
		if tc.masked {
			maskBytes(key, 0, body)
		}
		if built = append(built, body...); !bytes.Equal(built, wire) {
			t.Errorf("%s: built % x, want % x", tc.name, built, wire)
		}
	}
	// 256 bytes and 64 KiB: the 16- and 64-bit length forms.
	for _, tc := range []struct {
		length int
		wire   string
	}{{256, "82 7e 0100"}, {65536, "82 7f 0000000000010000"}} {
		if got := appendFrameHeader(nil, opBinary, tc.length, nil); !bytes.Equal(got, unhex(t, tc.wire)) {
			t.Errorf("header of %d bytes = % x, want %s", tc.length, got, tc.wire)
		}
		h, n, err := parseFrameHeader(unhex(t, tc.wire))
		if err != nil || h.length != int64(tc.length) || n != len(unhex(t, tc.wire)) {
			t.Errorf("parse %s = %+v, %d, %v", tc.wire, h, n, err)
		}
	}
}

// TestFrameHeaderRoundTrip: every length form, masked and not, parses back;
// every truncated prefix asks for more.
func TestFrameHeaderRoundTrip(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, length := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 40} {
		for _, k := range []*[4]byte{nil, &key} {
			wire := appendFrameHeader(nil, opBinary, length, k)
			h, n, err := parseFrameHeader(wire)
			if err != nil || n != len(wire) || h.length != int64(length) || h.masked != (k != nil) || h.op != opBinary || !h.fin {
				t.Fatalf("length %d masked %v: %+v, %d, %v", length, k != nil, h, n, err)
			}
			if k != nil && h.key != key {
				t.Fatalf("key % x", h.key)
			}
			for i := range len(wire) {
				if _, _, err := parseFrameHeader(wire[:i]); err != errNeedMore {
					t.Fatalf("length %d: prefix of %d bytes: %v, want errNeedMore", length, i, err)
				}
			}
		}
	}
}

// TestFrameHeaderLongerForms: a length in a longer form than it needs is
// read, as gorilla/websocket reads it.
func TestFrameHeaderLongerForms(t *testing.T) {
	for wire, want := range map[string]int64{"82 7e 007d": 125, "82 7f 000000000000ffff": 65535, "82 ff 0000000000002000 00000000": 8192} {
		if h, _, err := parseFrameHeader(unhex(t, wire)); err != nil || h.length != want {
			t.Errorf("%s: %+v, %v; want length %d", wire, h, err, want)
		}
	}
}

func TestFrameHeaderRefused(t *testing.T) {
	for _, tc := range []struct{ name, wire string }{
		{"RSV1", "c2 00"},
		{"RSV3", "92 00"},
		{"reserved data opcode", "83 00"},
		{"reserved control opcode", "8b 00"},
		{"64-bit top bit", "82 7f 8000000000000000"},
		{"fragmented ping", "09 00"},
		{"long close", "88 7e 007e"},
		{"ping of 126", "89 7e 007e"},
	} {
		if _, _, err := parseFrameHeader(unhex(t, tc.wire)); !errors.Is(err, errProtocol) {
			t.Errorf("%s: %v, want errProtocol", tc.name, err)
		}
	}
}

// TestMaskBytes checks masking in place and masking while copying
// against the byte-by-byte definition (RFC 6455 5.3), for every key
// position and for lengths around the block size.
func TestMaskBytes(t *testing.T) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	var lengths []int
	for n := range 40 {
		lengths = append(lengths, n)
	}
	for _, base := range []int{maskBlock, 2 * maskBlock, 32 << 10} {
		for d := -5; d <= 5; d++ {
			lengths = append(lengths, base+d)
		}
	}
	for pos := range 4 {
		for _, n := range lengths {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i * 13)
			}
			want := bytes.Clone(src)
			for i := range want {
				want[i] ^= key[(pos+i)%4]
			}
			dst := make([]byte, n+3)
			copy(dst[n:], "end")
			if end := maskCopy(dst, src, key, pos); end != (pos+n)%4 || !bytes.Equal(dst[:n], want) || string(dst[n:]) != "end" {
				t.Fatalf("maskCopy pos %d n %d: end %d, wrong bytes or past n", pos, n, end)
			}
			b := bytes.Clone(src)
			if end := maskBytes(key, pos, b); end != (pos+n)%4 || !bytes.Equal(b, want) {
				t.Fatalf("maskBytes pos %d n %d: end %d, wrong bytes", pos, n, end)
			}
		}
	}
}

// pipeConn is a net.Conn reading from a fixed input and recording writes.
type pipeConn struct {
	net.Conn // nil: only what is defined here is used
	in       io.Reader
	out      bytes.Buffer
}

func (p *pipeConn) Read(b []byte) (int, error)       { return p.in.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error)      { return p.out.Write(b) }
func (p *pipeConn) Close() error                     { return nil }
func (p *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (p *pipeConn) SetWriteDeadline(time.Time) error { return nil }
func (p *pipeConn) SetDeadline(time.Time) error      { return nil }

// TestReadFrames: a server conn reads a fragmented binary message with a
// ping between its frames, answers the ping with a pong, returns the data
// across the frames, and a close frame ends it with io.EOF.
func TestReadFrames(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	var in []byte
	masked := func(op byte, fin bool, payload string) {
		h := appendFrameHeader(nil, op, len(payload), &key)
		if !fin {
			h[0] &^= finBit
		}
		p := []byte(payload)
		maskBytes(key, 0, p)
		in = append(append(in, h...), p...)
	}
	masked(opBinary, false, "hello, ")
	masked(opPing, true, "are you there")
	masked(opContinuation, false, "")
	masked(opContinuation, true, "world")
	masked(opClose, true, "\x03\xe8") // 1000
	pc := &pipeConn{in: bytes.NewReader(in)}
	c := newConn(pc, nil, false, nil, nil)
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello, world" {
		t.Fatalf("read %q, %v", got, err)
	}
	if want := append(appendFrameHeader(nil, opPong, 13, nil), "are you there"...); !bytes.Equal(pc.out.Bytes(), want) {
		t.Fatalf("wrote % x, want the pong % x", pc.out.Bytes(), want)
	}
}

// TestReadRefusals: what a server conn answers broken framing with, and
// what its Read returns.
func TestReadRefusals(t *testing.T) {
	key := [4]byte{1, 1, 1, 1}
	m := func(op byte, payload string) []byte {
		p := []byte(payload)
		maskBytes(key, 0, p)
		return append(appendFrameHeader(nil, op, len(p), &key), p...)
	}
	for _, tc := range []struct {
		name  string
		in    []byte
		err   error  // errors.Is
		close string // hex of the close frame sent, "" for none
	}{
		{"unmasked frame from a client", append(appendFrameHeader(nil, opBinary, 2, nil), 'h', 'i'), errProtocol, "8802 03ea"},
		{"text message", m(opText, "hi"), ErrTextMessage, "8816 03eb" + hex.EncodeToString([]byte("binary messages only"))},
		{"continuation first", m(opContinuation, "x"), errProtocol, "8802 03ea"},
		{"close of one byte", m(opClose, "\x03"), errProtocol, "8802 03ea"},
		{"close with code 1011", m(opClose, "\x03\xf3oops"), nil, ""},
		{"close without a code", m(opClose, ""), io.EOF, ""},
		{"connection cut in a header", []byte{0x82}, io.ErrUnexpectedEOF, ""},
		{"connection cut in a payload", m(opBinary, "abc")[:8], io.ErrUnexpectedEOF, ""},
	} {
		pc := &pipeConn{in: bytes.NewReader(tc.in)}
		c := newConn(pc, nil, false, nil, nil)
		_, err := io.ReadAll(c)
		if tc.name == "close with code 1011" {
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != 1011 || ce.Text != "oops" {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if tc.err == io.EOF {
			if err != nil {
				t.Errorf("%s: ReadAll = %v, want a clean end", tc.name, err)
			}
		} else if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if got := hex.EncodeToString(pc.out.Bytes()); got != strings.ReplaceAll(tc.close, " ", "") {
			t.Errorf("%s: sent %s, want %s", tc.name, got, tc.close)
		}
	}
}

// TestClientRefusesMaskedFrames: a server must not mask.
func TestClientRefusesMaskedFrames(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	pc := &pipeConn{in: bytes.NewReader(append(appendFrameHeader(nil, opBinary, 1, &key), 'x'))}
	c := newConn(pc, nil, true, nil, nil)
	if _, err := c.Read(make([]byte, 4)); !errors.Is(err, errProtocol) {
		t.Fatalf("Read = %v, want errProtocol", err)
	}
}

// TestWriteFrames: a client Write is one masked frame per maxMessage, each
// in one write of the connection, and reads back through a server conn.
func TestWriteFrames(t *testing.T) {
	pc := &pipeConn{in: bytes.NewReader(nil)}
	c := newConn(pc, nil, true, nil, nil)
	data := bytes.Repeat([]byte("0123456789"), 7000) // 70,000 bytes: three frames
	if n, err := c.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	out := pc.out.Bytes()
	h, n, err := parseFrameHeader(out)
	if err != nil || !h.masked || h.length != maxMessage || !h.fin || h.op != opBinary {
		t.Fatalf("first frame %+v, %d, %v", h, n, err)
	}
	s := newConn(&pipeConn{in: bytes.NewReader(out)}, nil, false, nil, nil)
	got, err := io.ReadAll(s)
	if !bytes.Equal(got, data) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read back %d bytes (equal %v), %v; want all, then the cut", len(got), bytes.Equal(got, data), err)
	}
}

// FuzzReadFrames: a server conn fed any bytes never panics or hangs, and
// returns what it reads without more bytes than were sent.
func FuzzReadFrames(f *testing.F) {
	key := [4]byte{5, 6, 7, 8}
	frame := func(op byte, payload string) []byte {
		p := []byte(payload)
		maskBytes(key, 0, p)
		return append(appendFrameHeader(nil, op, len(p), &key), p...)
	}
	f.Add(frame(opBinary, "hello"))
	f.Add(append(frame(opPing, "p"), frame(opBinary, "x")...))
	f.Add(frame(opClose, "\x03\xe8bye"))
	f.Add(appendFrameHeader(nil, opBinary, 70000, &key))
	f.Fuzz(func(t *testing.T, in []byte) {
		pc := &pipeConn{in: bytes.NewReader(in)}
		c := newConn(pc, nil, false, nil, nil)
		got, _ := io.ReadAll(c)
		if len(got) > len(in) {
			t.Fatalf("read %d bytes from %d", len(got), len(in))
		}
	})
}
