package socks

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// udpHeaderVectors are written from RFC 1928 §7, not by the encoder.
var udpHeaderVectors = []struct {
	name string
	frag byte
	addr protocols.Addr
	hex  []byte
}{
	{"ipv4", 0, protocols.Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 53}, []byte{0, 0, 0, 1, 1, 2, 3, 4, 0, 53}},
	{"domain", 0, protocols.Addr{Domain: "a.io", Port: 443}, []byte{0, 0, 0, 3, 4, 'a', '.', 'i', 'o', 1, 0xbb}},
	{"ipv6 frag 2", 2, protocols.Addr{IP: netip.MustParseAddr("::1"), Port: 7}, append(append([]byte{0, 0, 2, 4}, netip.MustParseAddr("::1").AsSlice()...), 0, 7)},
}

func TestUDPHeader(t *testing.T) {
	for _, v := range udpHeaderVectors {
		t.Run(v.name, func(t *testing.T) {
			got, err := AppendUDPHeader([]byte{0xAA}, v.frag, v.addr)
			if err != nil || !bytes.Equal(got[1:], v.hex) {
				t.Fatalf("Append = % x, %v; want aa % x", got, err, v.hex)
			}
			frag, addr, n, err := ParseUDPHeader(append(bytes.Clone(v.hex), "data"...))
			if err != nil || frag != v.frag || addr != v.addr || n != len(v.hex) {
				t.Fatalf("Parse = %d %v %d %v", frag, addr, n, err)
			}
			checkPrefixes(t, v.hex, func(b []byte) error { _, _, _, err := ParseUDPHeader(b); return err })
		})
	}
	if _, _, _, err := ParseUDPHeader([]byte{0, 1, 0, 1, 1, 2, 3, 4, 0, 53}); !errors.Is(err, ErrMalformed) {
		t.Errorf("RSV 1: err = %v", err)
	}
	if _, _, _, err := ParseUDPHeader([]byte{0, 0, 0, 9, 1, 2, 3, 4, 0, 53}); !errors.Is(err, protocols.ErrBadAddr) {
		t.Errorf("ATYP 9: err = %v", err)
	}
	if b, err := AppendUDPHeader(nil, 0, protocols.Addr{}); err == nil || len(b) != 0 {
		t.Errorf("invalid addr: % x, %v", b, err)
	}
}

func FuzzParseUDPHeader(f *testing.F) {
	for _, v := range udpHeaderVectors {
		f.Add(v.hex)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		frag, addr, n, err := ParseUDPHeader(b)
		if err != nil {
			return
		}
		if n > len(b) || n > MaxUDPHeaderLen {
			t.Fatalf("n = %d of %d", n, len(b))
		}
		again, err := AppendUDPHeader(nil, frag, addr)
		if err != nil || !bytes.Equal(again, b[:n]) {
			t.Fatalf("round trip: % x became % x (%v)", b[:n], again, err)
		}
	})
}

// udpEcho serves a UDP echo on 127.0.0.1 until the test ends.
func udpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// packetHandler is a fake router for UDP: it relays the association's
// datagrams through one unconnected loopback UDP socket.
type packetHandler struct {
	mu   sync.Mutex
	reqs []tunnel.Request
	pcs  []tunnel.PacketConn
	dsts []protocols.Addr
}

func (h *packetHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	conn.Close()
	return errors.New("no streams")
}

func (h *packetHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	defer pc.Close()
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.pcs = append(h.pcs, pc)
	h.mu.Unlock()
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer out.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := out.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if pc.WritePacket(buf[:n], protocols.AddrFromAddrPort(from)) != nil {
				return
			}
		}
	}()
	buf := make([]byte, 65535)
	for {
		n, dst, err := pc.ReadPacket(buf)
		if err != nil {
			out.Close()
			<-done
			return nil
		}
		h.mu.Lock()
		h.dsts = append(h.dsts, dst)
		h.mu.Unlock()
		ap, _ := dst.AddrPort()
		out.WriteToUDPAddrPort(buf[:n], ap)
	}
}

func (h *packetHandler) destinations() []protocols.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]protocols.Addr(nil), h.dsts...)
}

