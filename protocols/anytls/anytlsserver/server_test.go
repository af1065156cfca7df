package anytlsserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-gw/portico/internal/prototest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
	"github.com/portico-gw/portico/protocols/anytls/session"
	"github.com/portico-gw/portico/protocols/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests speak to the server as a scripted client: every byte they
// send is built by hand from the spec's layouts (anytlstest.Frame writes
// cmd, a big-endian stream id and length, and the data), not by the
// package's encoder, and every reply is decoded by hand.

const (
	alicePassword = "correct horse battery staple"
	defaultMD5    = "75cff2ad89aadf5e257059ee571ebe11" // md5 of the spec's default scheme
)

var alice = anytlsserver.User{Password: alicePassword, Email: "alice@example.com", Level: 1}

// authBytes is sha256(password) ‖ u16 padding length ‖ zeros.
func authBytes(password string, padding int) []byte {
	sum := sha256.Sum256([]byte(password))
	b := append(sum[:], byte(padding>>8), byte(padding))
	return append(b, make([]byte, padding)...)
}

func settings(v, md5 string) []byte {
	return anytlstest.Frame(4, 0, "v="+v+"\nclient=scripted/1\npadding-md5="+md5)
}

// ipv4Target is the SOCKS address atyp 1, the IPv4 bytes, the port.
func ipv4Target(ap netip.AddrPort) string {
	ip := ap.Addr().As4()
	return string([]byte{1, ip[0], ip[1], ip[2], ip[3], byte(ap.Port() >> 8), byte(ap.Port())})
}

func domainTarget(name string, port uint16) string {
	return string(append(append([]byte{3, byte(len(name))}, name...), byte(port>>8), byte(port)))
}

type env struct {
	srv     *anytlsserver.Server
	ln      *anytlstest.Listener
	errs    <-chan error
	handler *anytlstest.RelayHandler
	cert    anytlstest.Cert
}

func newEnv(t *testing.T, opts anytlsserver.Options, h tunnel.Handler) *env {
	t.Helper()
	if opts.Users == nil {
		opts.Users = []anytlsserver.User{alice}
	}
	srv, err := anytlsserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{srv: srv, cert: anytlstest.SelfSigned(t), handler: new(anytlstest.RelayHandler)}
	if h == nil {
		h = e.handler
	}
	e.ln = anytlstest.Listen(t, e.cert.ServerTLS())
	e.errs, _ = anytlstest.Serve(t, e.ln, srv, h)
	return e
}

// raw is a scripted client over a real TLS connection.
type raw struct {
	t *testing.T
	c net.Conn
}

func (e *env) dial(t *testing.T) *raw {
	t.Helper()
	c, err := tls.Dial("tcp", e.ln.Addr().String(), e.cert.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, c: c}
}

// send writes the parts in one write.
func (r *raw) send(parts ...[]byte) {
	r.t.Helper()
	if _, err := r.c.Write(bytes.Join(parts, nil)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) next() anytlstest.RawFrame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := anytlstest.ReadRawFrame(r.c)
	if err != nil {
		r.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func (r *raw) expect(cmd byte, stream uint32, data string) {
	r.t.Helper()
	f := r.next()
	if f.Cmd != cmd || f.Stream != stream || string(f.Data) != data {
		r.t.Fatalf("got cmd %d stream %d %q; want cmd %d stream %d %q", f.Cmd, f.Stream, f.Data, cmd, stream, data)
	}
}

func (r *raw) expectEOF() {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(r.c)
	if len(b) != 0 || (err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset")) {
		r.t.Fatalf("after the session should end: %x, %v", b, err)
	}
}

// Commands, as the spec numbers them.
const (
	cmdWaste, cmdSYN, cmdPSH, cmdFIN, cmdSettings, cmdAlert, cmdUpdatePaddingScheme = 0, 1, 2, 3, 4, 5, 6
	cmdSYNACK, cmdHeartRequest, cmdHeartResponse, cmdServerSettings                 = 7, 8, 9, 10
)

// TestSYNBeforeSettings: "对于一个新 Session，如果服务器在收到客户端的
// cmdSettings 之前收到 cmdSYN，必须拒绝此次会话" — cmdAlert, then close.
func TestSYNBeforeSettings(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), anytlstest.Frame(cmdSYN, 1, ""))
	r.expect(cmdAlert, 0, "client did not send its settings")
	r.expectEOF()
	if err := <-e.errs; !errors.Is(err, session.ErrNoSettings) {
		t.Errorf("ServeConn = %v, want ErrNoSettings", err)
	}
}

