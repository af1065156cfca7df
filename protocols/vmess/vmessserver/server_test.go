package vmessserver_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmesstest"
	"github.com/portico-gw/portico/protocols/vmess/vmessclient"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

var (
	alice = uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811") // AEAD
	bob   = uuid.MustParse("27848739-7e62-4138-9fd3-098a63964b6b") // legacy, alterId 4
	eve   = uuid.MustParse("00000000-0000-4000-8000-00000000beef") // nobody
)

const t0 = 1700000000

// clock is a settable Options.Now.
type clock struct{ sec atomic.Int64 }

func newClock() *clock          { c := &clock{}; c.sec.Store(t0); return c }
func (c *clock) Now() time.Time { return time.Unix(c.sec.Load(), 0) }
func (c *clock) add(d int64)    { c.sec.Add(d) }

type fixture struct {
	srv   *vmessserver.Server
	clock *clock
	log   *vmesstest.LogBuffer
}

func newFixture(t *testing.T, opts vmessserver.Options) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), log: new(vmesstest.LogBuffer)}
	if opts.Users == nil {
		opts.Users = []vmessserver.User{{ID: alice, Email: "alice@example.com"}, {ID: bob, AlterID: 4}}
	}
	opts.Now = f.clock.Now
	opts.Log = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := vmessserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = s
	return f
}

var seq byte

// request is a TCP request to 1.2.3.4:443 with fresh keys.
func request(sec vmess.Security) vmess.Request {
	seq++
	wire, opts := vmess.ClientOptions(sec, false)
	r := vmess.Request{Security: wire, Options: opts, Command: vmess.CommandTCP, ResponseAuth: seq,
		Target: protocols.Addr{Domain: "example.com", Port: 443}}
	r.Key[0], r.Key[1], r.IV[0] = seq, byte(time.Now().UnixNano()), seq
	return r
}

// aeadHello is an AEAD header and a first chunk carrying "hello".
func aeadHello(t testing.TB, id uuid.UUID, ts int64, r vmess.Request) []byte {
	t.Helper()
	b, err := vmess.AppendAEADRequest(nil, vmess.NewUserKey(id), vmess.AEADSeed{Time: ts, AuthRand: [4]byte{r.Key[0], r.Key[1], 3, 4}}, &r)
	if err != nil {
		t.Fatal(err)
	}
	s := r.Session(false)
	sealer, _ := s.RequestSealer(nil)
	return sealer.Seal(b, []byte("hello"))
}

// legacyHello is a legacy header signed by signer at ts, and "hello".
func legacyHello(t testing.TB, main, signer [16]byte, ts int64, r vmess.Request) []byte {
	t.Helper()
	b, err := vmess.AppendLegacyRequest(nil, vmess.LegacyAuth(signer, ts), vmess.CmdKey(main), ts, &r)
	if err != nil {
		t.Fatal(err)
	}
	s := r.Session(true)
	sealer, _ := s.RequestSealer(nil)
	return sealer.Seal(b, []byte("hello"))
}

func alter(id uuid.UUID, i int) [16]byte { return vmess.AlterIDs(id, i+1)[i] }

// handlerFunc adapts a function to tunnel.Handler and counts calls.
type handlerFunc struct {
	mu    sync.Mutex
	calls int
	reqs  []tunnel.Request
	f     func(ctx context.Context, conn net.Conn, req tunnel.Request) error
}

func (h *handlerFunc) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.mu.Lock()
	h.calls++
	h.reqs = append(h.reqs, req)
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

// serve runs ServeConn on a fake conn reading segs.
func (f *fixture) serve(t *testing.T, h tunnel.Handler, segs ...[]byte) (*vmesstest.FakeConn, error) {
	t.Helper()
	fc := vmesstest.NewFake(segs...)
	if h == nil {
		h = &handlerFunc{}
	}
	return fc, f.srv.ServeConn(context.Background(), fc.Half(), h)
}

