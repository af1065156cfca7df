package vlessserver_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

const aliceHex = "b831381d 63244d53 ad4f8cda 48b30811"

func v1Server(t *testing.T, opts vlessserver.Options) *vlessserver.Server {
	t.Helper()
	opts.V1, opts.Secure = true, true
	return newServer(t, opts)
}

func v1Header(t testing.TB, r vless.RequestV1) []byte {
	t.Helper()
	b, err := vless.AppendRequestV1(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v1To(id uuid.UUID, target string) vless.RequestV1 {
	a, err := protocols.ParseAddr(target)
	if err != nil {
		panic(err)
	}
	return vless.RequestV1{ID: id, Command: vless.CommandTCP, Target: a}
}

func TestNewV1Options(t *testing.T) {
	_, err := vlessserver.New(vlessserver.Options{V1: true})
	want := "vless: version 1 needs a TLS carrier: set Secure when the carrier is TLS, or leave V1 off"
	if !errors.Is(err, vlessserver.ErrInsecureV1) || err.Error() != want {
		t.Errorf("New(V1 without Secure) = %v; want %q", err, want)
	}
	if _, err := vlessserver.New(vlessserver.Options{IdleTimeout: -time.Second}); !errors.Is(err, vlessserver.ErrBadOptions) {
		t.Errorf("negative IdleTimeout: %v", err)
	}
}

func TestV1Match(t *testing.T) {
	v1 := v1Header(t, v1To(alice, "1.2.3.4:443"))
	v0 := header(t, tcpTo(alice, "1.2.3.4:443"))
	on, off := v1Server(t, vlessserver.Options{}), newServer(t, vlessserver.Options{})
	for _, tt := range []struct {
		s       *vlessserver.Server
		prefix  []byte
		want    bool
		wantErr error
	}{
		{on, v1, true, nil}, {on, v0, true, nil}, {off, v1, false, nil}, {off, v0, true, nil},
		{on, v1Header(t, v1To(eve, "1.2.3.4:443")), false, vlessserver.ErrUnknownUser},
	} {
		if ok, err := tt.s.Match(tt.prefix); ok != tt.want || err != tt.wantErr {
			t.Errorf("Match(%x) = %v, %v; want %v, %v", tt.prefix[:17], ok, err, tt.want, tt.wantErr)
		}
	}
}

// TestV1NotProtocol: before a known UUID, a v1 connection is refused for
// the decoy exactly like v0: ErrNotProtocol, nothing written, conn open.
func TestV1NotProtocol(t *testing.T) {
	good := v1Header(t, v1To(alice, "1.2.3.4:443"))
	tests := []struct {
		name  string
		v1    bool
		segs  [][]byte
		cause error
	}{
		{"unknown uuid", true, [][]byte{v1Header(t, v1To(eve, "1.2.3.4:443"))}, vlessserver.ErrUnknownUser},
		{"unknown uuid, bad rest", true, [][]byte{unhex("01 00000000 00004000 800000000000beef ff ff")}, vlessserver.ErrUnknownUser},
		{"v1 on a v0-only server", false, [][]byte{good}, vless.ErrUnknownVersion},
		{"version 2", true, [][]byte{append([]byte{2}, good[1:]...)}, vless.ErrUnknownVersion},
		{"10 bytes then EOF", true, [][]byte{good[:10]}, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, vlessserver.Options{V1: tt.v1, Secure: true})
			fc := vlesstest.NewFake(tt.segs...)
			h := &handlerFunc{}
			err := s.ServeConn(context.Background(), fc.Half(), h)
			if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, tt.cause) {
				t.Fatalf("ServeConn = %v; want ErrNotProtocol and %v", err, tt.cause)
			}
			if len(fc.Writes()) != 0 || fc.Closed() || fc.ClosedWrite() || h.Calls() != 0 {
				t.Errorf("writes %q, closed %v, calls %d; want none, open, none", fc.Writes(), fc.Closed(), h.Calls())
			}
		})
	}
}