// TestSynAckDialFailure: the outbound dial's error travels in cmdSYNACK,
// then the stream is closed with cmdFIN.
func TestSynAckDialFailure(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	closed := closedPort(t)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, ipv4Target(closed)))
	r.expect(cmdServerSettings, 0, "v=2")
	f := r.next()
	if f.Cmd != cmdSYNACK || f.Stream != 1 || !strings.Contains(string(f.Data), "refused") {
		t.Fatalf("got cmd %d stream %d %q; want cmdSYNACK 1 with the dial error", f.Cmd, f.Stream, f.Data)
	}
	r.expect(cmdFIN, 1, "")
	// The session lives on: a heartbeat is still answered.
	r.send(anytlstest.Frame(cmdHeartRequest, 0, ""))
	r.expect(cmdHeartResponse, 0, "")
}

// TestSynAckSuccess: an empty cmdSYNACK, then the echoed data. The
// client's cmdFIN ends the stream both ways; as in anytls-go, the server
// does not answer it with a cmdFIN of its own.
func TestSynAckSuccess(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	echo := anytlstest.Echo(t)
	ap, _ := echo.AddrPort()
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, ipv4Target(ap)+"hello"))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, "")
	r.expect(cmdPSH, 1, "hello")
	r.send(anytlstest.Frame(cmdFIN, 1, ""))
	anytlstest.Eventually(t, 5*time.Second, "handler done", func() bool { return e.handler.Active.Load() == 0 })
	r.send(anytlstest.Frame(cmdHeartRequest, 0, ""))
	r.expect(cmdHeartResponse, 0, "")
	reqs := e.handler.Requests()
	if len(reqs) != 1 || reqs[0].Target != echo || reqs[0].User != "alice@example.com" || reqs[0].Network != protocols.NetworkTCP {
		t.Errorf("requests = %+v", reqs)
	}
}

// TestHeartbeat: "任意一方收到 cmdHeartRequest 后，应向对方发送
// cmdHeartResponse".
func TestHeartbeat(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 0), settings("2", defaultMD5), anytlstest.Frame(cmdHeartRequest, 0, ""))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdHeartResponse, 0, "")
	r.send(anytlstest.Frame(cmdHeartRequest, 7, ""))
	r.expect(cmdHeartResponse, 7, "")
}

// TestUpdatePaddingScheme: a client whose padding-md5 differs gets the
// server's scheme; one whose md5 matches gets nothing.
func TestUpdatePaddingScheme(t *testing.T) {
	const scheme = "stop=3\n0=9-9\n1=200-200\n2=20-20,40-40"
	sum := "3b333f3f77d056c8067c4786aefb4283" // md5 of scheme, computed with md5sum
	e := newEnv(t, anytlsserver.Options{PaddingScheme: scheme}, nil)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5))
	r.expect(cmdUpdatePaddingScheme, 0, scheme)
	r.expect(cmdServerSettings, 0, "v=2")

	r2 := e.dial(t)
	r2.send(authBytes(alicePassword, 9), settings("2", sum), anytlstest.Frame(cmdHeartRequest, 0, ""))
	r2.expect(cmdServerSettings, 0, "v=2")
	r2.expect(cmdHeartResponse, 0, "") // no cmdUpdatePaddingScheme in between

	// A client that sends no md5 at all is told too.
	r3 := e.dial(t)
	r3.send(authBytes(alicePassword, 9), anytlstest.Frame(cmdSettings, 0, "v=2"))
	r3.expect(cmdUpdatePaddingScheme, 0, scheme)
}

// TestVersionNegotiation: a v1 client gets no cmdServerSettings and no
// cmdSYNACK; a v2 client gets both.
func TestVersionNegotiation(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	echo := anytlstest.Echo(t)
	ap, _ := echo.AddrPort()

	v1 := e.dial(t)
	v1.send(authBytes(alicePassword, 30), settings("1", defaultMD5), anytlstest.Frame(cmdHeartRequest, 0, ""))
	v1.expect(cmdHeartResponse, 0, "") // first frame: no cmdServerSettings before it
	v1.send(anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, ipv4Target(ap)+"v1"))
	v1.expect(cmdPSH, 1, "v1") // no cmdSYNACK before the data

	v2 := e.dial(t)
	v2.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdHeartRequest, 0, ""))
	v2.expect(cmdServerSettings, 0, "v=2")
	v2.expect(cmdHeartResponse, 0, "")
	v2.send(anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, ipv4Target(ap)+"v2"))
	v2.expect(cmdSYNACK, 1, "")
	v2.expect(cmdPSH, 1, "v2")

	// A future version is treated as v2 (v >= 2).
	v3 := e.dial(t)
	v3.send(authBytes(alicePassword, 30), settings("3", defaultMD5))
	v3.expect(cmdServerSettings, 0, "v=2")
}