func TestNewRefusesBadUsers(t *testing.T) {
	tests := []struct {
		name  string
		users []vmessserver.User
		msg   string
	}{
		{"duplicate id", []vmessserver.User{{ID: alice, Email: "a"}, {ID: bob}, {ID: alice, Email: "c"}}, "user 2 (c) has the same id as user 0 (a)"},
		{"empty id", []vmessserver.User{{Email: "nobody"}}, "empty id"},
		{"duplicate email", []vmessserver.User{{ID: alice, Email: "Al@x"}, {ID: bob, Email: "al@X"}}, "same email"},
		{"negative level", []vmessserver.User{{ID: alice, Level: -1}}, "level -1"},
		{"alterId", []vmessserver.User{{ID: alice, AlterID: 65536}}, "alterId 65536 is outside 0..65535"},
		{"negative alterId", []vmessserver.User{{ID: alice, AlterID: -1}}, "alterId -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vmessserver.New(vmessserver.Options{Users: tt.users})
			if !errors.Is(err, vmessserver.ErrBadUser) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("New: %v; want ErrBadUser containing %q", err, tt.msg)
			}
			for _, id := range []uuid.UUID{alice, bob} {
				if strings.Contains(err.Error(), id.String()) || strings.Contains(err.Error(), hex.EncodeToString(id[:])) {
					t.Errorf("error %q reveals a user id", err)
				}
			}
		})
	}
	s, err := vmessserver.New(vmessserver.Options{})
	if err != nil {
		t.Fatalf("New with no users: %v", err)
	}
	if err := s.SetUsers([]vmessserver.User{{}}); err == nil {
		t.Error("SetUsers accepted an empty id")
	}
}

func TestLabel(t *testing.T) {
	l := vmessserver.Label(bob)
	if len(l) != len("user-")+8 || !strings.HasPrefix(l, "user-") || strings.Contains(bob.String(), l[5:]) {
		t.Errorf("Label = %q", l)
	}
	if vmessserver.Label(alice) == l {
		t.Error("two ids share a label")
	}
}

func TestMatch(t *testing.T) {
	f := newFixture(t, vmessserver.Options{AllowLegacy: true})
	var m protocols.Matcher = f.srv.Match
	h := aeadHello(t, alice, t0, request(vmess.SecurityAES128GCM))
	if ok, err := m(h[:15]); ok || err != protocols.ErrNeedMore {
		t.Errorf("15 bytes: %v, %v", ok, err)
	}
	if ok, err := m(h[:16]); !ok || err != nil {
		t.Errorf("alice AEAD: %v, %v", ok, err)
	}
	if ok, err := m(legacyHello(t, bob, alter(bob, 2), t0-30, request(vmess.SecurityAES128GCM))); !ok || err != nil {
		t.Errorf("bob legacy: %v, %v", ok, err)
	}
	for name, tt := range map[string]struct {
		b    []byte
		want error
	}{
		"eve":              {aeadHello(t, eve, t0, request(vmess.SecurityAES128GCM)), vmessserver.ErrUnknownUser},
		"http":             {[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), vmessserver.ErrUnknownUser},
		"clock +121":       {aeadHello(t, alice, t0+121, request(vmess.SecurityAES128GCM)), vmess.ErrClockSkew},
		"clock -500":       {aeadHello(t, alice, t0-500, request(vmess.SecurityAES128GCM)), vmess.ErrClockSkew},
		"legacy too old":   {legacyHello(t, bob, alter(bob, 0), t0-121, request(vmess.SecurityAES128GCM)), vmessserver.ErrUnknownUser},
		"alterId mismatch": {legacyHello(t, alice, alter(alice, 1), t0, request(vmess.SecurityAES128GCM)), vmessserver.ErrAlterIDMismatch},
		"bob's 5th alter":  {legacyHello(t, bob, alter(bob, 4), t0, request(vmess.SecurityAES128GCM)), vmessserver.ErrAlterIDMismatch},
		"bob's 9th alter":  {legacyHello(t, bob, alter(bob, 8), t0, request(vmess.SecurityAES128GCM)), vmessserver.ErrUnknownUser},
	} {
		ok, err := m(tt.b)
		if ok || !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, %v; want false, %v", name, ok, err, tt.want)
		}
	}
	if _, err := m(aeadHello(t, alice, t0+300, request(vmess.SecurityAES128GCM))); !strings.Contains(err.Error(), "300 s ahead of the server's") {
		t.Errorf("clock skew message: %v", err)
	}
	// Legacy refused by default: said, not matched.
	f = newFixture(t, vmessserver.Options{})
	ok, err := f.srv.Match(legacyHello(t, bob, alter(bob, 0), t0, request(vmess.SecurityAES128GCM)))
	if ok || !errors.Is(err, vmessserver.ErrLegacyRefused) {
		t.Errorf("legacy, not allowed: %v, %v", ok, err)
	}
	if !strings.Contains(f.log.String(), "level=WARN") || !strings.Contains(f.log.String(), "VMessAEAD is enforced") {
		t.Errorf("no warning:\n%s", f.log.String())
	}
}

