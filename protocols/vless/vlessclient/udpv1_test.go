package vlessclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
)

// loopCarrier dials a loopback TCP listener (the "server" the test
// scripts) and records the size of every carrier write, so that tests can
// check where one write ends.
type loopCarrier struct {
	ln net.Listener

	mu     sync.Mutex
	writes map[net.Conn][]int
	dials  int
}

func newLoopCarrier(t *testing.T) *loopCarrier {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &loopCarrier{ln: ln, writes: make(map[net.Conn][]int)}
}

type recConn struct {
	net.Conn
	lc *loopCarrier
}

func (r *recConn) Write(p []byte) (int, error) {
	r.lc.mu.Lock()
	r.lc.writes[r] = append(r.lc.writes[r], len(p))
	r.lc.mu.Unlock()
	return r.Conn.Write(p)
}

func (l *loopCarrier) DialConn(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", l.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.dials++
	l.mu.Unlock()
	return &recConn{Conn: c, lc: l}, nil
}

func (l *loopCarrier) Dials() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dials
}

// accept returns the server side of the next carrier, with a deadline.
func (l *loopCarrier) accept(t *testing.T) net.Conn {
	t.Helper()
	l.ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := l.ln.Accept()
	if err != nil {
		t.Fatalf("no carrier connection: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// expect reads exactly len(want) bytes from c and compares.
func expect(t *testing.T, c net.Conn, what string, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("%s: read %x: %v", what, got, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: client sent\n%x\nwant\n%x", what, got, want)
	}
}

func udpClient(t *testing.T, lc *loopCarrier, opts vlessclient.Options, randHex string) *vlessclient.Client {
	t.Helper()
	opts.ID, opts.Version, opts.Secure, opts.Carrier = id, 1, true, lc
	opts.PadRand = bytes.NewReader(unhex(randHex))
	c, err := vlessclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addr(s string) protocols.Addr {
	a, err := protocols.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

type readResult struct {
	payload string
	from    protocols.Addr
	err     error
}

func readOne(t *testing.T, pc tunnel.PacketConn) readResult {
	t.Helper()
	ch := make(chan readResult, 1)
	go func() {
		buf := make([]byte, 65535)
		n, from, err := pc.ReadPacket(buf)
		ch <- readResult{string(buf[:n]), from, err}
	}()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("ReadPacket still blocked after 5s")
		return readResult{}
	}
}

// The association id every udp_multi test draws from PadRand.
const assocHex = "0102030405060708"

// TestV1UDPMultiBytes: the client's udp_multi bytes, hand-written from
// section 9.2: header with list (udp_multi, association) ‖ length ‖
// payload; a flag-1 reply from R comes out as from R; answering R opens a
// second carrier with the same association id; a flag-0 reply is from the
// tunnel's remote; a bad flag ends only that tunnel.
func TestV1UDPMultiBytes(t *testing.T) {
	lc := newLoopCarrier(t)
	c := udpClient(t, lc, vlessclient.Options{}, assocHex)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pc, err := c.DialPacket(ctx, addr("8.8.8.8:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.WritePacket([]byte("hello"), addr("8.8.8.8:53")); err != nil {
		t.Fatal(err)
	}
	s1 := lc.accept(t)
	expect(t, s1, "first tunnel", unhex("01"+uuidHex+"02 02 01 13"+assocHex+"02 0035 01 08080808"+"0005 68656c6c6f"))

	s1.Write(unhex("01 0d96 01 09090909 0004 706f6e67")) // flag 1: "pong" from 9.9.9.9:3478
	if r := readOne(t, pc); r.err != nil || r.payload != "pong" || r.from != addr("9.9.9.9:3478") {
		t.Fatalf("flag-1 reply: %+v", r)
	}
	s1.Write(unhex("00 0002 6869")) // flag 0: "hi" from the remote
	if r := readOne(t, pc); r.err != nil || r.payload != "hi" || r.from != addr("8.8.8.8:53") {
		t.Fatalf("flag-0 reply: %+v", r)
	}

	if err := pc.WritePacket([]byte("re"), addr("9.9.9.9:3478")); err != nil {
		t.Fatal(err)
	}
	s2 := lc.accept(t)
	expect(t, s2, "second tunnel", unhex("01"+uuidHex+"02 02 01 13"+assocHex+"02 0d96 01 09090909"+"0002 7265"))
	if err := pc.WritePacket([]byte("abc"), addr("8.8.8.8:53")); err != nil {
		t.Fatal(err)
	}
	expect(t, s1, "first tunnel again, no header", unhex("0003 616263"))
	if lc.Dials() != 2 || vlessclient.UDPTunnels(pc) != 2 {
		t.Fatalf("%d dials, %d tunnels; want 2, 2", lc.Dials(), vlessclient.UDPTunnels(pc))
	}

	s2.Write(unhex("02 0001 78")) // flag 2: invalid; the client ends this tunnel
	if _, err := s2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after a bad flag the tunnel's carrier read %v; want EOF (closed)", err)
	}
	waitFor(t, func() bool { return vlessclient.UDPTunnels(pc) == 1 })
	if err := pc.WritePacket([]byte("again"), addr("9.9.9.9:3478")); err != nil {
		t.Fatal(err)
	}
	s3 := lc.accept(t)
	expect(t, s3, "reopened tunnel", unhex("01"+uuidHex+"02 02 01 13"+assocHex+"02 0d96 01 09090909"+"0005 616761696e"))
	s1.Write(unhex("00 0001 7a"))
	if r := readOne(t, pc); r.err != nil || r.payload != "z" || r.from != addr("8.8.8.8:53") {
		t.Fatalf("the first tunnel stopped delivering: %+v", r)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestV1UDPMultiDomain: replies on a tunnel to a domain with flag 0 come
// from that domain; an empty datagram is delivered.
func TestV1UDPMultiDomain(t *testing.T) {
	lc := newLoopCarrier(t)
	c := udpClient(t, lc, vlessclient.Options{}, assocHex)
	pc, err := c.DialPacket(context.Background(), addr("example.com:443"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.WritePacket(nil, addr("example.com:443"))
	s := lc.accept(t)
	expect(t, s, "header", unhex("01"+uuidHex+"02 02 01 13"+assocHex+"02 01bb 02 0b 6578616d706c652e636f6d 0000"))
	s.Write(unhex("00 0000"))
	if r := readOne(t, pc); r.err != nil || r.payload != "" || r.from != addr("example.com:443") {
		t.Fatalf("reply %+v", r)
	}
}

// TestV1UDPClassicBytes: classic mode (section 9.1): one carrier, the
// header with no addon then a frame with its address, in one write; later
// frames to any address on the same carrier; replies carry their source.
func TestV1UDPClassicBytes(t *testing.T) {
	lc := newLoopCarrier(t)
	c := udpClient(t, lc, vlessclient.Options{UDPClassic: true}, "")
	pc, err := c.DialPacket(context.Background(), addr("1.2.3.4:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.WritePacket([]byte("hello"), addr("1.2.3.4:53")); err != nil {
		t.Fatal(err)
	}
	if err := pc.WritePacket([]byte("hi"), addr("example.com:443")); err != nil {
		t.Fatal(err)
	}
	s := lc.accept(t)
	first := unhex("01" + uuidHex + "00 02 0035 01 01020304" + "0035 01 01020304 0005 68656c6c6f")
	expect(t, s, "header and first frame", first)
	expect(t, s, "second frame", unhex("01bb 02 0b 6578616d706c652e636f6d 0002 6869"))
	s.Write(unhex("0d96 01 09090909 0004 706f6e67"))
	if r := readOne(t, pc); r.err != nil || r.payload != "pong" || r.from != addr("9.9.9.9:3478") {
		t.Fatalf("reply %+v", r)
	}
	if lc.Dials() != 1 {
		t.Errorf("%d dials; a classic association has one carrier", lc.Dials())
	}
	if w := lc.sizes(); len(w) != 1 || len(w[0]) != 2 || w[0][0] != len(first) {
		t.Errorf("carrier writes %v; want the header and the first frame in one", w)
	}
	// A cut frame ends the association with io.ErrUnexpectedEOF.
	s.Write(unhex("0035 01 0102"))
	s.Close()
	if r := readOne(t, pc); !errors.Is(r.err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut frame: %+v", r)
	}
}

func (l *loopCarrier) sizes() [][]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]int
	for _, w := range l.writes {
		out = append(out, append([]int(nil), w...))
	}
	return out
}

// TestV1UDPPadding: the first write is PadTo bytes exactly: header,
// padding and frame when it fits; header and padding, then the frame,
// when it does not.
func TestV1UDPPadding(t *testing.T) {
	const padTo = 300
	// Header: 1+16 + (02 03 01 12 LLLL 13 +8 = 15) + 1 + 2+1+4 = 40 bytes.
	for _, tt := range []struct {
		name    string
		payload []byte
		padLen  string
		split   bool
	}{
		{"fits", []byte("hello"), "00fd", false},                  // 300-40-7 = 253
		{"exactly", bytes.Repeat([]byte{7}, 258), "0000", false},  // 40+0+2+258 = 300
		{"too long", bytes.Repeat([]byte{7}, 1000), "0104", true}, // 300-40 = 260
	} {
		t.Run(tt.name, func(t *testing.T) {
			lc := newLoopCarrier(t)
			c := udpClient(t, lc, vlessclient.Options{PadMin: padTo, PadMax: padTo}, "0000000000000000"+assocHex)
			pc, err := c.DialPacket(context.Background(), addr("8.8.8.8:53"))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if err := pc.WritePacket(tt.payload, addr("8.8.8.8:53")); err != nil {
				t.Fatal(err)
			}
			s := lc.accept(t)
			hdr := unhex("01" + uuidHex + "02 03 01 12" + tt.padLen + "13" + assocHex + "02 0035 01 08080808")
			pad := padTo - len(hdr)
			if !tt.split {
				pad -= 2 + len(tt.payload)
			}
			want := append(append(hdr, make([]byte, pad)...), 0, 0)
			want[len(want)-2], want[len(want)-1] = byte(len(tt.payload)>>8), byte(len(tt.payload))
			want = append(want, tt.payload...)
			expect(t, s, "padded first write", want)
			w := lc.sizes()
			wantSizes := []int{padTo}
			if tt.split {
				wantSizes = []int{padTo, 2 + len(tt.payload)}
			}
			if len(w) != 1 || len(w[0]) != len(wantSizes) || w[0][0] != wantSizes[0] {
				t.Errorf("carrier writes %v; want %v", w, wantSizes)
			}
		})
	}
}

// TestV1UDPLRU: with MaxUDPTunnels 2, a third remote closes the tunnel used
// least recently; sending to its remote again opens a new one.
func TestV1UDPLRU(t *testing.T) {
	lc := newLoopCarrier(t)
	c := udpClient(t, lc, vlessclient.Options{MaxUDPTunnels: 2}, assocHex)
	a, b, cc := addr("10.0.0.1:1"), addr("10.0.0.2:2"), addr("10.0.0.3:3")
	pc, err := c.DialPacket(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	send := func(to protocols.Addr) {
		t.Helper()
		if err := pc.WritePacket([]byte("x"), to); err != nil {
			t.Fatal(err)
		}
	}
	send(a)
	sa := lc.accept(t)
	send(b)
	sb := lc.accept(t)
	send(a) // a is now more recent than b
	send(cc)
	sc := lc.accept(t)
	if n := vlessclient.UDPTunnels(pc); n != 2 {
		t.Fatalf("%d tunnels, want 2", n)
	}
	hdrLen := len(unhex("01" + uuidHex + "02 02 01 13" + assocHex + "02 0001 01 0a000001"))
	for _, s := range []net.Conn{sa, sb, sc} {
		io.ReadFull(s, make([]byte, hdrLen+3))
	}
	if _, err := sb.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("least recently used tunnel (b): read %v; want EOF (closed)", err)
	}
	expect(t, sa, "a kept", unhex("0001 78"))
	send(cc)
	expect(t, sc, "c kept", unhex("0001 78"))
	send(b)
	sb2 := lc.accept(t)
	expect(t, sb2, "b reopened", unhex("01"+uuidHex+"02 02 01 13"+assocHex+"02 0002 01 0a000002 0001 78"))
	if lc.Dials() != 4 {
		t.Errorf("%d dials, want 4", lc.Dials())
	}
}

// TestV1UDPClose: Close unblocks a pending ReadPacket and closes every
// tunnel; later writes fail.
func TestV1UDPClose(t *testing.T) {
	for _, classic := range []bool{false, true} {
		t.Run(map[bool]string{false: "udp_multi", true: "classic"}[classic], func(t *testing.T) {
			lc := newLoopCarrier(t)
			c := udpClient(t, lc, vlessclient.Options{UDPClassic: classic}, assocHex)
			pc, err := c.DialPacket(context.Background(), addr("10.0.0.1:1"))
			if err != nil {
				t.Fatal(err)
			}
			pc.WritePacket([]byte("x"), addr("10.0.0.1:1"))
			s := lc.accept(t)
			got := make(chan error, 1)
			go func() {
				_, _, err := pc.ReadPacket(make([]byte, 10))
				got <- err
			}()
			time.Sleep(20 * time.Millisecond)
			pc.Close()
			select {
			case err := <-got:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("ReadPacket after Close = %v; want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("ReadPacket still blocked 5s after Close")
			}
			io.ReadAll(s) // the header and frame, then EOF: closed
			if err := pc.WritePacket([]byte("y"), addr("10.0.0.1:1")); err == nil {
				t.Error("WritePacket after Close succeeded")
			}
		})
	}
}

// TestV1UDPOptions: the new options need Version 1 and a sane bound.
func TestV1UDPOptions(t *testing.T) {
	carrier := &seqCarrier{}
	for _, o := range []vlessclient.Options{
		{ID: id, Carrier: carrier, UDPClassic: true},
		{ID: id, Carrier: carrier, MaxUDPTunnels: 3},
		{ID: id, Carrier: carrier, Version: 1, Secure: true, MaxUDPTunnels: -1},
	} {
		if _, err := vlessclient.New(o); !errors.Is(err, vlessclient.ErrOptions) ||
			!strings.Contains(err.Error(), "UDP") && !strings.Contains(err.Error(), "MaxUDPTunnels") {
			t.Errorf("New(%+v) = %v; want ErrOptions naming the UDP option", o, err)
		}
	}
	// An association id that cannot be drawn fails DialPacket, before a dial.
	lc := newLoopCarrier(t)
	c := udpClient(t, lc, vlessclient.Options{}, "0102")
	if _, err := c.DialPacket(context.Background(), addr("1.1.1.1:53")); err == nil || lc.Dials() != 0 {
		t.Errorf("DialPacket with a short PadRand: %v, %d dials", err, lc.Dials())
	}
	// A payload over 65535 bytes is refused without opening anything.
	c = udpClient(t, lc, vlessclient.Options{}, assocHex)
	pc, err := c.DialPacket(context.Background(), addr("1.1.1.1:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.WritePacket(make([]byte, 65536), addr("2.2.2.2:53")); !errors.Is(err, vless.ErrPacketTooLong) || lc.Dials() != 1 {
		t.Errorf("oversized datagram: %v, %d dials", err, lc.Dials())
	}
}