// TestUoTVersion1Refused: a stream to udp-over-tcp version 1's magic
// address gets the cmdSYNACK error, and the handler is not called.
func TestUoTVersion1Refused(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, domainTarget("sp.udp-over-tcp.arpa", 0)))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, anytlsserver.ErrUDP.Error())
	r.expect(cmdFIN, 1, "")
	if n := len(e.handler.Requests()); n != 0 {
		t.Errorf("handler called %d times", n)
	}
}

// TestUoTConnect: a sing-box udp-over-tcp v2 stream, written from its
// layout by hand: the magic target, then the request (isConnect 1 and a
// SOCKS-layout destination), then length-prefixed datagrams. The server
// acknowledges at once, hands the datagrams to the handler's packet path
// (here a loopback UDP echo) and frames the replies the same way.
func TestUoTConnect(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	echo := prototest.UDPEcho(t)
	ip := echo.IP.As4()
	request := []byte{1, 1, ip[0], ip[1], ip[2], ip[3], byte(echo.Port >> 8), byte(echo.Port)}
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""),
		anytlstest.Frame(cmdPSH, 1, domainTarget("sp.v2.udp-over-tcp.arpa", 0)),
		anytlstest.Frame(cmdPSH, 1, string(request)+"\x00\x05hello"))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, "")
	r.expect(cmdPSH, 1, "\x00\x05hello")
	r.send(anytlstest.Frame(cmdPSH, 1, "\x00\x03bye"))
	r.expect(cmdPSH, 1, "\x00\x03bye")
	reqs := e.handler.Requests()
	if len(reqs) != 1 || reqs[0].Network != protocols.NetworkUDP || reqs[0].Target != echo {
		t.Fatalf("handler saw %+v, want one UDP request for %v", reqs, echo)
	}
}

// TestUoTPerPacketAddress: without connect mode each datagram names its
// address in udp-over-tcp's own layout (IPv4 is 0x00 here, where the
// request's SOCKS layout says 0x01), and each reply names its source.
func TestUoTPerPacketAddress(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	echo := prototest.UDPEcho(t)
	ip := echo.IP.As4()
	port := []byte{byte(echo.Port >> 8), byte(echo.Port)}
	request := append([]byte{0, 1, ip[0], ip[1], ip[2], ip[3]}, port...)
	addr := append([]byte{0, ip[0], ip[1], ip[2], ip[3]}, port...)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""),
		anytlstest.Frame(cmdPSH, 1, domainTarget("sp.v2.udp-over-tcp.arpa", 0)),
		anytlstest.Frame(cmdPSH, 1, string(request)+string(addr)+"\x00\x04ping"))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, "")
	r.expect(cmdPSH, 1, string(addr)+"\x00\x04ping")
}

// TestWasteAndUnknown: cmdWaste and commands the server does not know are
// read and dropped, data and all.
func TestWasteAndUnknown(t *testing.T) {
	e := newEnv(t, anytlsserver.Options{}, nil)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30),
		anytlstest.Frame(cmdWaste, 0, strings.Repeat("\x00", 500)),
		settings("2", defaultMD5),
		anytlstest.Frame(42, 3, "future command with data"),
		anytlstest.Frame(cmdServerSettings, 0, "v=9"), // a server-only command: dropped
		anytlstest.Frame(cmdWaste, 0, ""),
		anytlstest.Frame(cmdHeartRequest, 0, ""))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdHeartResponse, 0, "")
}

