package vlessclient_test

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

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
)

// seqCarrier hands out prepared conns one per dial.
type seqCarrier struct {
	conns []net.Conn
	dials int
}

func (s *seqCarrier) DialConn(ctx context.Context) (net.Conn, error) {
	if s.dials >= len(s.conns) {
		return nil, errors.New("no more conns")
	}
	s.dials++
	return s.conns[s.dials-1], nil
}

func v1Client(t *testing.T, opts vlessclient.Options, conns ...net.Conn) *vlessclient.Client {
	t.Helper()
	opts.ID, opts.Version, opts.Secure = id, 1, true
	opts.Carrier = &seqCarrier{conns: conns}
	if opts.HeaderWait == 0 {
		opts.HeaderWait = -1
	}
	c, err := vlessclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dialTo(t *testing.T, c *vlessclient.Client, dst string) net.Conn {
	t.Helper()
	a, err := protocols.ParseAddr(dst)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.DialStream(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

const uuidHex = "b831381d 63244d53 ad4f8cda 48b30811"

func TestNewV1(t *testing.T) {
	carrier := &seqCarrier{}
	base := func(f func(*vlessclient.Options)) vlessclient.Options {
		o := vlessclient.Options{ID: id, Carrier: carrier, Version: 1, Secure: true}
		f(&o)
		return o
	}
	tests := []struct {
		name string
		opts vlessclient.Options
		want error
		msg  string
	}{
		{"insecure", base(func(o *vlessclient.Options) { o.Secure = false }), vlessclient.ErrInsecureV1,
			"vless: version 1 needs a TLS carrier: set Secure when the carrier is TLS, or use version 0"},
		{"version 2", base(func(o *vlessclient.Options) { o.Version = 2 }), vlessclient.ErrOptions, "version 2; want 0 or 1"},
		{"keep-alive on v0", base(func(o *vlessclient.Options) { o.Version, o.KeepAlive = 0, true }), vlessclient.ErrOptions, "need Version 1"},
		{"resolve on v0", base(func(o *vlessclient.Options) { o.Version, o.ResolveAddr = 0, true }), vlessclient.ErrOptions, "need Version 1"},
		{"padding on v0", base(func(o *vlessclient.Options) { o.Version, o.PadMax = 0, 500 }), vlessclient.ErrOptions, "need Version 1"},
		{"negative pool", base(func(o *vlessclient.Options) { o.PoolSize = -1 }), vlessclient.ErrOptions, "negative"},
		{"negative idle", base(func(o *vlessclient.Options) { o.PoolIdleTimeout = -1 }), vlessclient.ErrOptions, "negative"},
		{"PadMin alone", base(func(o *vlessclient.Options) { o.PadMin = 400 }), vlessclient.ErrOptions, "without PadMax"},
		{"PadMax too small", base(func(o *vlessclient.Options) { o.PadMax = 100 }), vlessclient.ErrOptions, "292 ≤ PadMin ≤ PadMax ≤ 16384"},
		{"PadMin too small", base(func(o *vlessclient.Options) { o.PadMin, o.PadMax = 291, 500 }), vlessclient.ErrOptions, "padding range 291..500"},
		{"PadMax too big", base(func(o *vlessclient.Options) { o.PadMax = 16385 }), vlessclient.ErrOptions, "padding range"},
		{"inverted", base(func(o *vlessclient.Options) { o.PadMin, o.PadMax = 600, 500 }), vlessclient.ErrOptions, "padding range 600..500"},
		{"rand fails", base(func(o *vlessclient.Options) { o.PadMax, o.PadRand = 500, strings.NewReader("short") }), vlessclient.ErrOptions, "choosing the padding size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vlessclient.New(tt.opts)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("New = %v; want %v containing %q, one line", err, tt.want, tt.msg)
			}
		})
	}
	c, err := vlessclient.New(base(func(o *vlessclient.Options) { o.PadMax = vless.MinPadTo }))
	if err != nil || c.PadSize() != vless.MinPadTo {
		t.Fatalf("PadMin defaults to MinPadTo: %v, size %d", err, c.PadSize())
	}
}

// TestV1VerysimpleBytes: with no Portico addon the client writes what
// verysimple's v1 client writes (hand-written from its getBufWithCmd and
// Handshake): version 1, UUID, addon 0, command, port, atyp, address, then
// the payload in the same write; the server's bytes are payload from the
// first one.
func TestV1VerysimpleBytes(t *testing.T) {
	fc := vlesstest.NewFake([]byte("raw reply"))
	c := v1Client(t, vlessclient.Options{}, fc.Half())
	conn := dialTo(t, c, "example.com:443")
	if _, err := conn.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	want := unhex("01" + uuidHex + "00 01 01bb 02 0b 6578616d706c652e636f6d 6869")
	if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], want) {
		t.Fatalf("carrier writes %x\nwant %x", w, want)
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "raw reply" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if err := vlesstest.CloseWrite(conn); err != nil || !fc.ClosedWrite() {
		t.Fatalf("CloseWrite = %v; carrier half-closed %v", err, fc.ClosedWrite())
	}
	conn.Close()
	if !fc.Closed() {
		t.Error("a stream without keep-alive left its carrier open")
	}
}

