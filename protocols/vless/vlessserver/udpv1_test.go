package vlessserver_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// packetHandler is a tunnel.Handler for UDP tests: it records each request
// and whether its PacketConn is a tunnel.MultiSource, then runs f (or, with
// f nil, echoes every datagram back from its destination until ReadPacket
// fails, and returns that failure unless it is io.EOF).
type packetHandler struct {
	f func(pc tunnel.PacketConn, req tunnel.Request) error

	mu    sync.Mutex
	reqs  []tunnel.Request
	multi []bool
}

func (h *packetHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	conn.Close()
	return errors.New("streams not expected")
}

func (h *packetHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	defer pc.Close()
	ms, ok := pc.(tunnel.MultiSource)
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.multi = append(h.multi, ok && ms.MultiSource())
	h.mu.Unlock()
	if h.f != nil {
		return h.f(pc, req)
	}
	return echoPackets(pc, nil)
}

// echoPackets echoes every datagram back from its destination, and then,
// for each, from the extra sources, until ReadPacket fails.
func echoPackets(pc tunnel.PacketConn, extra []protocols.Addr) error {
	buf := make([]byte, 65535)
	for {
		n, dst, err := pc.ReadPacket(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		for _, from := range append([]protocols.Addr{dst}, extra...) {
			if err := pc.WritePacket(buf[:n], from); err != nil {
				return err
			}
		}
	}
}

func (h *packetHandler) requests() ([]tunnel.Request, []bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.Request(nil), h.reqs...), append([]bool(nil), h.multi...)
}

// serveFake runs ServeConn over a scripted conn with a 5 s guard, so that
// a hang fails the test instead of stalling it.
func serveFake(t *testing.T, h tunnel.Handler, segs ...[]byte) (*vlesstest.FakeConn, error) {
	t.Helper()
	fc := vlesstest.NewFake(segs...)
	done := make(chan error, 1)
	go func() { done <- v1Server(t, vlessserver.Options{Inbound: "in"}).ServeConn(context.Background(), fc, h) }()
	select {
	case err := <-done:
		return fc, err
	case <-time.After(5 * time.Second):
		fc.Close()
		t.Fatal("ServeConn still running 5s after the client's last byte")
		return nil, nil
	}
}

// TestV1UDPClassic: without udp_multi every frame names its address; two
// destinations on one tunnel, the padding skipped, replies framed with
// their source; the tunnel is its own association.
func TestV1UDPClassic(t *testing.T) {
	h := &packetHandler{}
	fc, err := serveFake(t, h,
		unhex("01"+aliceHex+"12 0003 02 0035 01 01020304"+"000000"+ // padding addon, PadLen 3, UDP to 1.2.3.4:53; 3 padding bytes
			"0035 01 01020304 0003 6f6e65"), // frame "one" to 1.2.3.4:53, in the same write
		unhex("01bb 02 0b 6578616d706c652e636f6d 0003 74776f"), // "two" to example.com:443
	)
	if err != nil {
		t.Fatalf("ServeConn = %v", err)
	}
	want := [][]byte{
		unhex("0035 01 01020304 0003 6f6e65"),
		unhex("01bb 02 0b 6578616d706c652e636f6d 0003 74776f"),
	}
	if w := fc.Writes(); !equalWrites(w, want) {
		t.Errorf("carrier writes %x\nwant %x", w, want)
	}
	reqs, multi := h.requests()
	if len(reqs) != 1 || reqs[0].Network != protocols.NetworkUDP || reqs[0].Target.String() != "1.2.3.4:53" ||
		reqs[0].Association != "" || reqs[0].User != "alice@example.com" || reqs[0].Inbound != "in" || !multi[0] {
		t.Errorf("requests %+v, multi-source %v", reqs, multi)
	}
	if !fc.Closed() {
		t.Error("carrier left open after a UDP tunnel")
	}
}