// TestMaxStreams: past the limit a stream is refused (cmdSYNACK error,
// cmdFIN), counted, and warned about once per interval however many there
// are; the session lives on and takes a stream again once one ends.
func TestMaxStreams(t *testing.T) {
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	defer release()
	h := handlerFunc(func(ctx context.Context, c net.Conn, req tunnel.Request) error {
		c.(tunnel.DialReporter).ReportDial(nil)
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return c.Close()
	})
	logs := &lockedBuffer{}
	e := newEnv(t, anytlsserver.Options{MaxStreams: 1, Log: slog.New(slog.NewTextHandler(logs, nil))}, h)
	r := e.dial(t)
	target := ipv4Target(netip.MustParseAddrPort("192.0.2.1:80"))
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, target))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, "")
	const refused = 200
	for id := uint32(2); id < 2+refused; id++ {
		r.send(anytlstest.Frame(cmdSYN, id, ""), anytlstest.Frame(cmdPSH, id, target))
		r.expect(cmdSYNACK, id, "anytls: too many streams on this session")
		r.expect(cmdFIN, id, "")
	}
	if n := e.srv.RefusedStreams(); n != refused {
		t.Errorf("RefusedStreams = %d, want %d", n, refused)
	}
	if n := strings.Count(logs.String(), "streams refused"); n != 1 {
		t.Errorf("%d warnings for %d refusals in a burst, want 1:\n%s", n, refused, logs.String())
	}
	release()
	r.expect(cmdFIN, 1, "")
	// The session goes on: a new stream fits again.
	next := uint32(2 + refused)
	r.send(anytlstest.Frame(cmdSYN, next, ""), anytlstest.Frame(cmdPSH, next, target))
	r.expect(cmdSYNACK, next, "")
	r.expect(cmdFIN, next, "")
}

type handlerFunc func(ctx context.Context, c net.Conn, req tunnel.Request) error

func (f handlerFunc) HandleStream(ctx context.Context, c net.Conn, req tunnel.Request) error {
	return f(ctx, c, req)
}

func (f handlerFunc) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	pc.Close()
	return errors.New("no packets")
}

// TestHandlerClosesWithoutReport: a handler that fails its dial and just
// closes the stream still gets the error to the client (in cmdSYNACK,
// before cmdFIN).
func TestHandlerClosesWithoutReport(t *testing.T) {
	h := handlerFunc(func(ctx context.Context, c net.Conn, req tunnel.Request) error {
		c.Close()
		return errors.New("blocked by policy")
	})
	e := newEnv(t, anytlsserver.Options{}, h)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, domainTarget("example.com", 443)))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, "blocked by policy")
	r.expect(cmdFIN, 1, "")
}

// TestRequest checks every field the handler receives.
func TestRequest(t *testing.T) {
	got := make(chan tunnel.Request, 2)
	h := handlerFunc(func(ctx context.Context, c net.Conn, req tunnel.Request) error {
		got <- req
		c.(tunnel.DialReporter).ReportDial(nil)
		return c.Close()
	})
	bob := anytlsserver.User{Password: "bob's password"}
	e := newEnv(t, anytlsserver.Options{Users: []anytlsserver.User{alice, bob}, Inbound: "in-anytls", Transport: "tls"}, h)
	r := e.dial(t)
	r.send(authBytes("bob's password", 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 5, ""), anytlstest.Frame(cmdPSH, 5, domainTarget("example.com", 443)))
	req := <-got
	local := r.c.LocalAddr().(*net.TCPAddr).AddrPort()
	want := tunnel.Request{Protocol: "anytls", User: anytlsserver.Label("bob's password"), Network: protocols.NetworkTCP,
		Target: protocols.Addr{Domain: "example.com", Port: 443}, Source: local, Inbound: "in-anytls", Transport: "tls"}
	if req != want {
		t.Errorf("request = %+v\nwant %+v", req, want)
	}
	if !strings.HasPrefix(req.User, "user-") || len(req.User) != 13 || strings.Contains(req.User, hex.EncodeToString(authBytes("bob's password", 0)[:4])) {
		t.Errorf("label %q", req.User)
	}
}