// TestNotProtocol: every way of not being a valid VMess request from a
// known user gives ErrNotProtocol, with nothing written, the conn open and
// no handler call.
func TestNotProtocol(t *testing.T) {
	boom := errors.New("connection reset by test")
	good := aeadHello(t, alice, t0, request(vmess.SecurityAES128GCM))
	flipped := bytes.Clone(good)
	flipped[60] ^= 1 // inside the sealed command section
	badLen := bytes.Clone(good)
	badLen[20] ^= 1 // inside the sealed length
	tests := []struct {
		name    string
		opts    vmessserver.Options
		segs    [][]byte
		readErr error
		cause   error
		log     string
	}{
		{name: "unknown user", segs: [][]byte{aeadHello(t, eve, t0, request(vmess.SecurityAES128GCM))}, cause: vmessserver.ErrUnknownUser},
		{name: "http", segs: [][]byte{[]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")}, cause: vmessserver.ErrUnknownUser},
		{name: "clock skew", segs: [][]byte{aeadHello(t, alice, t0-200, request(vmess.SecurityAES128GCM))}, cause: vmess.ErrClockSkew, log: "client clock differs from server by more than 120 s"},
		{name: "legacy refused", segs: [][]byte{legacyHello(t, bob, alter(bob, 1), t0, request(vmess.SecurityAES128GCM))}, cause: vmessserver.ErrLegacyRefused, log: "V2RAY_VMESS_AEAD_FORCED=false"},
		{name: "alterId mismatch", opts: vmessserver.Options{AllowLegacy: true}, segs: [][]byte{legacyHello(t, alice, alter(alice, 0), t0, request(vmess.SecurityAES128GCM))},
			cause: vmessserver.ErrAlterIDMismatch, log: `has \"alterId\": 0`},
		{name: "sealed command flipped", segs: [][]byte{flipped}, cause: vmess.ErrAuth},
		{name: "sealed length flipped", segs: [][]byte{badLen}, cause: vmess.ErrAuth},
		{name: "truncated then EOF", segs: [][]byte{good[:70]}, cause: io.EOF},
		{name: "15 bytes then EOF", segs: [][]byte{good[:15]}, cause: io.EOF},
		{name: "nothing then EOF", cause: io.EOF},
		{name: "truncated then reset", segs: [][]byte{good[:10], good[10:40]}, readErr: boom, cause: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts)
			fc := vmesstest.NewFake(tt.segs...)
			fc.ReadErr = tt.readErr
			h := &handlerFunc{}
			err := f.srv.ServeConn(context.Background(), fc.Half(), h)
			if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, tt.cause) {
				t.Fatalf("ServeConn = %v; want ErrNotProtocol and %v", err, tt.cause)
			}
			if w := fc.Writes(); len(w) != 0 {
				t.Errorf("wrote %q before refusing", w)
			}
			if fc.Closed() || fc.ClosedWrite() {
				t.Error("closed a conn it refused as not VMess")
			}
			if h.Calls() != 0 {
				t.Error("handler called")
			}
			if tt.log != "" && !strings.Contains(f.log.String(), tt.log) {
				t.Errorf("log lacks %q:\n%s", tt.log, f.log.String())
			}
			for _, id := range []uuid.UUID{alice, bob} {
				if strings.Contains(err.Error(), id.String()) || strings.Contains(f.log.String(), id.String()) {
					t.Error("an id leaked into the error or the log")
				}
			}
		})
	}
}