// TestV1AfterUUID: once the UUID is a user's, a bad v1 header closes the
// connection and is not a fallback; Mux, and UDP with TCP's addons, are
// refused.
func TestV1AfterUUID(t *testing.T) {
	first := func(rest string) []byte { return unhex("01" + aliceHex + rest) }
	mux := v1To(alice, "1.2.3.4:443")
	mux.Command = vless.CommandMux
	tests := []struct {
		name string
		wire []byte
		want error
	}{
		{"unknown addon", first("05 01 0050 01 7f000001"), vless.ErrUnknownAddon},
		{"list of one", first("02 01 10 01 0050 01 7f000001"), vless.ErrBadAddons},
		{"padding too long", first("12 ffff 01 0050 01 7f000001"), vless.ErrBadAddons},
		{"command 7", first("00 07"), vless.ErrUnsupportedCommand},
		{"bad atyp", first("00 01 0050 09"), protocols.ErrBadAddr},
		{"cut, then EOF", first("10 01 00"), io.EOF},
		{"padding cut", append(first("12 0010 01 0050 01 7f000001"), 0, 0, 0), io.ErrUnexpectedEOF},
		{"mux", v1Header(t, mux), vlessserver.ErrMux},
		{"udp with keep_alive", first("10 02 0035 01 08080808 0001 61"), vless.ErrBadAddons},
		{"udp_multi with resolve", first("02 02 01 11 02 0035 01 08080808 0001 61"), vless.ErrBadAddons},
		{"association on tcp", first("02 02 01 13 0102030405060708 01 0035 01 08080808"), vless.ErrBadAddons},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := vlesstest.NewFake(tt.wire)
			h := &handlerFunc{}
			err := v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), fc, h)
			if !errors.Is(err, tt.want) || errors.Is(err, protocols.ErrNotProtocol) {
				t.Fatalf("ServeConn = %v; want %v without ErrNotProtocol", err, tt.want)
			}
			if !fc.Closed() || len(fc.Writes()) != 0 || h.Calls() != 0 {
				t.Errorf("closed %v, writes %q, calls %d; want closed, none, none", fc.Closed(), fc.Writes(), h.Calls())
			}
		})
	}
}

// TestV1RawStream: no response header; the payload after the padding is
// the handler's; verysimple's udp_multi addon is ignored on TCP.
func TestV1RawStream(t *testing.T) {
	r := v1To(alice, "example.com:80")
	r.Padded, r.PadLen, r.UDPMulti = true, 7, true
	wire := append(v1Header(t, r), 9, 9, 9, 9, 9, 9, 9)
	wire = append(wire, "hello"...)
	for name, segs := range map[string][][]byte{"one": {wire}, "split": split(wire)} {
		t.Run(name, func(t *testing.T) {
			fc := vlesstest.NewFake(segs...)
			var got []byte
			var req tunnel.Request
			h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, rq tunnel.Request) error {
				req = rq
				got, _ = io.ReadAll(conn)
				conn.Write([]byte("world"))
				return conn.Close()
			}}
			if err := v1Server(t, vlessserver.Options{Inbound: "in"}).ServeConn(context.Background(), fc, h); err != nil {
				t.Fatal(err)
			}
			if string(got) != "hello" || req.Target.String() != "example.com:80" || req.User != "alice@example.com" || req.Inbound != "in" {
				t.Errorf("handler read %q, request %+v", got, req)
			}
			if w := fc.Writes(); len(w) != 1 || string(w[0]) != "world" {
				t.Errorf("carrier writes %q; want the payload alone", w)
			}
			if !fc.Closed() {
				t.Error("carrier left open after a stream without keep-alive")
			}
		})
	}
}

// TestV1KeepAliveScripted: two streams on one connection, bytes checked
// against the layouts written by hand.
func TestV1KeepAliveScripted(t *testing.T) {
	in := [][]byte{
		unhex("01" + aliceHex + "10 01 0050 01 01020304" + "0004 70696e67"), // first header, chunk "ping"
		unhex("00"), unhex("00"), // end marker, cut in two
		unhex("10 01 01bb 02 01 61" + "0003 74776f 0000"), // next request to a:443, chunk "two", end
	}
	fc := vlesstest.NewFake(in...)
	var reads []string
	var targets []string
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		b, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		reads = append(reads, string(b))
		targets = append(targets, req.Target.String())
		conn.Write([]byte("re:" + string(b)))
		vlesstest.CloseWrite(conn)
		return conn.Close()
	}}
	if err := v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), fc, h); err != nil {
		t.Fatalf("ServeConn = %v; want nil after EOF between requests", err)
	}
	if strings.Join(reads, ",") != "ping,two" || strings.Join(targets, ",") != "1.2.3.4:80,a:443" {
		t.Errorf("reads %q, targets %q", reads, targets)
	}
	want := [][]byte{unhex("0007 72653a70696e67"), unhex("0000"), unhex("0006 72653a74776f"), unhex("0000")}
	if w := fc.Writes(); !equalWrites(w, want) {
		t.Errorf("carrier writes %x\nwant %x", w, want)
	}
	if !fc.Closed() || fc.ClosedWrite() {
		t.Errorf("closed %v, half-closed %v; want closed at the end, never half-closed", fc.Closed(), fc.ClosedWrite())
	}
}

