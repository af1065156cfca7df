package vmessclient_test

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

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmesstest"
	"github.com/portico-gw/portico/protocols/vmess/vmessclient"
)

var (
	id     = uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811")
	target = protocols.Addr{Domain: "example.com", Port: 443}
)

const t0 = 1700000000

func fixedNow() time.Time { return time.Unix(t0, 0) }

func newClient(t *testing.T, opts vmessclient.Options) (*vmessclient.Client, *vmesstest.FakeDialer) {
	t.Helper()
	d := &vmesstest.FakeDialer{}
	if opts.ID == (uuid.UUID{}) {
		opts.ID = id
	}
	opts.Carrier, opts.Now = d, fixedNow
	if opts.HeaderWait == 0 {
		opts.HeaderWait = -1
	}
	c, err := vmessclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, d
}

// openRequest plays the server: it opens the request in b, whatever its
// header form, and returns it with the rest of b.
func openRequest(t *testing.T, b []byte, alterID int) (vmess.Request, bool, int64, int, []byte) {
	t.Helper()
	key := vmess.NewUserKey(id)
	if ts, _, ok := key.OpenAuthID(b); ok {
		r, n, err := vmess.OpenAEADRequest(key, b)
		if err != nil {
			t.Fatal(err)
		}
		return r, false, ts, -1, b[n:]
	}
	ids := append([][16]byte{id}, vmess.AlterIDs(id, alterID)...)
	for ts := int64(t0 - 40); ts <= t0+40; ts++ {
		for i, x := range ids {
			if a := vmess.LegacyAuth(x, ts); bytes.Equal(a[:], b[:16]) {
				r, n, err := vmess.OpenLegacyRequest(key.CmdKey, ts, b[16:])
				if err != nil {
					t.Fatal(err)
				}
				return r, true, ts, i - 1, b[16+n:]
			}
		}
	}
	t.Fatal("no id signs this header")
	return vmess.Request{}, false, 0, 0, nil
}

func TestNew(t *testing.T) {
	carrier := &vmesstest.FakeDialer{}
	for _, tt := range []struct {
		opts vmessclient.Options
		msg  string
	}{
		{vmessclient.Options{Carrier: carrier}, "no id"},
		{vmessclient.Options{ID: id}, "no carrier"},
		{vmessclient.Options{ID: id, Carrier: carrier, Security: "aes-256-gcm"}, `unknown security "aes-256-gcm"`},
		{vmessclient.Options{ID: id, Carrier: carrier, Security: "aes-128-cfb"}, "not offered by V2Ray clients"},
		{vmessclient.Options{ID: id, Carrier: carrier, AlterID: 70000}, "alterId 70000 is outside 0..65535"},
	} {
		if _, err := vmessclient.New(tt.opts); !errors.Is(err, vmessclient.ErrOptions) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("New(%+v) = %v; want ErrOptions containing %q", tt.opts, err, tt.msg)
		}
	}
	c, _ := newClient(t, vmessclient.Options{})
	if _, err := c.DialPacket(context.Background(), target); err != nil {
		t.Errorf("DialPacket: %v", err)
	}
}

// TestFirstWrite: the header and the first chunk leave in one carrier
// write, with what each security puts on the wire.
func TestFirstWrite(t *testing.T) {
	for _, tt := range []struct {
		security string
		alterID  int
		force    bool
		wire     vmess.Security
		opts     vmess.Option
	}{
		{"aes-128-gcm", 0, false, 3, 0x0d},
		{"chacha20-poly1305", 0, false, 4, 0x0d},
		{"none", 0, false, 5, 0x05},
		{"zero", 0, false, 5, 0x00},
		{"", 0, false, vmess.SecurityAuto.Resolve(), 0x0d},
		{"auto", 4, false, vmess.SecurityAuto.Resolve(), 0x0d},
		{"aes-128-gcm", 0, true, 3, 0x0d},
	} {
		c, d := newClient(t, vmessclient.Options{Security: tt.security, AlterID: tt.alterID, ForceLegacy: tt.force})
		conn, err := c.DialStream(context.Background(), target)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Conns[0].Writes()) != 0 {
			t.Fatal("DialStream wrote")
		}
		if n, err := conn.Write([]byte("hello")); n != 5 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		conn.Write([]byte("world"))
		w := d.Conns[0].Writes()
		if len(w) != 2 {
			t.Fatalf("%d carrier writes", len(w))
		}
		r, legacy, ts, alter, rest := openRequest(t, w[0], tt.alterID)
		if r.Security != tt.wire || r.Options != tt.opts || r.Command != vmess.CommandTCP || r.Target != target {
			t.Errorf("%s: request %v %#02x %v %v", tt.security, r.Security, byte(r.Options), r.Command, r.Target)
		}
		if legacy != (tt.alterID > 0 || tt.force) {
			t.Errorf("%s alterId %d force %v: legacy header %v", tt.security, tt.alterID, tt.force, legacy)
		}
		switch {
		case !legacy && ts != t0:
			t.Errorf("AuthID time %d, want exactly %d", ts, t0)
		case legacy && (ts < t0-30 || ts > t0+30):
			t.Errorf("legacy time %d, want within 30 s of %d", ts, t0)
		case tt.alterID > 0 && alter < 0:
			t.Error("alterId > 0 signed with the main id; V2Ray uses an alter id")
		case tt.force && alter != -1:
			t.Error("ForceLegacy with alterId 0 must sign with the main id")
		}
		s := r.Session(legacy)
		o, _ := s.RequestOpener()
		all := append(bytes.Clone(rest), w[1]...)
		var got []byte
		for {
			p, n, err := o.Open(all)
			if err != nil {
				break
			}
			got, all = append(got, p...), all[n:]
		}
		if string(got) != "helloworld" {
			t.Errorf("%s: payload %q", tt.security, got)
		}
	}
}

