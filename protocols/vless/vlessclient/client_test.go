package vlessclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
)

var id = uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811")

// fakeCarrier hands out one prepared conn and counts dials.
type fakeCarrier struct {
	conn  net.Conn
	err   error
	dials int
}

func (f *fakeCarrier) DialConn(ctx context.Context) (net.Conn, error) {
	f.dials++
	return f.conn, f.err
}

// dial opens a tunnel over carrier; a Read before any Write sends the
// header at once unless wait is given.
func dial(t *testing.T, carrier net.Conn, dst string, wait ...time.Duration) net.Conn {
	t.Helper()
	opts := vlessclient.Options{ID: id, Carrier: &fakeCarrier{conn: carrier}, HeaderWait: -1}
	if len(wait) > 0 {
		opts.HeaderWait = wait[0]
	}
	c, err := vlessclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
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

func wantHeader(t *testing.T, dst string) []byte {
	t.Helper()
	a, _ := protocols.ParseAddr(dst)
	b, err := vless.AppendRequest(nil, &vless.RequestHeader{ID: id, Command: vless.CommandTCP, Target: a})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNew(t *testing.T) {
	carrier := &fakeCarrier{}
	tests := []struct {
		opts vlessclient.Options
		want error
		msg  string
	}{
		{vlessclient.Options{Carrier: carrier}, vlessclient.ErrOptions, "no id"},
		{vlessclient.Options{ID: id}, vlessclient.ErrOptions, "no carrier"},
		{vlessclient.Options{ID: id, Carrier: carrier, Flow: vless.FlowVision}, vlessclient.ErrFlow, `flow "xtls-rprx-vision" is not supported by Portico yet`},
	}
	for _, tt := range tests {
		if _, err := vlessclient.New(tt.opts); !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("New(%+v) = %v; want %v (%q)", tt.opts, err, tt.want, tt.msg)
		}
	}
}

// TestFirstWrite: the request header and the first payload leave in one
// carrier write; later writes are untouched.
func TestFirstWrite(t *testing.T) {
	fc := vlesstest.NewFake()
	conn := dial(t, fc, "example.com:443")
	if len(fc.Writes()) != 0 {
		t.Fatal("DialStream wrote before the first Write")
	}
	if n, err := conn.Write([]byte("GET /")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := conn.Write([]byte(" HTTP/1.1")); n != 9 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	w := fc.Writes()
	want := append(wantHeader(t, "example.com:443"), "GET /"...)
	if len(w) != 2 || !bytes.Equal(w[0], want) || string(w[1]) != " HTTP/1.1" {
		t.Errorf("carrier writes = %x; want [%x, ...]", w, want)
	}
}

// TestReadFirst: a Read before any Write sends the header alone, then
// strips the response header, whatever its addons and however it is cut.
func TestReadFirst(t *testing.T) {
	cases := map[string][][]byte{
		"plain":                 {{0, 0}, []byte("hello")},
		"with payload":          {[]byte("\x00\x00hello")},
		"byte by byte":          {{0}, {0}, []byte("hel"), []byte("lo")},
		"addons skipped":        {[]byte("\x00\x03\x0a\x01fhello")},
		"addons cut":            {[]byte("\x00\x03\x0a"), []byte("\x01fhel"), []byte("lo")},
		"unknown addon skipped": {[]byte("\x00\x02\x18\x05hello")},
	}
	for name, segs := range cases {
		t.Run(name, func(t *testing.T) {
			fc := vlesstest.NewFake(segs...)
			conn := dial(t, fc, "1.2.3.4:80")
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != "hello" {
				t.Fatalf("ReadAll = %q, %v", got, err)
			}
			if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], wantHeader(t, "1.2.3.4:80")) {
				t.Errorf("carrier writes = %x; want the header alone", w)
			}
			conn.Write([]byte("x"))
			if w := fc.Writes(); len(w) != 2 || string(w[1]) != "x" {
				t.Errorf("header sent twice: %x", w)
			}
		})
	}
}

func TestBadResponse(t *testing.T) {
	tests := []struct {
		name string
		segs [][]byte
		want error
	}{
		{"version 1", [][]byte{{1, 0}}, vless.ErrUnknownVersion},
		{"bad addons", [][]byte{{0, 1, 0x0c}}, vless.ErrBadAddons},
		{"cut", [][]byte{{0}}, io.ErrUnexpectedEOF},
		{"cut in addons", [][]byte{{0, 5, 0x0a}}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dial(t, vlesstest.NewFake(tt.segs...), "1.2.3.4:80")
			conn.Write([]byte("x"))
			for i := 0; i < 2; i++ { // the failure sticks
				if n, err := conn.Read(make([]byte, 10)); n != 0 || !errors.Is(err, tt.want) {
					t.Fatalf("Read = %d, %v; want %v", n, err, tt.want)
				}
			}
		})
	}
	// Closed without a byte: an empty reply (V2Ray sends no header without
	// data), a clean EOF.
	conn := dial(t, vlesstest.NewFake(), "1.2.3.4:80")
	if n, err := conn.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read on an empty reply = %d, %v; want io.EOF", n, err)
	}
}

