package anytlsclient

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
)

// These tests record the plaintext writes the client gives its TLS conn
// (a RecordingConn around the tls.Conn: one entry per TLS write) and check
// them against the padding scheme with a checker of their own, not with
// the planner.

// packetsOnWire cuts writes (after write #0, the authentication) into
// packets, given each packet's payload size. Within a packet, a record's
// first bytes are payload while some remains; whatever follows must be
// exactly one cmdWaste frame (command 0, stream 0, zeros). Records that
// start with cmdWaste once the payload is all sent belong to the same
// packet. It returns each packet's record sizes and the payload bytes,
// which must be the session's frames.
func packetsOnWire(t *testing.T, writes [][]byte, payloads []int) (sizes [][]int, stream []byte) {
	t.Helper()
	i := 0
	for k, p := range payloads {
		var recs []int
		rem := p
		for i < len(writes) && (rem > 0 || (len(recs) > 0 && writes[i][0] == 0)) {
			w := writes[i]
			i++
			n := min(len(w), rem)
			stream = append(stream, w[:n]...)
			rem -= n
			if tail := w[n:]; len(tail) > 0 {
				want := append([]byte{0, 0, 0, 0, 0, byte((len(tail) - 7) >> 8), byte(len(tail) - 7)}, make([]byte, max(len(tail)-7, 0))...)
				if !bytes.Equal(tail, want) {
					t.Fatalf("packet %d: record of %d bytes: the %d bytes after the payload are not one cmdWaste frame: %x", k+1, len(w), len(tail), tail[:min(len(tail), 16)])
				}
			}
			recs = append(recs, len(w))
		}
		if rem > 0 {
			t.Fatalf("packet %d: %d of %d payload bytes never written", k+1, rem, p)
		}
		sizes = append(sizes, recs)
	}
	if i != len(writes) {
		t.Fatalf("%d writes left after %d packets", len(writes)-i, len(payloads))
	}
	return sizes, stream
}

// followsScheme checks one packet's record sizes against the scheme's
// list for it, the spec's way: records of the drawn sizes while payload
// remains (the last one filled up with cmdWaste, unless there is no room
// for its 7-byte header), "c" ending the packet once the payload is sent,
// pure cmdWaste records (data of the drawn size) after that, and the rest
// of the payload in one record after the list.
func followsScheme(sch *anytls.Scheme, pkt uint32, payload int, sizes []int) error {
	in := func(st anytls.Step, n int) bool { return n == st.Min || (n > st.Min && n < st.Max) }
	rem, i := payload, 0
	if pkt < sch.Stop() {
		for _, st := range sch.Steps(pkt) {
			if st.Check {
				if rem == 0 {
					break
				}
				continue
			}
			if st.Max == 0 && rem > 0 {
				continue
			}
			if i >= len(sizes) {
				return fmt.Errorf("packet %d: %d records, but step %+v expects another", pkt, len(sizes), st)
			}
			n := sizes[i]
			i++
			switch {
			case rem == 0: // pure padding
				if !in(st, n-7) {
					return fmt.Errorf("packet %d: padding record %d: data %d outside %d-%d", pkt, i, n-7, st.Min, st.Max)
				}
			case n < rem: // all payload
				if !in(st, n) {
					return fmt.Errorf("packet %d: record %d of %d bytes outside %d-%d", pkt, i, n, st.Min, st.Max)
				}
				rem -= n
			case n > rem: // the last payload, filled up to the drawn size
				if !in(st, n) || n-rem <= 7 {
					return fmt.Errorf("packet %d: last record %d of %d bytes (payload %d) outside %d-%d", pkt, i, n, rem, st.Min, st.Max)
				}
				rem = 0
			default: // the last payload, no room for a waste frame
				if n < st.Min-7 || n > max(st.Min, st.Max-1) {
					return fmt.Errorf("packet %d: last record %d of %d bytes does not fit %d-%d", pkt, i, n, st.Min, st.Max)
				}
				rem = 0
			}
		}
	}
	if rem > 0 {
		if i != len(sizes)-1 || sizes[i] != rem {
			return fmt.Errorf("packet %d: rest %d not one record: %v", pkt, rem, sizes)
		}
		return nil
	}
	if i != len(sizes) {
		return fmt.Errorf("packet %d: records %v after the list", pkt, sizes[i:])
	}
	return nil
}

// frame is a session frame, built by hand.
func frame(cmd byte, stream uint32, data []byte) []byte {
	return append(anytlstest.Frame(cmd, stream, ""), data...)
}