// TestV1UDPMulti: udp_multi frames: the client's length ‖ payload goes to
// the remote; replies from the remote go with flag 0, from elsewhere with
// flag 1 and the source.
func TestV1UDPMulti(t *testing.T) {
	h := &packetHandler{f: func(pc tunnel.PacketConn, req tunnel.Request) error {
		return echoPackets(pc, []protocols.Addr{{IP: mustIP("9.9.9.9"), Port: 3478}, {IP: mustIP("::ffff:1.2.3.4"), Port: 53}})
	}}
	fc, err := serveFake(t, h,
		unhex("01"+aliceHex+"02 02 01 13 0102030405060708 02 0035 01 01020304"+"0005 68656c6c6f"), // udp_multi + association, UDP to 1.2.3.4:53, "hello"
		unhex("0000"), // an empty datagram
	)
	if err != nil {
		t.Fatalf("ServeConn = %v", err)
	}
	want := [][]byte{
		unhex("00 0005 68656c6c6f"),                  // from the remote: flag 0
		unhex("01 0d96 01 09090909 0005 68656c6c6f"), // from 9.9.9.9:3478: flag 1
		unhex("00 0005 68656c6c6f"),                  // from ::ffff:1.2.3.4:53, the remote unmapped: flag 0
		unhex("00 0000"), unhex("01 0d96 01 09090909 0000"), unhex("00 0000"),
	}
	if w := fc.Writes(); !equalWrites(w, want) {
		t.Errorf("carrier writes %x\nwant %x", w, want)
	}
	reqs, multi := h.requests()
	if len(reqs) != 1 || reqs[0].Network != protocols.NetworkUDP || reqs[0].Target.String() != "1.2.3.4:53" || !multi[0] {
		t.Errorf("requests %+v, multi-source %v", reqs, multi)
	}
}

// TestV1UDPMultiDomainRemote: for a domain remote the first reply's source
// becomes the remote (flag 0); later replies from it keep flag 0, others
// get flag 1.
func TestV1UDPMultiDomainRemote(t *testing.T) {
	a, b := protocols.Addr{IP: mustIP("5.6.7.8"), Port: 53}, protocols.Addr{IP: mustIP("5.6.7.9"), Port: 53}
	h := &packetHandler{f: func(pc tunnel.PacketConn, req tunnel.Request) error {
		buf := make([]byte, 100)
		if _, _, err := pc.ReadPacket(buf); err != nil {
			return err
		}
		for _, from := range []protocols.Addr{a, b, a, req.Target} {
			if err := pc.WritePacket([]byte("r"), from); err != nil {
				return err
			}
		}
		return nil
	}}
	fc, err := serveFake(t, h, unhex("01"+aliceHex+"01 02 0035 02 01 64"+"0001 71")) // udp_multi to d:53, "q"
	if err != nil {
		t.Fatalf("ServeConn = %v", err)
	}
	want := [][]byte{unhex("00 0001 72"), unhex("01 0035 01 05060709 0001 72"), unhex("00 0001 72"), unhex("00 0001 72")}
	if w := fc.Writes(); !equalWrites(w, want) {
		t.Errorf("carrier writes %x\nwant %x", w, want)
	}
}

// TestV1UDPAssociation: the association key is the user and the id; equal
// for two tunnels with one id, different across ids and users; without the
// addon (verysimple) the user and the client's IP.
func TestV1UDPAssociation(t *testing.T) {
	key := func(hdrHex string) string {
		t.Helper()
		h := &packetHandler{}
		if _, err := serveFake(t, h, unhex(hdrHex)); err != nil {
			t.Fatal(err)
		}
		reqs, _ := h.requests()
		if len(reqs) != 1 {
			t.Fatalf("%d requests", len(reqs))
		}
		return reqs[0].Association
	}
	const bobHex = "27848739 7e624138 9fd3098a 63964b6b"
	a1 := key("01" + aliceHex + "02 02 01 13 0102030405060708 02 0035 01 01020304")
	a2 := key("01" + aliceHex + "02 02 01 13 0102030405060708 02 01bb 02 01 61") // same id, another remote
	a3 := key("01" + aliceHex + "02 02 01 13 0102030405060709 02 0035 01 01020304")
	b1 := key("01" + bobHex + "02 02 01 13 0102030405060708 02 0035 01 01020304")
	vs := key("01" + aliceHex + "01 02 0035 01 01020304") // verysimple: udp_multi alone
	classic := key("01" + aliceHex + "00 02 0035 01 01020304")
	if want := "vless1\x00" + string(unhex(aliceHex)) + "\x01\x02\x03\x04\x05\x06\x07\x08"; a1 != want {
		t.Errorf("association %q, want %q", a1, want)
	}
	if a1 != a2 || a1 == a3 || a1 == b1 {
		t.Errorf("same id %q / %q, other id %q, other user %q", a1, a2, a3, b1)
	}
	// FakeConn's remote is 192.0.2.7:40000.
	if want := "vless1\x00" + string(unhex(aliceHex)) + "\x00ip\x00192.0.2.7"; vs != want {
		t.Errorf("verysimple association %q, want %q", vs, want)
	}
	if classic != "" {
		t.Errorf("classic tunnel association %q, want empty", classic)
	}
}