func TestCloseWrite(t *testing.T) {
	fc := vlesstest.NewFake()
	conn := dial(t, fc.Half(), "1.2.3.4:80")
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("no CloseWrite over a carrier that has it")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], wantHeader(t, "1.2.3.4:80")) || !fc.ClosedWrite() {
		t.Errorf("writes = %x, closedWrite = %v; want the header, then CloseWrite", w, fc.ClosedWrite())
	}
	if _, ok := dial(t, vlesstest.NewFake(), "1.2.3.4:80").(interface{ CloseWrite() error }); ok {
		t.Error("CloseWrite offered over a carrier without it")
	}
}

func TestDialErrors(t *testing.T) {
	carrier := &fakeCarrier{err: errors.New("no route")}
	c, err := vlessclient.New(vlessclient.Options{ID: id, Carrier: carrier})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DialStream(context.Background(), protocols.Addr{}); !errors.Is(err, protocols.ErrBadAddr) || carrier.dials != 0 {
		t.Errorf("bad target: %v after %d dials", err, carrier.dials)
	}
	if _, err := c.DialStream(context.Background(), protocols.DomainAddr("x.test", 1)); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("carrier failure: %v", err)
	}
	if _, err := c.DialPacket(context.Background(), protocols.DomainAddr("x.test", 53)); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("DialPacket: %v", err)
	}
}

// TestReadWaitsForWrite: a relay reads and writes at once; a Read that
// wins the race waits for the first Write, so the header still leaves with
// the first payload in one carrier write.
func TestReadWaitsForWrite(t *testing.T) {
	fc := vlesstest.NewFake([]byte("\x00\x00pong"))
	conn := dial(t, fc, "1.2.3.4:80", 5*time.Second)
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		got <- string(b)
	}()
	time.Sleep(30 * time.Millisecond)
	if w := fc.Writes(); len(w) != 0 {
		t.Fatalf("the Read sent %x before the first Write", w)
	}
	conn.Write([]byte("ping"))
	if g := <-got; g != "pong" {
		t.Errorf("read %q", g)
	}
	if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], append(wantHeader(t, "1.2.3.4:80"), "ping"...)) {
		t.Errorf("carrier writes = %x; want header and payload in one write", w)
	}
}

// TestReadWaitEnds: with no Write, the header goes alone after HeaderWait
// (server-first protocols), and Close ends a waiting Read.
func TestReadWaitEnds(t *testing.T) {
	fc := vlesstest.NewFake([]byte("\x00\x00220 smtp ready"))
	conn := dial(t, fc, "1.2.3.4:25", 50*time.Millisecond)
	start := time.Now()
	b := make([]byte, 100)
	n, err := conn.Read(b)
	if err != nil || string(b[:n]) != "220 smtp ready" {
		t.Fatalf("Read = %q, %v", b[:n], err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Errorf("header sent after %v; want about 50ms", d)
	}
	if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], wantHeader(t, "1.2.3.4:25")) {
		t.Errorf("carrier writes = %x; want the header alone", w)
	}

	conn = dial(t, vlesstest.NewFake(), "1.2.3.4:25", time.Minute)
	errc := make(chan error, 1)
	go func() { _, err := conn.Read(b); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	conn.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a Read waiting for the first Write")
	}
}

// TestHeaderRaceWithCloseWrite: a Read that asks for the request header
// while the first Write is sending it, on a tunnel that half-closes right
// after that Write, reads the response. The Read finds the header sent
// and writes nothing; it used to write an empty slice after the
// half-close, which a TLS carrier refuses ("tls: protocol is shutdown"),
// and the tunnel lost its response.
func TestHeaderRaceWithCloseWrite(t *testing.T) {
	ln := nettest.Listen(t)
	served := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- nil
			return
		}
		defer c.Close()
		got, _ := io.ReadAll(c) // until the client half-closes
		served <- got
		c.Write([]byte{0, 0, 'o', 'k'}) // response header: version 0, no addons
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	carrier := nettest.NewLateWriteConn(raw)
	conn := dial(t, carrier, "example.com:443")
	defer conn.Close()
	werr, got, rerr := nettest.WriteCloseWhileReading(conn, carrier, []byte("hi"))
	if werr != nil {
		t.Fatalf("write and half-close: %v", werr)
	}
	if rerr != nil || string(got) != "ok" {
		t.Fatalf("read %q, %v; want the response", got, rerr)
	}
	if want := append(wantHeader(t, "example.com:443"), "hi"...); !bytes.Equal(<-served, want) {
		t.Error("the server did not get the header and payload once")
	}
}