// TestV1KeepAliveBytes: keep-alive frames both ways; after the server's end
// marker and ours, Close puts the carrier in the pool, and the next stream
// sends the short header on it.
func TestV1KeepAliveBytes(t *testing.T) {
	fc := vlesstest.NewFake(unhex("0003 616263"), unhex("00"), unhex("02 6465 00"), unhex("00"))
	c := v1Client(t, vlessclient.Options{KeepAlive: true}, fc)
	conn := dialTo(t, c, "1.2.3.4:80")
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "abcde" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if err := vlesstest.CloseWrite(conn); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil || fc.Closed() {
		t.Fatalf("Close = %v, carrier closed %v; want it pooled", err, fc.Closed())
	}
	if st := c.PoolStats(); st != (vlessclient.PoolStats{Idle: 1, Dialed: 1, Returned: 1}) {
		t.Fatalf("PoolStats = %+v", st)
	}
	conn2 := dialTo(t, c, "a:443")
	conn2.Write([]byte("x"))
	w := fc.Writes()
	want := [][]byte{
		unhex("01" + uuidHex + "10 01 0050 01 01020304 0004 70696e67"), // first header, keep_alive, chunk "ping"
		unhex("0000"),                            // CloseWrite: end marker
		unhex("10 01 01bb 02 01 61" + "0001 78"), // reused: short header, chunk "x"
	}
	if len(w) != len(want) {
		t.Fatalf("carrier writes %x\nwant %x", w, want)
	}
	for i := range want {
		if !bytes.Equal(w[i], want[i]) {
			t.Errorf("write %d = %x, want %x", i, w[i], want[i])
		}
	}
	if st := c.PoolStats(); st.Idle != 0 || st.Reused != 1 || st.Dialed != 1 {
		t.Errorf("PoolStats = %+v", st)
	}
	conn2.Close() // not clean: closes the carrier
	if !fc.Closed() || c.PoolStats().Idle != 0 {
		t.Errorf("an unfinished stream's Close kept the carrier")
	}
}