// TestLegacyTaint: a legacy header that fails after its auth matched
// burns that auth; the next connection with it is refused as ErrTainted.
func TestLegacyTaint(t *testing.T) {
	f := newFixture(t, vmessserver.Options{AllowLegacy: true})
	signer := alter(bob, 3)
	good := legacyHello(t, bob, signer, t0+5, request(vmess.SecurityAES128GCM))
	bad := bytes.Clone(good)
	bad[40] ^= 0x10 // inside the encrypted command section: a bad checksum
	_, err := f.serve(t, nil, bad)
	if !errors.Is(err, protocols.ErrNotProtocol) || !strings.Contains(err.Error(), "burned") {
		t.Fatalf("bad request: %v", err)
	}
	// The genuine client, same second and alter id: refused, burned.
	_, err = f.serve(t, nil, good)
	if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, vmessserver.ErrTainted) ||
		!strings.Contains(err.Error(), "invalid user") || !strings.Contains(err.Error(), "ErrTainted") {
		t.Fatalf("tainted auth: %v", err)
	}
	// Another second signs another auth: fine.
	h := &handlerFunc{}
	if _, err := f.serve(t, h, legacyHello(t, bob, signer, t0+6, request(vmess.SecurityAES128GCM))); err != nil || h.Calls() != 1 {
		t.Fatalf("fresh auth: %v, %d calls", err, h.Calls())
	}
	// A replayed legacy handshake is refused and burns its auth too.
	replay := legacyHello(t, bob, alter(bob, 0), t0, request(vmess.SecurityChaCha20Poly1305))
	if _, err := f.serve(t, nil, replay); err != nil {
		t.Fatal(err)
	}
	_, err = f.serve(t, nil, replay)
	if !errors.Is(err, vmessserver.ErrReplay) || !strings.Contains(err.Error(), "burned") {
		t.Fatalf("legacy replay: %v", err)
	}
	if _, err := f.serve(t, nil, legacyHello(t, bob, alter(bob, 0), t0, request(vmess.SecurityAES128GCM))); !errors.Is(err, vmessserver.ErrTainted) {
		t.Fatalf("after the replay: %v", err)
	}
	if !strings.Contains(f.log.String(), "taint fuse") {
		t.Errorf("log:\n%s", f.log.String())
	}
}

