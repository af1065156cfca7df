package vlessserver_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

var (
	alice = uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811")
	bob   = uuid.MustParse("27848739-7e62-4138-9fd3-098a63964b6b")
	eve   = uuid.MustParse("00000000-0000-4000-8000-00000000beef")
)

func newServer(t *testing.T, opts vlessserver.Options) *vlessserver.Server {
	t.Helper()
	if opts.Users == nil {
		opts.Users = []vlessserver.User{{ID: alice, Email: "alice@example.com"}, {ID: bob}}
	}
	s, err := vlessserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func header(t testing.TB, r vless.RequestHeader) []byte {
	t.Helper()
	b, err := vless.AppendRequest(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tcpTo(id uuid.UUID, target string) vless.RequestHeader {
	a, err := protocols.ParseAddr(target)
	if err != nil {
		panic(err)
	}
	return vless.RequestHeader{ID: id, Command: vless.CommandTCP, Target: a}
}

// handlerFunc adapts a function to tunnel.Handler and counts calls.
type handlerFunc struct {
	mu    sync.Mutex
	calls int
	f     func(ctx context.Context, conn net.Conn, req tunnel.Request) error
}

func (h *handlerFunc) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	if h.f == nil {
		conn.Close()
		return nil
	}
	return h.f(ctx, conn, req)
}

func (h *handlerFunc) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	pc.Close()
	return errors.New("no packets")
}

func (h *handlerFunc) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

func TestNewRefusesBadUsers(t *testing.T) {
	tests := []struct {
		name  string
		users []vlessserver.User
		want  error
		msg   string
	}{
		{"duplicate id", []vlessserver.User{{ID: alice, Email: "a"}, {ID: bob}, {ID: alice, Email: "c"}}, vlessserver.ErrBadUser, "user 2 (c) has the same id as user 0 (a)"},
		{"empty id", []vlessserver.User{{Email: "nobody"}}, vlessserver.ErrBadUser, "empty id"},
		{"duplicate email", []vlessserver.User{{ID: alice, Email: "Al@x"}, {ID: bob, Email: "al@X"}}, vlessserver.ErrBadUser, "same email"},
		{"negative level", []vlessserver.User{{ID: alice, Level: -1}}, vlessserver.ErrBadUser, "level -1"},
		{"vision", []vlessserver.User{{ID: alice, Flow: "xtls-rprx-vision"}}, vlessserver.ErrFlow, `XTLS Vision) is not supported by Portico yet; remove "flow"`},
		{"vision udp443", []vlessserver.User{{ID: alice, Flow: "xtls-rprx-vision-udp443"}}, vlessserver.ErrFlow, "not supported by Portico yet"},
		{"old xtls", []vlessserver.User{{ID: alice, Flow: "xtls-rprx-direct"}}, vlessserver.ErrFlow, "old XTLS"},
		{"unknown flow", []vlessserver.User{{ID: alice, Flow: "fast"}}, vlessserver.ErrFlow, `unknown flow "fast"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vlessserver.New(vlessserver.Options{Users: tt.users})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("New: %v; want %v containing %q", err, tt.want, tt.msg)
			}
			for _, id := range []uuid.UUID{alice, bob} {
				if strings.Contains(err.Error(), id.String()) || strings.Contains(err.Error(), hex.EncodeToString(id[:])) {
					t.Errorf("error %q reveals a user id", err)
				}
			}
		})
	}
	if _, err := vlessserver.New(vlessserver.Options{}); err != nil {
		t.Errorf("New with no users: %v", err)
	}
}

func TestLabel(t *testing.T) {
	l := vlessserver.Label(bob)
	if len(l) != len("user-")+8 || !strings.HasPrefix(l, "user-") || strings.Contains(bob.String(), l[5:]) {
		t.Errorf("Label = %q", l)
	}
	if vlessserver.Label(alice) == l {
		t.Error("two ids share a label")
	}
}

func TestMatch(t *testing.T) {
	s := newServer(t, vlessserver.Options{})
	h := header(t, tcpTo(alice, "1.2.3.4:443"))
	if ok, err := s.Match(h[:5]); ok || err != protocols.ErrNeedMore {
		t.Errorf("short prefix: %v, %v", ok, err)
	}
	if ok, err := s.Match(h); !ok || err != nil {
		t.Errorf("alice: %v, %v", ok, err)
	}
	if ok, err := s.Match(header(t, tcpTo(eve, "1.2.3.4:443"))); ok || !errors.Is(err, vlessserver.ErrUnknownUser) {
		t.Errorf("eve: %v, %v", ok, err)
	}
	if ok, err := s.Match([]byte("GET / HTTP/1.1\r\n")); ok || err != nil {
		t.Errorf("http: %v, %v", ok, err)
	}
	var m protocols.Matcher = s.Match
	_ = m
}

// TestNotProtocol: every way of not being a VLESS request for a known user
// gives ErrNotProtocol, with nothing written, conn open, no handler call.
func TestNotProtocol(t *testing.T) {
	good := header(t, tcpTo(alice, "1.2.3.4:443"))
	boom := errors.New("connection reset by test")
	tests := []struct {
		name    string
		segs    [][]byte
		readErr error
		cause   error
	}{
		{"unknown uuid", [][]byte{header(t, tcpTo(eve, "1.2.3.4:443"))}, nil, vlessserver.ErrUnknownUser},
		{"unknown uuid, first 17 bytes only", [][]byte{header(t, tcpTo(eve, "1.2.3.4:443"))[:17]}, boom, vlessserver.ErrUnknownUser},
		{"version 1", [][]byte{append([]byte{1}, good[1:]...)}, nil, vless.ErrUnknownVersion},
		{"http", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")}, nil, vless.ErrUnknownVersion},
		{"command 7", [][]byte{append(append([]byte(nil), good[:18]...), 7, 1, 187, 1, 1, 2, 3, 4)}, nil, vless.ErrUnsupportedCommand},
		{"bad atyp", [][]byte{append(append([]byte(nil), good[:19]...), 1, 187, 9)}, nil, protocols.ErrBadAddr},
		{"bad addons", [][]byte{append(append([]byte(nil), good[:17]...), 1, 0x0c, 1)}, nil, vless.ErrBadAddons},
		{"truncated then EOF", [][]byte{good[:len(good)-1]}, nil, io.EOF},
		{"nothing then EOF", nil, nil, io.EOF},
		{"truncated then reset", [][]byte{good[:10], good[10:20]}, boom, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, vlessserver.Options{})
			fc := vlesstest.NewFake(tt.segs...)
			fc.ReadErr = tt.readErr
			h := &handlerFunc{}
			err := s.ServeConn(context.Background(), fc.Half(), h)
			if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, tt.cause) {
				t.Fatalf("ServeConn = %v; want ErrNotProtocol and %v", err, tt.cause)
			}
			if w := fc.Writes(); len(w) != 0 {
				t.Errorf("wrote %q before refusing", w)
			}
			if fc.Closed() || fc.ClosedWrite() {
				t.Error("closed a conn it refused as not VLESS")
			}
			if h.Calls() != 0 {
				t.Error("handler called")
			}
		})
	}
}

// TestRefusedCommands: a known user asking for what Portico does not do
// gets a plain error and a closed conn, not a fallback.
func TestRefusedCommands(t *testing.T) {
	vision := tcpTo(bob, "1.2.3.4:443")
	vision.Addons.Flow = vless.FlowVision
	tests := []struct {
		name string
		hdr  vless.RequestHeader
		want error
		msg  string
	}{
		{"mux", vless.RequestHeader{ID: alice, Command: vless.CommandMux}, vlessserver.ErrMux, "vless: mux not supported"},
		{"flow", vision, vlessserver.ErrFlow, `asked for flow "xtls-rprx-vision"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := newServer(t, vlessserver.Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
			fc := vlesstest.NewFake(header(t, tt.hdr))
			h := &handlerFunc{}
			err := s.ServeConn(context.Background(), fc, h)
			if !errors.Is(err, tt.want) || errors.Is(err, protocols.ErrNotProtocol) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("ServeConn = %v; want %v (%q), not ErrNotProtocol", err, tt.want, tt.msg)
			}
			if !fc.Closed() || len(fc.Writes()) != 0 || h.Calls() != 0 {
				t.Errorf("closed=%v writes=%q calls=%d; want closed, no writes, no handler", fc.Closed(), fc.Writes(), h.Calls())
			}
			if !strings.Contains(logs.String(), tt.msg[:10]) {
				t.Errorf("log lacks %q:\n%s", tt.msg, logs.String())
			}
		})
	}
}