// TestNotProtocol: what is not an authentication for a user comes back as
// ErrNotProtocol, with nothing written and the conn open.
func TestNotProtocol(t *testing.T) {
	srv, err := anytlsserver.New(anytlsserver.Options{Users: []anytlsserver.User{alice}})
	if err != nil {
		t.Fatal(err)
	}
	good := authBytes(alicePassword, 30)
	wrong := authBytes("wrong", 30)
	tests := []struct {
		name  string
		segs  [][]byte
		cause error
		msg   string
	}{
		{"unknown hash", [][]byte{wrong}, anytlsserver.ErrUnknownUser, "not the SHA-256"},
		{"unknown hash, decided at byte 32", [][]byte{wrong[:32]}, anytlsserver.ErrUnknownUser, ""},
		{"HTTP", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")}, anytlsserver.ErrUnknownUser, ""},
		{"ends before 32", [][]byte{good[:20]}, io.EOF, "20 bytes into the authentication"},
		{"ends in the length", [][]byte{good[:33]}, io.EOF, "33 bytes"},
		{"ends in padding0", [][]byte{good[:40]}, io.EOF, "short of its 30-byte padding0"},
		{"padding0 longer than sent", [][]byte{append(authBytes(alicePassword, 0)[:32], 0xff, 0xff, 1, 2, 3)}, io.EOF, "65535-byte padding0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFake(tt.segs...)
			err := srv.ServeConn(context.Background(), c, new(anytlstest.RelayHandler))
			if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, tt.cause) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("ServeConn = %v; want ErrNotProtocol and %v (%q)", err, tt.cause, tt.msg)
			}
			if c.wrote() != 0 || c.isClosed() || c.cleared {
				t.Errorf("wrote %d bytes, closed %v, deadline cleared %v", c.wrote(), c.isClosed(), c.cleared)
			}
			sum := sha256.Sum256([]byte("wrong"))
			if strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
				t.Errorf("error names the hash: %v", err)
			}
		})
	}
	// The authentication in many small reads (a gateway replaying what it
	// peeked, then the rest), and a session frame in the last one.
	var segs [][]byte
	for _, b := range append(bytes.Clone(good), settings("2", defaultMD5)...) {
		segs = append(segs, []byte{b})
	}
	c := newFake(segs...)
	if err := srv.ServeConn(context.Background(), c, new(anytlstest.RelayHandler)); err != nil || !c.isClosed() || !c.cleared {
		t.Fatalf("split authentication: %v, closed %v, handshake deadline cleared %v", err, c.isClosed(), c.cleared)
	}
	if w := c.writes(); !bytes.Equal(w, anytlstest.Frame(cmdServerSettings, 0, "v=2")) {
		t.Errorf("wrote %q, want cmdServerSettings", w)
	}
	// A padding0 of 65535 bytes, in one read.
	big := append(authBytes(alicePassword, 65535), settings("2", defaultMD5)...)
	c = newFake(big)
	if err := srv.ServeConn(context.Background(), c, new(anytlstest.RelayHandler)); err != nil {
		t.Fatalf("65535-byte padding0: %v", err)
	}
}

func TestServeConnContext(t *testing.T) {
	srv, _ := anytlsserver.New(anytlsserver.Options{Users: []anytlsserver.User{alice}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := newFake(authBytes(alicePassword, 30))
	if err := srv.ServeConn(ctx, c, new(anytlstest.RelayHandler)); !errors.Is(err, context.Canceled) || !c.isClosed() {
		t.Errorf("cancelled ctx: %v, closed %v", err, c.isClosed())
	}
	// Cancelling during the session ends it.
	cc, sc := net.Pipe()
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, sc, new(anytlstest.RelayHandler)) }()
	go io.Copy(io.Discard, cc)
	cc.Write(append(authBytes(alicePassword, 30), settings("2", defaultMD5)...))
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ServeConn after cancel = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end the session")
	}
	cc.Close()
}