func equalWrites(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestV1Unclean: a keep-alive stream that does not end cleanly both ways
// closes the connection; no further request is read.
func TestV1Unclean(t *testing.T) {
	first := unhex("01" + aliceHex + "10 01 0050 01 01020304" + "0001 61")
	next := unhex("10 01 0050 01 01020304 0000")
	tests := []struct {
		name string
		segs [][]byte
		f    func(conn net.Conn) error
	}{
		{"handler closes before the client's end", [][]byte{first, unhex("0000"), next}, func(conn net.Conn) error {
			vlesstest.CloseWrite(conn)
			return conn.Close()
		}},
		{"handler never ends its side", [][]byte{first, unhex("0000"), next}, func(conn net.Conn) error {
			io.ReadAll(conn)
			return conn.Close()
		}},
		{"client cuts the stream", [][]byte{first}, func(conn net.Conn) error {
			_, err := io.ReadAll(conn)
			vlesstest.CloseWrite(conn)
			conn.Close()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := vlesstest.NewFake(tt.segs...)
			h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error { return tt.f(conn) }}
			v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), fc, h)
			if h.Calls() != 1 || !fc.Closed() {
				t.Errorf("calls %d, closed %v; want 1 call and a closed carrier", h.Calls(), fc.Closed())
			}
		})
	}
}

// TestV1ResolvedScripted: the resolved address goes out first, when
// reported, or as "unknown" ahead of whatever the handler does first.
func TestV1ResolvedScripted(t *testing.T) {
	hdr := unhex("01" + aliceHex + "11 01 0050 02 09 6c6f63616c686f7374") // resolve, localhost:80
	ap := netip.MustParseAddrPort("127.0.0.1:80")
	tests := []struct {
		name string
		f    func(conn net.Conn)
		want [][]byte
	}{
		{"reported", func(conn net.Conn) {
			conn.(tunnel.RemoteReporter).ReportRemote(ap)
			conn.(tunnel.DialReporter).ReportDial(nil)
			conn.Write([]byte("x"))
		}, [][]byte{unhex("01 7f000001 0050"), []byte("x")}},
		{"reported twice", func(conn net.Conn) {
			conn.(tunnel.RemoteReporter).ReportRemote(ap)
			conn.(tunnel.RemoteReporter).ReportRemote(netip.MustParseAddrPort("[::1]:1"))
		}, [][]byte{unhex("01 7f000001 0050")}},
		{"write first", func(conn net.Conn) {
			conn.Write([]byte("x"))
			conn.(tunnel.RemoteReporter).ReportRemote(ap)
		}, [][]byte{unhex("00 78")}},
		{"dial reported only", func(conn net.Conn) {
			conn.(tunnel.DialReporter).ReportDial(errors.New("refused"))
		}, [][]byte{unhex("00")}},
		{"close only", func(conn net.Conn) {}, [][]byte{unhex("00")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := vlesstest.NewFake(hdr)
			h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
				tt.f(conn)
				return conn.Close()
			}}
			v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), fc, h)
			if w := fc.Writes(); !equalWrites(w, tt.want) {
				t.Errorf("carrier writes %x, want %x", w, tt.want)
			}
		})
	}
	// Without the resolve addon, reports write nothing.
	fc := vlesstest.NewFake(unhex("01" + aliceHex + "00 01 0050 01 7f000001"))
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		conn.(tunnel.RemoteReporter).ReportRemote(ap)
		conn.(tunnel.DialReporter).ReportDial(nil)
		return conn.Close()
	}}
	v1Server(t, vlessserver.Options{}).ServeConn(context.Background(), fc, h)
	if len(fc.Writes()) != 0 {
		t.Errorf("wrote %x for a request that did not ask", fc.Writes())
	}
}

// TestV1IdleTimeout: a kept-alive connection with no next request is
// closed after IdleTimeout, and ServeConn returns nil.
func TestV1IdleTimeout(t *testing.T) {
	srvSide, cliSide := net.Pipe()
	defer cliSide.Close()
	s := v1Server(t, vlessserver.Options{IdleTimeout: 150 * time.Millisecond})
	done := make(chan error, 1)
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		io.ReadAll(conn)
		vlesstest.CloseWrite(conn)
		return conn.Close()
	}}
	go func() { done <- s.ServeConn(context.Background(), srvSide, h) }()
	cliSide.SetDeadline(time.Now().Add(5 * time.Second))
	cliSide.Write(unhex("01" + aliceHex + "10 01 0050 01 01020304 0000"))
	if got, _ := io.ReadFull(cliSide, make([]byte, 2)); got != 2 {
		t.Fatal("no end marker from the server")
	}
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeConn = %v; want nil", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
			t.Errorf("idle connection closed after %v; want about 150ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn still waiting 5s into a 150ms idle timeout")
	}
	if _, err := cliSide.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client side read %v; want EOF (closed)", err)
	}
}

// TestV1ContextEndsIdleWait: cancelling ctx ends the wait between requests.
func TestV1ContextEndsIdleWait(t *testing.T) {
	srvSide, cliSide := net.Pipe()
	defer cliSide.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		io.ReadAll(conn)
		vlesstest.CloseWrite(conn)
		return conn.Close()
	}}
	go func() { done <- v1Server(t, vlessserver.Options{}).ServeConn(ctx, srvSide, h) }()
	cliSide.Write(unhex("01" + aliceHex + "10 01 0050 01 01020304 0000"))
	io.ReadFull(cliSide, make([]byte, 2))
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ServeConn = %v; want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn ignores ctx between requests")
	}
}