// TestTunnel: the handler gets the request, the payload that came with the
// header first, and its first Write carries the response header.
func TestTunnel(t *testing.T) {
	hdr := header(t, tcpTo(alice, "example.com:8443"))
	first := append(append([]byte(nil), hdr...), "hello, "...)
	cases := map[string][][]byte{
		"header with payload":   {first, []byte("world")},
		"header byte by byte":   append(split(hdr), []byte("hello, "), []byte("world")),
		"header cut in the uid": {hdr[:9], append(hdr[9:], "hello, world"...)},
	}
	for name, segs := range cases {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, vlessserver.Options{Inbound: "in-1", Transport: "tls"})
			fc := vlesstest.NewFake(segs...)
			var got []byte
			var req tunnel.Request
			h := &handlerFunc{f: func(ctx context.Context, c net.Conn, r tunnel.Request) error {
				req = r
				var err error
				if got, err = io.ReadAll(c); err != nil {
					return err
				}
				if _, err := c.Write([]byte("pong")); err != nil {
					return err
				}
				if _, err := c.Write([]byte("!")); err != nil {
					return err
				}
				return c.Close()
			}}
			if err := s.ServeConn(context.Background(), fc, h); err != nil {
				t.Fatal(err)
			}
			if string(got) != "hello, world" {
				t.Errorf("payload = %q", got)
			}
			want := tunnel.Request{
				Protocol: "vless", User: "alice@example.com", Network: protocols.NetworkTCP,
				Target:  protocols.Addr{Domain: "example.com", Port: 8443},
				Source:  netip.MustParseAddrPort("192.0.2.7:40000"),
				Inbound: "in-1", Transport: "tls",
			}
			if req != want {
				t.Errorf("request = %+v\nwant %+v", req, want)
			}
			w := fc.Writes()
			if len(w) != 2 || string(w[0]) != "\x00\x00pong" || string(w[1]) != "!" {
				t.Errorf("writes = %q; want the response header coalesced with the first write", w)
			}
			if !fc.Closed() {
				t.Error("conn not closed")
			}
		})
	}
}