func dialUDP(t *testing.T, addr string) *UDPClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uc, err := DialUDP(ctx, c, "", "")
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// TestUDPAssociateEcho: 100 datagrams of 1200 bytes go through the
// association to a UDP echo and come back intact, with the echo as their
// source; the handler sees a UDP request whose target is the first
// destination; closing the control connection ends the association.
func TestUDPAssociateEcho(t *testing.T) {
	echo := udpEcho(t)
	h := &packetHandler{}
	addr, errs := startProxy(t, &Server{Inbound: "local"}, h)
	uc := dialUDP(t, addr)
	if got := uc.RelayAddr().Addr(); got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("relay on %v, want the control connection's IP", got)
	}
	dst := protocols.AddrFromAddrPort(echo)
	buf := make([]byte, 2048)
	for i := range 100 {
		msg := make([]byte, 1200)
		rand.Read(msg)
		var n int
		var from protocols.Addr
		var err error
		for try := 0; try < 5; try++ { // loopback UDP may drop under load; retry a few times
			if err := uc.WritePacket(msg, dst); err != nil {
				t.Fatal(err)
			}
			uc.SetReadDeadline(time.Now().Add(time.Second))
			if n, from, err = uc.ReadPacket(buf); err == nil {
				break
			}
		}
		if err != nil || !bytes.Equal(buf[:n], msg) || from != dst {
			t.Fatalf("packet %d: %d bytes from %v, %v", i, n, from, err)
		}
	}
	h.mu.Lock()
	req := h.reqs[0]
	h.mu.Unlock()
	if req.Network != protocols.NetworkUDP || req.Target != dst || req.Transport != "socks" || req.Inbound != "local" {
		t.Fatalf("request %+v", req)
	}
	uc.control.Close()
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("ServeConn: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the association outlived its control connection")
	}
}

// TestUDPAssociateDropsFragmentsAndStrangers: a datagram with FRAG != 0 is
// dropped and counted, and so is one from another IP than the control
// connection's peer; the association carries the next good datagram.
func TestUDPAssociateDropsFragmentsAndStrangers(t *testing.T) {
	echo := udpEcho(t)
	h := &packetHandler{}
	addr, _ := startProxy(t, &Server{}, h)
	uc := dialUDP(t, addr)
	dst := protocols.AddrFromAddrPort(echo)

	frag, _ := AppendUDPHeader(nil, 1, dst)
	if _, err := uc.udp.WriteToUDPAddrPort(append(frag, "fragment"...), uc.RelayAddr()); err != nil {
		t.Fatal(err)
	}
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skip("no 127.0.0.2 on this host:", err)
	}
	defer stranger.Close()
	whole, _ := AppendUDPHeader(nil, 0, dst)
	if _, err := stranger.WriteToUDPAddrPort(append(whole, "stranger"...), uc.RelayAddr()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	buf := make([]byte, 2048)
	if err := uc.WritePacket([]byte("good"), dst); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := uc.ReadPacket(buf)
	if err != nil || string(buf[:n]) != "good" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if got := h.destinations(); len(got) != 1 {
		t.Fatalf("handler saw %d datagrams, want only the good one", len(got))
	}
	h.mu.Lock()
	pc := h.pcs[0]
	h.mu.Unlock()
	frags, strangers, _ := pc.(*udpAssoc).Dropped()
	if frags != 1 || strangers != 1 {
		t.Fatalf("dropped %d fragments, %d strangers; want 1 and 1", frags, strangers)
	}
}

// TestUDPAssociateRefusedWithoutTCP: over a pipe there is no address to
// bind a relay to, and the client hears a general failure.
func TestUDPAssociateRefusedWithoutTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	done := make(chan error, 1)
	go func() { done <- (&Server{}).ServeConn(context.Background(), b, &packetHandler{}) }()
	go a.Write([]byte{5, 1, 0, 5, CmdUDPAssociate, 0, 1, 0, 0, 0, 0, 0, 0})
	got := make([]byte, 12)
	a.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ioReadFull(a, got); err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{5, 0}, AppendReply(nil, ReplyGeneralFailure, protocols.Addr{})...); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "TCP") {
		t.Fatalf("ServeConn: %v", err)
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