// TestHeaderAloneAfterWait: a Read before any Write waits HeaderWait for a
// Write, then sends the header alone.
func TestHeaderAloneAfterWait(t *testing.T) {
	c, d := newClient(t, vmessclient.Options{HeaderWait: 50 * time.Millisecond})
	conn, _ := c.DialStream(context.Background(), target)
	start := time.Now()
	_, err := conn.Read(make([]byte, 10)) // the fake carrier then says EOF
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("Read waited %v", waited)
	}
	if !errors.Is(err, vmessclient.ErrNoResponse) || !strings.Contains(err.Error(), "stays silent: check the id, the alterId") {
		t.Errorf("Read = %v", err)
	}
	w := d.Conns[0].Writes()
	if len(w) != 1 {
		t.Fatalf("%d writes", len(w))
	}
	if _, _, _, _, rest := openRequest(t, w[0], 0); len(rest) != 0 {
		t.Errorf("header sent with %d more bytes", len(rest))
	}
	// A Write during the wait carries the header instead.
	c, d = newClient(t, vmessclient.Options{HeaderWait: 5 * time.Second})
	conn, _ = c.DialStream(context.Background(), target)
	go func() { time.Sleep(20 * time.Millisecond); conn.Write([]byte("late")) }()
	start = time.Now()
	conn.Read(make([]byte, 10))
	if time.Since(start) > 2*time.Second {
		t.Error("Read waited for the whole HeaderWait despite a Write")
	}
	if w := d.Conns[0].Writes(); len(w) != 1 {
		t.Errorf("%d writes, want the header with the payload", len(w))
	}
	// Close releases a waiting Read.
	c, _ = newClient(t, vmessclient.Options{HeaderWait: 5 * time.Second})
	conn, _ = c.DialStream(context.Background(), target)
	go func() { time.Sleep(20 * time.Millisecond); conn.Close() }()
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestCloseWriteBeforeWrite(t *testing.T) {
	for _, sec := range []string{"aes-128-gcm", "zero"} {
		c, d := newClient(t, vmessclient.Options{Security: sec})
		conn, _ := c.DialStream(context.Background(), target)
		if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		w := d.Conns[0].Writes()
		if len(w) != 1 {
			t.Fatalf("%s: %d writes", sec, len(w))
		}
		r, legacy, _, _, rest := openRequest(t, w[0], 0)
		s := r.Session(legacy)
		o, _ := s.RequestOpener()
		if sec == "zero" {
			if len(rest) != 0 || !d.Conns[0].ClosedWrite() {
				t.Errorf("zero: %d bytes after the header, carrier half-closed %v", len(rest), d.Conns[0].ClosedWrite())
			}
			continue
		}
		if _, _, err := o.Open(rest); err != io.EOF {
			t.Errorf("%s: after the header: %v, want the end chunk", sec, err)
		}
		if _, err := conn.Write([]byte("x")); err == nil {
			t.Error("Write after CloseWrite")
		}
	}
}