func split(b []byte) [][]byte {
	var out [][]byte
	for i := range b {
		out = append(out, b[i:i+1])
	}
	return out
}

// TestResponseAlone: a handler that closes or half-closes without writing
// still sends the response header, alone.
func TestResponseAlone(t *testing.T) {
	for _, half := range []bool{false, true} {
		s := newServer(t, vlessserver.Options{})
		fc := vlesstest.NewFake(header(t, tcpTo(bob, "1.2.3.4:80")))
		var conn net.Conn = fc
		if half {
			conn = fc.Half()
		}
		h := &handlerFunc{f: func(ctx context.Context, c net.Conn, r tunnel.Request) error {
			if r.User != vlessserver.Label(bob) {
				t.Errorf("user = %q, want the label", r.User)
			}
			if half {
				if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					return err
				}
			} else if _, ok := c.(interface{ CloseWrite() error }); ok {
				t.Error("conn offers CloseWrite over a carrier without it")
			}
			return c.Close()
		}}
		if err := s.ServeConn(context.Background(), conn, h); err != nil {
			t.Fatal(err)
		}
		if w := fc.Writes(); len(w) != 1 || !bytes.Equal(w[0], []byte{0, 0}) {
			t.Errorf("half=%v: writes = %q; want the 2-byte response alone", half, w)
		}
		if fc.ClosedWrite() != half || !fc.Closed() {
			t.Errorf("half=%v: closedWrite=%v closed=%v", half, fc.ClosedWrite(), fc.Closed())
		}
	}
}

// TestCloseDuringBlockedWrite: Close must not wait for a Write stuck on the
// carrier; that is how relays unblock writers.
func TestCloseDuringBlockedWrite(t *testing.T) {
	s := newServer(t, vlessserver.Options{})
	fc := vlesstest.NewFake(header(t, tcpTo(alice, "1.2.3.4:80")))
	fc.BlockWrites = make(chan struct{})
	h := &handlerFunc{f: func(ctx context.Context, c net.Conn, r tunnel.Request) error {
		done := make(chan error, 1)
		go func() { _, err := c.Write([]byte("x")); done <- err }()
		time.Sleep(20 * time.Millisecond) // let the Write take the lock and block
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
			t.Error("Close blocked behind a stuck Write")
			close(fc.BlockWrites)
		}
		if err := <-done; err == nil {
			t.Error("the stuck Write succeeded after Close")
		}
		return nil
	}}
	if err := s.ServeConn(context.Background(), fc, h); err != nil {
		t.Fatal(err)
	}
}