func withLen(b []byte) []byte {
	b[5], b[6] = byte((len(b)-7)>>8), byte(len(b)-7)
	return b
}

// wireSession dials a stream on a fresh session of c, makes the given
// writes (packets 2, 3, …), waits for the echo of each, and returns the
// session's recorded writes and the expected frame stream.
func wireSession(t *testing.T, c *Client, e *e2e, rec *[]*anytlstest.RecordingConn, scheme *anytls.Scheme, stream uint32, writes []int) ([][]byte, []int, []byte) {
	t.Helper()
	before := len(*rec)
	conn := dial(t, c, e.echo)
	t.Cleanup(func() { conn.Close() })
	if len(*rec) != before+1 {
		t.Fatalf("the stream did not open a new session")
	}
	rc := (*rec)[before]
	ap, _ := e.echo.AddrPort()
	ip := ap.Addr().As4()
	addr := []byte{1, ip[0], ip[1], ip[2], ip[3], byte(ap.Port() >> 8), byte(ap.Port())}
	settings := "v=2\nclient=portico/anytls\npadding-md5=" + scheme.MD5()
	want := withLen(frame(4, 0, []byte(settings)))
	want = append(want, withLen(frame(1, stream, nil))...)
	want = append(want, withLen(frame(2, stream, addr))...)
	payloads := []int{len(want)}
	for i, n := range writes {
		data := bytes.Repeat([]byte{byte('a' + i)}, n)
		if _, err := conn.Write(data); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("echo of write %d: %v", i, err)
		}
		want = append(want, withLen(frame(2, stream, data))...)
		payloads = append(payloads, 7+n)
	}
	return rc.Writes(), payloads, want
}

func authLen(t *testing.T, w []byte, padding int) {
	t.Helper()
	if len(w) != 34+padding || w[32] != byte(padding>>8) || w[33] != byte(padding) {
		t.Fatalf("write #0 is %d bytes (%x…), want the authentication with padding0 %d", len(w), w[:min(len(w), 36)], padding)
	}
}

// TestPaddingOnTheWire: with the default scheme and real randomness, for
// small, large and mixed payloads, packets 1..7 follow the scheme and
// packet 8 on goes out as it is.
func TestPaddingOnTheWire(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	var recs []*anytlstest.RecordingConn
	e.carrier.Record = func(rc *anytlstest.RecordingConn) { recs = append(recs, rc) }
	sch := anytls.DefaultScheme()
	cases := map[string][]int{
		"small": {100, 100, 100, 100, 100, 100, 100},
		"large": {3000, 4000, 2500, 1200, 9000, 40000, 20000},
		"mixed": {1, 390, 2, 600, 993, 5, 65535, 1},
	}
	for name, writes := range cases {
		t.Run(name, func(t *testing.T) {
			c := e.client(t, Options{}) // a new Client: a fresh session
			all, payloads, want := wireSession(t, c, e, &recs, sch, 1, writes)
			authLen(t, all[0], 30)
			sizes, stream := packetsOnWire(t, all[1:], payloads)
			if !bytes.Equal(stream, want) {
				t.Fatalf("the payload of the records is not the session's frames")
			}
			for k, s := range sizes {
				pkt := uint32(k + 1)
				if err := followsScheme(sch, pkt, payloads[k], s); err != nil {
					t.Errorf("%v (records %v)", err, s)
				}
				if pkt >= sch.Stop() && len(s) != 1 {
					t.Errorf("packet %d past stop sent as %v", pkt, s)
				}
			}
			t.Logf("records per packet: %v", sizes)
		})
	}
}