// TestV1CloseSendsEnd: a Close after the server's end marker, without
// CloseWrite, sends our end marker and pools the carrier.
func TestV1CloseSendsEnd(t *testing.T) {
	fc := vlesstest.NewFake(unhex("0000"))
	c := v1Client(t, vlessclient.Options{KeepAlive: true}, fc)
	conn := dialTo(t, c, "1.2.3.4:80")
	conn.Write([]byte("q"))
	if got, err := io.ReadAll(conn); err != nil || len(got) != 0 {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	conn.Close()
	w := fc.Writes()
	if len(w) != 2 || !bytes.Equal(w[1], []byte{0, 0}) || fc.Closed() || c.PoolStats().Idle != 1 {
		t.Fatalf("writes %x, closed %v, idle %d", w, fc.Closed(), c.PoolStats().Idle)
	}
	if _, err := conn.Write([]byte("late")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close succeeded")
	}
}

// TestV1Broken: whatever breaks a keep-alive stream closes its carrier.
func TestV1Broken(t *testing.T) {
	tests := []struct {
		name string
		segs [][]byte
		want error
	}{
		{"EOF before the end marker", [][]byte{unhex("0002 6869")}, io.ErrUnexpectedEOF},
		{"EOF inside a chunk", [][]byte{unhex("0005 6869")}, io.ErrUnexpectedEOF},
		{"EOF at once", nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := vlesstest.NewFake(tt.segs...)
			c := v1Client(t, vlessclient.Options{KeepAlive: true}, fc)
			conn := dialTo(t, c, "1.2.3.4:80")
			conn.Write([]byte("q"))
			vlesstest.CloseWrite(conn)
			if _, err := io.ReadAll(conn); !errors.Is(err, tt.want) {
				t.Fatalf("ReadAll err = %v, want %v", err, tt.want)
			}
			conn.Close()
			if !fc.Closed() || c.PoolStats().Idle != 0 {
				t.Fatalf("closed %v, idle %d", fc.Closed(), c.PoolStats().Idle)
			}
		})
	}
	// Close before the server's end marker closes too.
	fc := vlesstest.NewFake(unhex("0002 6869"))
	c := v1Client(t, vlessclient.Options{KeepAlive: true}, fc)
	conn := dialTo(t, c, "1.2.3.4:80")
	conn.Write([]byte("q"))
	conn.Read(make([]byte, 10))
	conn.Close()
	if !fc.Closed() || c.PoolStats().Idle != 0 {
		t.Fatalf("Close mid-stream: closed %v, idle %d", fc.Closed(), c.PoolStats().Idle)
	}
}

// TestV1ResolvedFake: the resolved-address message is read before the
// payload, by Read or by ResolvedAddr, whichever comes first.
func TestV1ResolvedFake(t *testing.T) {
	tests := []struct {
		name   string
		segs   [][]byte
		want   netip.AddrPort
		ok     bool
		data   string
		errMsg string
	}{
		{"ipv4", [][]byte{unhex("01 7f000001 1f90"), []byte("data")}, netip.MustParseAddrPort("127.0.0.1:8080"), true, "data", ""},
		{"ipv6 cut", [][]byte{unhex("03 2001"), unhex("0db8 0000 0000 0000 0000 0000 0001 01"), append(unhex("bb"), "data"...)}, netip.MustParseAddrPort("[2001:db8::1]:443"), true, "data", ""},
		{"unknown", [][]byte{unhex("00"), []byte("data")}, netip.AddrPort{}, false, "data", ""},
		{"malformed", [][]byte{unhex("02 01 61")}, netip.AddrPort{}, false, "", "malformed resolved address"},
		{"cut", [][]byte{unhex("01 7f00")}, netip.AddrPort{}, false, "", "unexpected EOF"},
	}
	for _, tt := range tests {
		for _, first := range []string{"ResolvedAddr", "Read"} {
			t.Run(tt.name+" "+first, func(t *testing.T) {
				var segs [][]byte // FakeConn consumes its segments in place
				for _, s := range tt.segs {
					segs = append(segs, bytes.Clone(s))
				}
				fc := vlesstest.NewFake(segs...)
				c := v1Client(t, vlessclient.Options{ResolveAddr: true}, fc)
				conn := dialTo(t, c, "localhost:8080")
				var got []byte
				var err error
				var ap netip.AddrPort
				var ok bool
				if first == "Read" {
					got, err = io.ReadAll(conn)
					ap, ok = conn.(vlessclient.Resolver).ResolvedAddr()
				} else {
					ap, ok = conn.(vlessclient.Resolver).ResolvedAddr()
					got, err = io.ReadAll(conn)
				}
				if ap != tt.want || ok != tt.ok {
					t.Errorf("ResolvedAddr = %v, %v; want %v, %v", ap, ok, tt.want, tt.ok)
				}
				if tt.errMsg != "" {
					if err == nil || !strings.Contains(err.Error(), tt.errMsg) {
						t.Errorf("Read err = %v, want %q", err, tt.errMsg)
					}
				} else if err != nil || string(got) != tt.data {
					t.Errorf("ReadAll = %q, %v", got, err)
				}
				hdr := unhex("01" + uuidHex + "11 01 1f90 02 09 6c6f63616c686f7374") // addon 0x11 resolve
				if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], hdr) {
					t.Errorf("carrier writes %x, want the header alone %x", w, hdr)
				}
			})
		}
	}
	// Without ResolveAddr the method answers at once.
	fc := vlesstest.NewFake()
	conn := dialTo(t, v1Client(t, vlessclient.Options{}, fc), "1.2.3.4:1")
	if ap, ok := conn.(vlessclient.Resolver).ResolvedAddr(); ok || ap.IsValid() || len(fc.Writes()) != 0 {
		t.Errorf("ResolvedAddr without the option = %v, %v", ap, ok)
	}
}