func TestSetUsers(t *testing.T) {
	s := newServer(t, vlessserver.Options{})
	if err := s.SetUsers([]vlessserver.User{{ID: eve, Email: "eve"}, {ID: eve}}); !errors.Is(err, vlessserver.ErrBadUser) {
		t.Fatalf("SetUsers with a duplicate: %v", err)
	}
	if ok, _ := s.Match(header(t, tcpTo(alice, "1.2.3.4:1"))); !ok {
		t.Fatal("a failed SetUsers dropped the old users")
	}
	if err := s.SetUsers([]vlessserver.User{{ID: eve, Email: "eve"}}); err != nil {
		t.Fatal(err)
	}
	err := s.ServeConn(context.Background(), vlesstest.NewFake(header(t, tcpTo(alice, "1.2.3.4:1"))), &handlerFunc{})
	if !errors.Is(err, vlessserver.ErrUnknownUser) {
		t.Errorf("removed user: %v", err)
	}
	var user string
	h := &handlerFunc{f: func(ctx context.Context, c net.Conn, r tunnel.Request) error { user = r.User; return c.Close() }}
	if err := s.ServeConn(context.Background(), vlesstest.NewFake(header(t, tcpTo(eve, "1.2.3.4:1"))), h); err != nil || user != "eve" {
		t.Errorf("new user: %v, %q", err, user)
	}
}

// TestSetUsersConcurrent runs SetUsers against Match and ServeConn (for -race).
func TestSetUsersConcurrent(t *testing.T) {
	s := newServer(t, vlessserver.Options{})
	hdr := header(t, tcpTo(alice, "1.2.3.4:1"))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			s.SetUsers([]vlessserver.User{{ID: alice}, {ID: uuid.New()}})
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			if ok, _ := s.Match(hdr); !ok {
				t.Error("alice vanished")
				return
			}
			s.ServeConn(context.Background(), vlesstest.NewFake(hdr), &handlerFunc{})
		}
	}()
	wg.Wait()
}

// TestHonoursDeadline: ServeConn sets no deadline of its own but stops at
// the caller's, with ErrNotProtocol, writing nothing.
func TestHonoursDeadline(t *testing.T) {
	s := newServer(t, vlessserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cl.Write(header(t, tcpTo(alice, "1.2.3.4:1"))[:20]) // a known user, then silence
	sc.SetDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	err = s.ServeConn(context.Background(), sc, &handlerFunc{})
	if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ServeConn = %v; want ErrNotProtocol and the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	cl.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := cl.Read(make([]byte, 10)); n != 0 {
		t.Errorf("server wrote %d bytes", n)
	}
}

func TestCanceledContext(t *testing.T) {
	s := newServer(t, vlessserver.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fc := vlesstest.NewFake(header(t, tcpTo(alice, "1.2.3.4:1")))
	h := &handlerFunc{}
	if err := s.ServeConn(ctx, fc, h); !errors.Is(err, context.Canceled) || errors.Is(err, protocols.ErrNotProtocol) {
		t.Errorf("ServeConn = %v", err)
	}
	if !fc.Closed() || len(fc.Writes()) != 0 || h.Calls() != 0 {
		t.Error("a canceled ServeConn must close conn, write nothing, call no handler")
	}
}

// TestLogsHideIDs: whatever happens, the logs name users by email or
// label, never by id.
func TestLogsHideIDs(t *testing.T) {
	var logs bytes.Buffer
	s := newServer(t, vlessserver.Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	udp := tcpTo(bob, "8.8.8.8:53")

	for _, h := range []vless.RequestHeader{tcpTo(alice, "1.2.3.4:1"), tcpTo(bob, "1.2.3.4:1"), tcpTo(eve, "1.2.3.4:1"), udp, {ID: bob, Command: vless.CommandMux}} {
		s.ServeConn(context.Background(), vlesstest.NewFake(header(t, h)), &handlerFunc{})
	}
	out := logs.String()
	if !strings.Contains(out, vlessserver.Label(bob)) || !strings.Contains(out, "alice@example.com") {
		t.Errorf("logs do not name the users:\n%s", out)
	}
	for _, id := range []uuid.UUID{alice, bob, eve} {
		if strings.Contains(out, id.String()) || strings.Contains(out, hex.EncodeToString(id[:])) {
			t.Errorf("logs reveal id %v:\n%s", id, out)
		}
	}
}