// TestReplayCapturedV2Ray sends a handshake a real V2Ray client made
// (testdata of the codec) twice: the first is served, the second is a
// replay, refused before a byte is written, and the log says so.
func TestReplayCapturedV2Ray(t *testing.T) {
	k := readCapture(t, "../testdata/v2ray/client_aead_aes-128-gcm.txt")
	f := newFixture(t, vmessserver.Options{Users: []vmessserver.User{{ID: uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811"), Email: "captured"}}})
	f.clock.sec.Store(k.Time)
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		defer conn.Close()
		b := make([]byte, 32)
		n, err := conn.Read(b)
		if string(b[:n]) != "hello vmess" || err != nil {
			t.Errorf("payload %q, %v", b[:n], err)
		}
		return nil
	}}
	if _, err := f.serve(t, h, k.Request); err != nil || h.Calls() != 1 {
		t.Fatalf("first: %v", err)
	}
	if h.reqs[0].Target != (protocols.Addr{Domain: "example.com", Port: 443}) || h.reqs[0].User != "captured" {
		t.Errorf("request %+v", h.reqs[0])
	}
	f.clock.add(30)
	fc, err := f.serve(t, h, k.Request)
	if !errors.Is(err, protocols.ErrNotProtocol) || !errors.Is(err, vmessserver.ErrReplay) || !strings.Contains(err.Error(), "vmess: replayed auth id") {
		t.Fatalf("replay: %v", err)
	}
	if len(fc.Writes()) != 0 || fc.Closed() || h.Calls() != 1 {
		t.Error("the replay got an answer")
	}
	if ok, err := f.srv.Match(k.Request); ok || !errors.Is(err, vmessserver.ErrReplay) {
		t.Errorf("Match of the replay: %v, %v", ok, err)
	}
	if log := f.log.String(); !strings.Contains(log, "replayed") || !strings.Contains(log, "level=WARN") {
		t.Errorf("log does not say replay:\n%s", log)
	}
	// Past the window the AuthID is refused for its time, not remembered.
	f.clock.add(200)
	if _, err := f.serve(t, h, k.Request); !errors.Is(err, vmess.ErrClockSkew) {
		t.Errorf("after the window: %v", err)
	}
}

// TestNoFalseReplays: 10,000 distinct handshakes from our client, all at
// the same second, are all served.
func TestNoFalseReplays(t *testing.T) {
	const n = 10000
	f := newFixture(t, vmessserver.Options{})
	var captured [][]byte
	for range n {
		captured = append(captured, clientHello(t, alice, f.clock.Now))
	}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &handlerFunc{}
			for i := w; i < n; i += 2 {
				fc := vmesstest.NewFake(captured[i])
				if err := f.srv.ServeConn(context.Background(), fc.Half(), h); err != nil {
					refused.Add(1)
					t.Errorf("handshake %d refused: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if refused.Load() != 0 {
		t.Fatalf("%d of %d genuine handshakes refused", refused.Load(), n)
	}
}

func TestRefusalsAfterAuth(t *testing.T) {
	udp := request(vmess.SecurityZero)
	udp.Command = vmess.CommandUDP
	mux := request(vmess.SecurityAES128GCM)
	mux.Command, mux.Target = vmess.CommandMux, protocols.Addr{}
	cfb := request(vmess.SecurityLegacy)
	for _, tt := range []struct {
		name string
		opts vmessserver.Options
		b    []byte
		want error
		msg  string
	}{
		{"udp", vmessserver.Options{}, aeadHello(t, alice, t0, udp), vmessserver.ErrUDP, `security is "zero"`},
		{"mux", vmessserver.Options{}, aeadHello(t, alice, t0, mux), vmessserver.ErrMux, "turn mux off"},
		{"none", vmessserver.Options{DisableInsecureEncryption: true}, aeadHello(t, alice, t0, request(vmess.SecurityNone)), vmessserver.ErrInsecureEncryption, `"none"`},
		{"zero", vmessserver.Options{DisableInsecureEncryption: true}, aeadHello(t, alice, t0, request(vmess.SecurityZero)), vmessserver.ErrInsecureEncryption, `"aes-128-gcm", "chacha20-poly1305" or "auto"`},
		{"aes-128-cfb", vmessserver.Options{DisableInsecureEncryption: true, AllowLegacy: true}, legacyHello(t, bob, alter(bob, 0), t0, cfb), vmessserver.ErrInsecureEncryption, "aes-128-cfb"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts)
			h := &handlerFunc{}
			fc, err := f.serve(t, h, tt.b)
			if !errors.Is(err, tt.want) || errors.Is(err, protocols.ErrNotProtocol) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("ServeConn = %v; want %v (not ErrNotProtocol) containing %q", err, tt.want, tt.msg)
			}
			if !fc.Closed() || len(fc.Writes()) != 0 || h.Calls() != 0 {
				t.Errorf("closed %v, writes %d, calls %d", fc.Closed(), len(fc.Writes()), h.Calls())
			}
		})
	}
	// Without the setting, none and aes-128-cfb are served.
	f := newFixture(t, vmessserver.Options{AllowLegacy: true})
	for _, b := range [][]byte{aeadHello(t, alice, t0, request(vmess.SecurityNone)), legacyHello(t, bob, alter(bob, 1), t0, request(vmess.SecurityLegacy))} {
		h := &handlerFunc{}
		if _, err := f.serve(t, h, b); err != nil || h.Calls() != 1 {
			t.Errorf("insecure allowed: %v, %d calls", err, h.Calls())
		}
	}
}

func TestContextDone(t *testing.T) {
	f := newFixture(t, vmessserver.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fc := vmesstest.NewFake(aeadHello(t, alice, t0, request(vmess.SecurityAES128GCM)))
	if err := f.srv.ServeConn(ctx, fc.Half(), &handlerFunc{}); !errors.Is(err, context.Canceled) || !fc.Closed() {
		t.Errorf("ServeConn = %v, closed %v", err, fc.Closed())
	}
}

// TestResponse checks what the handler's conn does on the wire: the
// request payload comes out of Read, the response header goes with the
// first Write in one carrier write, CloseWrite adds the end chunk, and the
// client's codec reads it all back.
func TestResponse(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		for _, sec := range []vmess.Security{vmess.SecurityAES128GCM, vmess.SecurityChaCha20Poly1305, vmess.SecurityNone, vmess.SecurityZero, vmess.SecurityLegacy} {
			f := newFixture(t, vmessserver.Options{AllowLegacy: true})
			r := request(sec)
			var b []byte
			if legacy {
				b = legacyHello(t, bob, alter(bob, 0), t0, r)
			} else {
				b = aeadHello(t, alice, t0, r)
			}
			h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
				defer conn.Close()
				got := make([]byte, 5)
				if _, err := io.ReadFull(conn, got); err != nil || string(got) != "hello" {
					t.Errorf("%v legacy=%v: request payload %q, %v", sec, legacy, got, err)
				}
				conn.Write([]byte("first"))
				conn.Write([]byte("second"))
				return conn.(interface{ CloseWrite() error }).CloseWrite()
			}}
			fc, err := f.serve(t, h, b)
			if err != nil {
				t.Fatalf("%v legacy=%v: %v", sec, legacy, err)
			}
			w := fc.Writes()
			want := 3 // header+first, second, end
			if sec == vmess.SecurityZero {
				want = 2 // no end chunk: the carrier's half-close ends it
			}
			if len(w) != want {
				t.Fatalf("%v legacy=%v: %d carrier writes, want %d", sec, legacy, len(w), want)
			}
			s := r.Session(legacy)
			stream := bytes.Join(w, nil)
			_, n, o, err := s.OpenResponse(stream)
			if err != nil {
				t.Fatal(err)
			}
			if n >= len(w[0]) {
				t.Errorf("%v legacy=%v: the first write is the header alone", sec, legacy)
			}
			var got []byte
			rest := stream[n:]
			for {
				p, m, err := o.Open(rest)
				if err != nil {
					if (err == io.EOF) != o.Framed() && !(err == protocols.ErrNeedMore && !o.Framed()) {
						t.Errorf("%v legacy=%v: end %v", sec, legacy, err)
					}
					break
				}
				got = append(got, p...)
				rest = rest[m:]
			}
			if string(got) != "firstsecond" {
				t.Errorf("%v legacy=%v: response %q", sec, legacy, got)
			}
			if sec == vmess.SecurityZero && !fc.ClosedWrite() {
				t.Errorf("zero: CloseWrite did not half-close the carrier")
			}
		}
	}
}