// TestV1PaddingFake: the first write is exactly PadTo bytes and decodes to
// header ‖ padding ‖ payload part; the rest follows unpadded.
func TestV1PaddingFake(t *testing.T) {
	for _, keepAlive := range []bool{false, true} {
		for _, size := range []int{0, 1, 100, 300, 2000} {
			fc := vlesstest.NewFake()
			c := v1Client(t, vlessclient.Options{KeepAlive: keepAlive, PadMin: 400, PadMax: 400}, fc.Half())
			conn := dialTo(t, c, "example.com:443")
			payload := bytes.Repeat([]byte{0xab}, size)
			if size > 0 {
				if n, err := conn.Write(payload); n != size || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			} else {
				vlesstest.CloseWrite(conn)
			}
			w := fc.Writes()
			if len(w[0]) != 400 {
				t.Fatalf("keepalive=%v size=%d: first write is %d bytes, want 400", keepAlive, size, len(w[0]))
			}
			req, n, err := vless.ParseRequestV1(w[0])
			if err != nil || !req.Padded || req.KeepAlive != keepAlive {
				t.Fatalf("first write's header: %+v, %v", req, err)
			}
			body := w[0][n+req.PadLen:]
			if bytes.ContainsFunc(w[0][n:n+req.PadLen], func(r rune) bool { return r != 0 }) {
				t.Error("padding is not zeros")
			}
			var stream []byte
			all := append(bytes.Clone(body), bytes.Join(w[1:], nil)...)
			if keepAlive {
				for len(all) > 0 {
					data, end, m, err := vless.ParseChunk(all)
					if err != nil {
						t.Fatalf("chunks: %v", err)
					}
					all = all[m:]
					if end {
						break
					}
					stream = append(stream, data...)
				}
			} else {
				stream = all
			}
			if !bytes.Equal(stream, payload) {
				t.Errorf("keepalive=%v size=%d: payload after the padding is %d bytes", keepAlive, size, len(stream))
			}
		}
	}
}

// TestV1PoolIdleClock: a pooled connection older than PoolIdleTimeout is
// closed when DialStream meets it, by the (injected) clock alone.
func TestV1PoolIdleClock(t *testing.T) {
	first, second := vlesstest.NewFake(unhex("0000")), vlesstest.NewFake()
	c := v1Client(t, vlessclient.Options{KeepAlive: true, PoolIdleTimeout: time.Minute}, first, second)
	now := time.Unix(1000, 0)
	vlessclient.SetNow(c, func() time.Time { return now })
	conn := dialTo(t, c, "1.2.3.4:80")
	conn.Write([]byte("a"))
	io.ReadAll(conn)
	conn.Close()
	if c.PoolStats().Idle != 1 || first.Closed() {
		t.Fatal("clean stream not pooled")
	}
	now = now.Add(time.Minute) // exactly the timeout: still good
	conn = dialTo(t, c, "1.2.3.4:80")
	if st := c.PoolStats(); st.Reused != 1 || st.Dialed != 1 {
		t.Fatalf("at the timeout: PoolStats %+v; want reused", st)
	}
	conn.Write([]byte("b"))
	first.Segments = [][]byte{unhex("0000")}
	io.ReadAll(conn)
	conn.Close()
	now = now.Add(time.Minute + time.Nanosecond)
	conn = dialTo(t, c, "1.2.3.4:80")
	defer conn.Close()
	if st := c.PoolStats(); st.Reused != 1 || st.Dialed != 2 || st.Idle != 0 || !first.Closed() {
		t.Fatalf("past the timeout: PoolStats %+v, old carrier closed %v; want a new dial", st, first.Closed())
	}
}