// respond plays a server: it answers the client's request in its first
// write with what respond makes of the session.
func respond(t *testing.T, alterID int, respond func(s *vmess.Session) []byte) (net.Conn, *vmesstest.FakeDialer) {
	t.Helper()
	var conn net.Conn
	d := &vmesstest.FakeDialer{}
	client, err := vmessclient.New(vmessclient.Options{ID: id, AlterID: alterID, Carrier: d, Now: fixedNow, HeaderWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	// The request goes out with the first Write; the answer is scripted
	// onto the fake carrier before the first Read.
	conn, err = client.DialStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("req"))
	r, legacy, _, _, _ := openRequest(t, d.Conns[0].Writes()[0], alterID)
	s := r.Session(legacy)
	d.Conns[0].Segments = [][]byte{respond(&s)}
	return conn, d
}

func TestResponses(t *testing.T) {
	for _, alterID := range []int{0, 4} {
		// A good response, split across reads, with its end chunk.
		conn, _ := respond(t, alterID, func(s *vmess.Session) []byte {
			b, sealer, err := s.AppendResponse(nil, &vmess.Response{Auth: s.ResponseAuth}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return sealer.SealEnd(sealer.Seal(b, []byte("response")))
		})
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "response" {
			t.Errorf("alterId %d: %q, %v", alterID, got, err)
		}
		// A response for another request.
		conn, _ = respond(t, alterID, func(s *vmess.Session) []byte {
			other := *s
			other.ResponseAuth++
			b, _, _ := other.AppendResponse(nil, &vmess.Response{Auth: other.ResponseAuth}, nil)
			return b
		})
		if _, err := conn.Read(make([]byte, 10)); !errors.Is(err, vmess.ErrBadResponse) {
			t.Errorf("alterId %d: wrong V: %v", alterID, err)
		}
		if _, err := conn.Read(make([]byte, 10)); !errors.Is(err, vmess.ErrBadResponse) {
			t.Errorf("alterId %d: error not sticky: %v", alterID, err)
		}
		// Half a response header, then EOF.
		conn, _ = respond(t, alterID, func(s *vmess.Session) []byte {
			b, _, _ := s.AppendResponse(nil, &vmess.Response{Auth: s.ResponseAuth}, nil)
			return b[:len(b)/2]
		})
		if _, err := conn.Read(make([]byte, 10)); !errors.Is(err, vmessclient.ErrNoResponse) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("alterId %d: cut header: %v", alterID, err)
		}
		// A response body cut between chunks reads as the end (V2Ray's
		// server sends no end chunk when the target sent nothing).
		conn, _ = respond(t, alterID, func(s *vmess.Session) []byte {
			b, _, _ := s.AppendResponse(nil, &vmess.Response{Auth: s.ResponseAuth}, nil)
			return b
		})
		if n, err := conn.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("alterId %d: header only: %d, %v", alterID, n, err)
		}
		// Cut inside a chunk.
		conn, _ = respond(t, alterID, func(s *vmess.Session) []byte {
			b, sealer, _ := s.AppendResponse(nil, &vmess.Response{Auth: s.ResponseAuth}, nil)
			b = sealer.Seal(b, []byte("response"))
			return b[:len(b)-2]
		})
		if _, err := io.ReadAll(conn); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("alterId %d: cut chunk: %v", alterID, err)
		}
	}
}

// TestReadAfterCloseWrite: a tunnel whose request went out whole and was
// half-closed before its first Read (a relay's directions run apart, and a
// short request can finish first) still reads its response. The first
// Read asks for the header to go; it has, so nothing is written — it used
// to write again and fail with "write after CloseWrite".
func TestReadAfterCloseWrite(t *testing.T) {
	conn, d := respond(t, 0, func(s *vmess.Session) []byte {
		b, sealer, err := s.AppendResponse(nil, &vmess.Response{Auth: s.ResponseAuth}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sealer.SealEnd(sealer.Seal(b, []byte("response")))
	})
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "response" {
		t.Errorf("read after CloseWrite: %q, %v", got, err)
	}
	if w := d.Conns[0].Writes(); len(w) != 2 {
		t.Errorf("%d carrier writes, want 2 (request with payload, end chunk)", len(w))
	}
}

// TestReadTimeoutNotSticky: a deadline while waiting for the response
// header says what a silent server usually means, and a later Read goes on.
func TestReadTimeoutNotSticky(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c, err := vmessclient.New(vmessclient.Options{ID: id, Carrier: pipeDialer{client}, Now: fixedNow, HeaderWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := c.DialStream(context.Background(), target)
	hdr := make(chan []byte, 1)
	go func() {
		b := make([]byte, 1024)
		n, _ := server.Read(b)
		hdr <- b[:n]
	}()
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = conn.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, vmessclient.ErrNoResponse) || !strings.Contains(err.Error(), "clocks agree within 120 s") {
		t.Fatalf("timeout: %v", err)
	}
	r, legacy, _, _, _ := openRequest(t, <-hdr, 0)
	s := r.Session(legacy)
	b, sealer, _ := s.AppendResponse(nil, &vmess.Response{Auth: s.ResponseAuth}, nil)
	go server.Write(sealer.Seal(b, []byte("late")))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 10)
	n, err := conn.Read(got)
	if err != nil || string(got[:n]) != "late" {
		t.Errorf("after the timeout: %q, %v", got[:n], err)
	}
}

type pipeDialer struct{ c net.Conn }

func (p pipeDialer) DialConn(ctx context.Context) (net.Conn, error) { return p.c, nil }