// TestPaddingExact: drawing every range's minimum (a zero random source),
// the record sizes are known to the byte, including a "c" that ends a
// packet exactly at a record's end, pure padding records of size+7, and a
// last record with no room for a waste frame.
func TestPaddingExact(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{}, nil)
	var recs []*anytlstest.RecordingConn
	e.carrier.Record = func(rc *anytlstest.RecordingConn) { recs = append(recs, rc) }
	c := e.client(t, Options{Rand: zeroReader{}})
	all, payloads, want := wireSession(t, c, e, &recs, anytls.DefaultScheme(), 1, []int{393, 2, 394, 1000, 10, 10, 10})
	authLen(t, all[0], 30)
	sizes, stream := packetsOnWire(t, all[1:], payloads)
	if !bytes.Equal(stream, want) {
		t.Fatal("the payload of the records is not the session's frames")
	}
	wantSizes := [][]int{
		{payloads[0]}, // 1=100-400 draws 100; 98 bytes leave no room for a 7-byte waste header
		{400},         // 2=400-500,c,…: 400 payload bytes fill the first record, then c ends it
		{9, 507},      // 3=9-9,500-1000: 9 bytes, then pure padding: 500 data bytes + 7
		{500},         // 4=500-1000: 401 bytes + a waste frame of 92
		{500, 507},    // 5: 1007 bytes: a full record, then the rest as it is
		{500},         // 6
		{500},         // 7
		{17},          // 8: past stop=8, as it is
	}
	if payloads[0] != 98 {
		t.Fatalf("packet 1 is %d bytes; the expectations assume 98", payloads[0])
	}
	if !slices.EqualFunc(sizes, wantSizes, slices.Equal) {
		t.Errorf("records %v\nwant    %v", sizes, wantSizes)
	}
}

// TestPushedSchemeOnTheWire: the server pushes its scheme; the client's
// next session uses it from write #0 (padding0 of 10) and advertises its
// MD5, so the server pushes nothing more.
func TestPushedSchemeOnTheWire(t *testing.T) {
	const text = "stop=5\n0=10-10\n1=50-50\n2=100-100,c,200-200\n3=30-30,40-40\n4=0-0,20-20"
	custom, err := anytls.ParseScheme([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum([]byte(text))
	if custom.MD5() != hex.EncodeToString(sum[:]) {
		t.Fatal("md5")
	}
	e := newE2E(t, anytlsserver.Options{PaddingScheme: text}, nil)
	var recs []*anytlstest.RecordingConn
	e.carrier.Record = func(rc *anytlstest.RecordingConn) { recs = append(recs, rc) }
	c := e.client(t, Options{Rand: zeroReader{}})
	first := dial(t, c, e.echo) // session 1: default scheme; the push arrives
	defer first.Close()
	anytlstest.Eventually(t, 5*time.Second, "scheme pushed", func() bool { return c.PaddingScheme().MD5() == custom.MD5() })
	// first stays open, so the next stream needs session 2.
	all, payloads, want := wireSession(t, c, e, &recs, custom, 1, []int{93, 3, 50, 10})
	authLen(t, all[0], 10)
	sizes, stream := packetsOnWire(t, all[1:], payloads)
	if !bytes.Equal(stream, want) {
		t.Fatal("the payload of the records is not the session's frames")
	}
	wantSizes := [][]int{
		{50, payloads[0] - 50}, // 1=50-50: 50, then the rest
		{100},                  // 2=100-100,c: exactly 100, c ends it
		{30, 47},               // 3=30-30,40-40: 10 bytes + waste to 30, then pure padding 40+7
		{20, 37},               // 4=0-0,20-20: the empty range writes nothing; 20, then the rest
		{17},                   // 5: past stop
	}
	if !slices.EqualFunc(sizes, wantSizes, slices.Equal) {
		t.Errorf("records %v\nwant    %v", sizes, wantSizes)
	}
	for k, s := range sizes {
		if err := followsScheme(custom, uint32(k+1), payloads[k], s); err != nil {
			t.Error(err)
		}
	}
}

// TestUnshapedAfterStop: after stop, a write is one TLS write however
// small.
func TestUnshapedAfterStop(t *testing.T) {
	e := newE2E(t, anytlsserver.Options{PaddingScheme: "stop=2\n0=0-0\n1=300-300"}, nil)
	var recs []*anytlstest.RecordingConn
	e.carrier.Record = func(rc *anytlstest.RecordingConn) { recs = append(recs, rc) }
	c := e.client(t, Options{})
	first := dial(t, c, e.echo)
	defer first.Close()
	anytlstest.Eventually(t, 5*time.Second, "scheme pushed", func() bool { return c.PaddingScheme().Stop() == 2 })
	all, payloads, _ := wireSession(t, c, e, &recs, c.PaddingScheme(), 1, []int{1, 2, 3})
	authLen(t, all[0], 0)
	sizes, _ := packetsOnWire(t, all[1:], payloads)
	if want := [][]int{{300}, {8}, {9}, {10}}; !slices.EqualFunc(sizes, want, slices.Equal) {
		t.Errorf("records %v, want %v", sizes, want)
	}
}

var _ net.Conn = (*anytlstest.RecordingConn)(nil)