// TestCloseWriteBeforeWrite: the header and the end chunk go together.
func TestCloseWriteBeforeWrite(t *testing.T) {
	f := newFixture(t, vmessserver.Options{})
	r := request(vmess.SecurityAES128GCM)
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		defer conn.Close()
		return conn.(interface{ CloseWrite() error }).CloseWrite()
	}}
	fc, err := f.serve(t, h, aeadHello(t, alice, t0, r))
	if err != nil {
		t.Fatal(err)
	}
	w := fc.Writes()
	if len(w) != 1 {
		t.Fatalf("%d writes", len(w))
	}
	s := r.Session(false)
	_, n, o, err := s.OpenResponse(w[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Open(w[0][n:]); err != io.EOF {
		t.Errorf("after the header: %v, want the end chunk", err)
	}
	if fc.ClosedWrite() {
		t.Error("a framed stream half-closed its carrier")
	}
}

// TestRequestBodyEnd: the request's end chunk is Read's io.EOF; a carrier
// cut inside a chunk is io.ErrUnexpectedEOF.
func TestRequestBodyEnd(t *testing.T) {
	f := newFixture(t, vmessserver.Options{})
	r := request(vmess.SecurityAES128GCM)
	full, _ := vmess.AppendAEADRequest(nil, vmess.NewUserKey(alice), vmess.AEADSeed{Time: t0, AuthRand: [4]byte{9}}, &r)
	s := r.Session(false)
	sealer, _ := s.RequestSealer(nil)
	full = sealer.SealEnd(sealer.Seal(full, []byte("hello")))
	cut := aeadHello(t, alice, t0, request(vmess.SecurityAES128GCM))
	cut = cut[:len(cut)-3]
	for name, tt := range map[string]struct {
		b    []byte
		want error
	}{"end chunk": {full, io.EOF}, "cut": {cut, io.ErrUnexpectedEOF}} {
		var got error
		h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
			defer conn.Close()
			_, got = io.ReadAll(conn)
			if got == nil {
				got = io.EOF
			}
			return nil
		}}
		if _, err := f.serve(t, h, tt.b); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(got, tt.want) {
			t.Errorf("%s: %v, want %v", name, got, tt.want)
		}
	}
}