func TestMatch(t *testing.T) {
	srv, _ := anytlsserver.New(anytlsserver.Options{Users: []anytlsserver.User{alice}})
	good := authBytes(alicePassword, 30)
	for i := range 32 {
		if ok, err := srv.Match(good[:i]); ok || err != protocols.ErrNeedMore {
			t.Fatalf("Match(%d bytes) = %v, %v", i, ok, err)
		}
	}
	if ok, err := srv.Match(good[:32]); !ok || err != nil {
		t.Errorf("Match(known) = %v, %v", ok, err)
	}
	wrong := authBytes("nope", 0)
	ok, err := srv.Match(wrong)
	if ok || !errors.Is(err, anytlsserver.ErrUnknownUser) || strings.Contains(err.Error(), hex.EncodeToString(wrong[:32])) {
		t.Errorf("Match(unknown) = %v, %v", ok, err)
	}
	// SetUsers takes effect at once.
	if err := srv.SetUsers([]anytlsserver.User{{Password: "nope"}}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := srv.Match(wrong); !ok {
		t.Error("new user not matched")
	}
	if ok, _ := srv.Match(good); ok {
		t.Error("removed user still matched")
	}
}

func TestUsers(t *testing.T) {
	tests := []struct {
		users []anytlsserver.User
		msg   string
	}{
		{[]anytlsserver.User{{Password: ""}}, "empty password"},
		{[]anytlsserver.User{{Password: "a"}, {Password: "a", Email: "x"}}, "same password as user 0"},
		{[]anytlsserver.User{{Password: "a", Email: "A@x"}, {Password: "b", Email: "a@X"}}, "same email"},
		{[]anytlsserver.User{{Password: "a", Level: -1}}, "level -1"},
	}
	for _, tt := range tests {
		_, err := anytlsserver.New(anytlsserver.Options{Users: tt.users})
		if !errors.Is(err, anytlsserver.ErrBadUser) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("New(%+v) = %v, want %q", tt.users, err, tt.msg)
		}
		if strings.Contains(fmtErr(err), "\"a\"") {
			t.Errorf("error shows a password: %v", err)
		}
	}
	srv, _ := anytlsserver.New(anytlsserver.Options{Users: []anytlsserver.User{alice}})
	if err := srv.SetUsers([]anytlsserver.User{{Password: ""}}); err == nil {
		t.Error("SetUsers accepted an empty password")
	}
	if ok, _ := srv.Match(authBytes(alicePassword, 0)); !ok {
		t.Error("a failed SetUsers dropped the old users")
	}
	if _, err := anytlsserver.New(anytlsserver.Options{PaddingScheme: "stop=x"}); err == nil || !strings.Contains(err.Error(), "paddingScheme") {
		t.Errorf("bad scheme: %v", err)
	}
	s, _ := anytlsserver.New(anytlsserver.Options{PaddingScheme: "stop=2\n0=1-1"})
	if s.PaddingScheme().Raw() != "stop=2\n0=1-1" {
		t.Error("scheme not kept")
	}
	if l := anytlsserver.Label("x"); l != anytlsserver.Label("x") || l == anytlsserver.Label("y") || len(l) != 13 {
		t.Errorf("Label = %q", l)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestLogsNoSecrets: nothing the server logs holds a password or its hash.
func TestLogsNoSecrets(t *testing.T) {
	var buf lockedBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEnv(t, anytlsserver.Options{Log: log}, nil)
	r := e.dial(t)
	r.send(authBytes(alicePassword, 30), settings("2", defaultMD5), anytlstest.Frame(cmdSYN, 1, ""), anytlstest.Frame(cmdPSH, 1, domainTarget("sp.udp-over-tcp.arpa", 0)))
	r.expect(cmdServerSettings, 0, "v=2")
	r.expect(cmdSYNACK, 1, anytlsserver.ErrUDP.Error())
	r2 := e.dial(t)
	r2.send(authBytes("wrong", 30))
	r2.expectEOF()
	r.c.Close()
	<-e.errs
	sum := sha256.Sum256([]byte(alicePassword))
	out := buf.String()
	for _, secret := range []string{alicePassword, hex.EncodeToString(sum[:]), hex.EncodeToString(sum[:8])} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds a secret:\n%s", out)
		}
	}
	if !strings.Contains(out, "alice@example.com") {
		t.Errorf("log lacks the user:\n%s", out)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

// fake is a scripted conn: reads return segs one by one, then EOF; writes
// are recorded.
type fake struct {
	mu      sync.Mutex
	segs    [][]byte
	out     bytes.Buffer
	closed  bool
	cleared bool // SetDeadline(zero) was called
}

func newFake(segs ...[]byte) *fake { return &fake{segs: segs} }

func (f *fake) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	for len(f.segs) > 0 && len(f.segs[0]) == 0 {
		f.segs = f.segs[1:]
	}
	if len(f.segs) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.segs[0])
	f.segs[0] = f.segs[0][n:]
	return n, nil
}

func (f *fake) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	return f.out.Write(p)
}

func (f *fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fake) wrote() int     { f.mu.Lock(); defer f.mu.Unlock(); return f.out.Len() }
func (f *fake) writes() []byte { f.mu.Lock(); defer f.mu.Unlock(); return bytes.Clone(f.out.Bytes()) }
func (f *fake) isClosed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.closed }
func (f *fake) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}
}
func (f *fake) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
}
func (f *fake) SetDeadline(t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleared = f.cleared || t.IsZero()
	return nil
}
func (f *fake) SetReadDeadline(time.Time) error  { return nil }
func (f *fake) SetWriteDeadline(time.Time) error { return nil }