// TestV1UDPBadFrames: a cut or malformed frame ends the tunnel with an
// error (no hang); the carrier is closed.
func TestV1UDPBadFrames(t *testing.T) {
	multi := "01" + aliceHex + "01 02 0035 01 01020304"
	classic := "01" + aliceHex + "00 02 0035 01 01020304"
	tests := []struct {
		name string
		wire string
		want error
	}{
		{"multi payload cut", multi + "0005 6865", io.ErrUnexpectedEOF},
		{"multi length cut", multi + "0005 68656c6c6f 00", io.ErrUnexpectedEOF},
		{"classic address cut", classic + "0035 01 0102", io.ErrUnexpectedEOF},
		{"classic length cut", classic + "0035 01 01020304 00", io.ErrUnexpectedEOF},
		{"classic payload cut", classic + "0035 01 01020304 0009 6162", io.ErrUnexpectedEOF},
		{"classic bad atyp", classic + "0035 07 01020304 0001 61", protocols.ErrBadAddr},
		{"classic empty domain", classic + "0035 02 00 0001 61", protocols.ErrBadAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, err := serveFake(t, &packetHandler{}, unhex(tt.wire))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ServeConn = %v; want %v", err, tt.want)
			}
			if !fc.Closed() {
				t.Error("carrier left open")
			}
		})
	}
}

// TestV1UDPTruncatedPipe: over a real pipe, a frame cut by the client's
// close ends ReadPacket with an error rather than waiting forever.
func TestV1UDPTruncatedPipe(t *testing.T) {
	srvSide, cliSide := net.Pipe()
	readErr := make(chan error, 1)
	h := &packetHandler{f: func(pc tunnel.PacketConn, req tunnel.Request) error {
		buf := make([]byte, 100)
		n, _, err := pc.ReadPacket(buf)
		if err != nil || string(buf[:n]) != "ok" {
			readErr <- errors.New("first datagram lost")
			return err
		}
		_, _, err = pc.ReadPacket(buf)
		readErr <- err
		return err
	}}
	done := make(chan error, 1)
	go func() { done <- v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), srvSide, h) }()
	cliSide.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := cliSide.Write(unhex("01" + aliceHex + "01 02 0035 01 01020304 0002 6f6b 0010 61")); err != nil {
		t.Fatal(err)
	}
	cliSide.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadPacket = %v; want io.ErrUnexpectedEOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadPacket still waiting 5s after the carrier closed mid-frame")
	}
	if err := <-done; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ServeConn = %v; want it to carry io.ErrUnexpectedEOF", err)
	}
}

// TestV1UDPNotOnReusedConn: after a keep-alive stream, a UDP request is
// refused and the connection closed.
func TestV1UDPNotOnReusedConn(t *testing.T) {
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		io.ReadAll(conn)
		vlesstest.CloseWrite(conn)
		return conn.Close()
	}}
	fc := vlesstest.NewFake(
		unhex("01"+aliceHex+"10 01 0050 01 01020304 0001 61 0000"),
		unhex("01 02 0035 01 08080808 0001 61"),
	)
	err := v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), fc, h)
	if !errors.Is(err, vless.ErrBadAddons) || h.Calls() != 1 || !fc.Closed() {
		t.Errorf("ServeConn = %v, calls %d, closed %v; want ErrBadAddons, 1, closed", err, h.Calls(), fc.Closed())
	}
}

// TestV1UDPConcurrentWrites: replies from several goroutines never
// interleave on the carrier (run with -race).
func TestV1UDPConcurrentWrites(t *testing.T) {
	const writers, each = 8, 50
	h := &packetHandler{f: func(pc tunnel.PacketConn, req tunnel.Request) error {
		var wg sync.WaitGroup
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				from := protocols.Addr{IP: mustIP("10.0.0.1"), Port: uint16(1000 + i)}
				for range each {
					pc.WritePacket(make([]byte, 100+i), from)
				}
			}()
		}
		wg.Wait()
		return nil
	}}
	fc, err := serveFake(t, h, unhex("01"+aliceHex+"01 02 0035 01 01020304"))
	if err != nil {
		t.Fatal(err)
	}
	w := fc.Writes()
	if len(w) != writers*each {
		t.Fatalf("%d writes, want %d", len(w), writers*each)
	}
	for _, b := range w {
		payload, from, other, n, err := vless.ParseMultiPacket(b)
		if err != nil || n != len(b) || !other || len(payload) != 100+int(from.Port)-1000 {
			t.Fatalf("write %x: %v, %v, %d, %v", b, from, other, n, err)
		}
	}
}

func mustIP(s string) netip.Addr { return netip.MustParseAddr(s) }