func readCapture(t *testing.T, path string) vmesstest.CaptureFile {
	return vmesstest.ReadCapture(t, path)
}

// clientHello is what our client writes first: header and a "hello" chunk.
func clientHello(t testing.TB, id uuid.UUID, now func() time.Time) []byte {
	t.Helper()
	d := &vmesstest.FakeDialer{}
	c, err := vmessclient.New(vmessclient.Options{ID: id, Security: "aes-128-gcm", Carrier: d, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.DialStream(context.Background(), protocols.Addr{Domain: "example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	return d.Conns[0].Writes()[0]
}

// TestBigChunks: chunks far bigger than V2Ray's 8 KiB (up to the 65535 the
// length field allows) grow the read buffer and come through.
func TestBigChunks(t *testing.T) {
	f := newFixture(t, vmessserver.Options{})
	r := request(vmess.SecurityAES128GCM)
	r.Options = vmess.OptionChunkStream // plain lengths, no padding
	b, err := vmess.AppendAEADRequest(nil, vmess.NewUserKey(alice), vmess.AEADSeed{Time: t0, AuthRand: [4]byte{7}}, &r)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(r.Key[:])
	gcm, _ := cipher.NewGCM(block)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 65519/16+1)[:65519]
	for i := range 3 {
		nonce := append([]byte{0, byte(i)}, r.IV[2:12]...)
		b = binary.BigEndian.AppendUint16(b, 65535)
		b = gcm.Seal(b, nonce, payload, nil)
	}
	b = binary.BigEndian.AppendUint16(b, 16)
	b = gcm.Seal(b, append([]byte{0, 3}, r.IV[2:12]...), nil, nil)
	var got []byte
	var rerr error
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		defer conn.Close()
		got, rerr = io.ReadAll(conn)
		return nil
	}}
	// Delivered in pieces, as TCP would.
	var segs [][]byte
	for len(b) > 0 {
		n := min(len(b), 1400)
		segs, b = append(segs, b[:n]), b[n:]
	}
	if _, err := f.serve(t, h, segs...); err != nil {
		t.Fatal(err)
	}
	if rerr != nil || !bytes.Equal(got, bytes.Repeat(payload, 3)) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), rerr, 3*len(payload))
	}
}
