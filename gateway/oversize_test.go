package gateway

// The oversize suite of issue #9 ("max header sizes"): for each protocol
// and transport, a header that claims or holds more than its bound is
// refused with bounded memory and a clear outcome. Each case runs against
// a real gateway (the embedded default, every protocol on raw TLS and on
// every transport, with a 2 s handshake timeout) or a real local proxy (a
// mixed SOCKS5/HTTP listener), and asserts what a user sees:
//
//   - no tunnel: the sink, the only address the cases name as a target,
//     gets no connection;
//   - the connection ends (or gets the site's or the proxy's answer) within
//     the case's time;
//   - memory: the bytes the whole process allocates during the case
//     (runtime.MemStats.TotalAlloc, client included) stay under the case's
//     budget, far below what the header claims, so that a decoder that
//     allocates what it is told, or buffers a whole message, fails.
//
// Controls, one per transport, send a valid header to the sink and must
// reach it: they prove the headers and routes the cases use are right, so
// that "the sink saw nothing" means something. The cases run one at a
// time (allocations are counted process-wide). docs/security.md ("Header
// size bounds") has the table.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/transports/grpc"
)

// oversizeHandshake is the gateways' timeouts.handshake here: long enough
// that "at once" (atOnce, below) has room to spare under -race on a busy
// 2-core machine (800 ms of a 1 s deadline did not, once), short enough
// that the cases which run into it stay quick.
const oversizeHandshake = 2 * time.Second

// oversizeEnv is a gateway on the embedded default, a client-side gateway
// with a mixed local proxy, and the sink.
type oversizeEnv struct {
	g     *Gateway
	st    *State
	id    [16]byte
	gw    string // the front door
	local string // the mixed (SOCKS5 + HTTP) proxy listener
	sink  *oversizeSink
	junk  []byte // 16 MiB of 'a': header-safe filler without a line end, made once
	lines []byte // 1 MiB of 1 KiB header lines, made once
	h2    *http.Transport
}

// oversizeSink counts the connections made to it and closes each.
type oversizeSink struct {
	ln   net.Listener
	port uint16
	n    atomic.Int32
}

func startOversizeSink(t *testing.T) *oversizeSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &oversizeSink{ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func startOversizeEnv(t *testing.T) *oversizeEnv {
	t.Helper()
	st, err := LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.DefaultConfig("127.0.0.1:0")
	cfg.Timeouts.Handshake = Duration(oversizeHandshake)
	g, err := New(cfg, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})

	ccfg, err := ParseConfig([]byte(`{"timeouts": {"handshake": "` + oversizeHandshake.String() + `"},
		"inbounds": [{"tag": "local", "protocol": "mixed", "listen": "127.0.0.1:0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	client, err := New(ccfg, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		client.Shutdown(ctx)
	})
	h2 := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Protocols: h2Only()}
	t.Cleanup(h2.CloseIdleConnections)
	return &oversizeEnv{g: g, st: st, id: uuid.MustParse(st.UUID), gw: g.Addr().String(), local: client.LocalAddrs()[0].String(),
		sink: startOversizeSink(t), junk: bytes.Repeat([]byte{'a'}, 16<<20), h2: h2,
		lines: bytes.Repeat([]byte("X-Pad: "+strings.Repeat("a", 1015)+"\r\n"), 1024)}
}

// vless0 is a valid VLESS v0 request for the sink.
func (e *oversizeEnv) vless0() []byte { return probeVlessHeader(0, e.id, 1, e.sink.port) }

// path is the route of the embedded default's inbound tag (ws, httpupgrade).
func (e *oversizeEnv) path(t *testing.T, tag string) string {
	ss := probeRouteOf(t, e.g, tag)
	if ss.WSSettings != nil {
		return ss.WSSettings.Path
	}
	return ss.HTTPUpgradeSettings.Path
}

// oversizeVlessV1Pad is a VLESS v1 request for the sink from the user,
// with the padding addon announcing padLen bytes.
func oversizeVlessV1Pad(id [16]byte, padLen uint16, port uint16) []byte {
	b := append([]byte{vless.Version1}, id[:]...)
	b = append(b, byte(vless.AddonPadding))
	b = binary.BigEndian.AppendUint16(b, padLen)
	b = append(b, byte(vless.CommandTCP))
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, 1, 127, 0, 0, 1)
}

// oversizeVmessLen is the start of a VMessAEAD request from the user, sealed
// with the user's key (a valid AuthID of now, and a length that opens),
// whose sealed length claims n bytes of command section.
func oversizeVmessLen(t *testing.T, id [16]byte, n uint16) []byte {
	k := vmess.NewUserKey(id)
	authID := k.AuthID(time.Now().Unix(), [4]byte{1, 2, 3, 4})
	nonce := []byte{9, 8, 7, 6, 5, 4, 3, 2}
	key := vmess.KDF16(k.CmdKey[:], vmess.LabelHeaderLenKey, string(authID[:]), string(nonce))
	iv := vmess.KDF(k.CmdKey[:], vmess.LabelHeaderLenNonce, string(authID[:]), string(nonce))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), authID[:]...)
	b = gcm.Seal(b, iv[:12], binary.BigEndian.AppendUint16(nil, n), authID[:])
	return append(b, nonce...)
}

// oversizeAnyTLSAuth is an AnyTLS authentication header with the hash of
// password announcing padLen bytes of padding0, without the padding.
func oversizeAnyTLSAuth(password string, padLen uint16) []byte {
	h := anytls.PasswordHash(password)
	return binary.BigEndian.AppendUint16(h[:], padLen)
}

// oversizeSend writes parts on c from a goroutine (a write fails once the
// server has closed, which is expected) while reading what comes back
// until the server ends the connection or within passes; it returns the
// answer and how the connection ended ("eof", "reset" or "open").
func oversizeSend(c net.Conn, r io.Reader, within time.Duration, parts ...[]byte) ([]byte, string) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.SetWriteDeadline(time.Now().Add(within))
		for _, p := range parts {
			if _, err := c.Write(p); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(within))
	var buf bytes.Buffer
	_, err := io.Copy(&buf, r)
	end := "eof"
	var ne net.Error
	switch {
	case err == nil:
	case errorsAsTimeout(err, &ne):
		end = "open"
	default:
		end = "reset"
	}
	c.Close()
	wg.Wait()
	return buf.Bytes(), end
}

func errorsAsTimeout(err error, ne *net.Error) bool {
	return errors.As(err, ne) && (*ne).Timeout()
}

func (e *oversizeEnv) dialTLS(t *testing.T, alpn ...string) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.gw, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawTLS sends parts over raw TLS and returns the answer and the end.
func (e *oversizeEnv) rawTLS(t *testing.T, within time.Duration, parts ...[]byte) ([]byte, string) {
	c := e.dialTLS(t, "http/1.1")
	return oversizeSend(c, c, within, parts...)
}

// local sends parts to the mixed local proxy.
func (e *oversizeEnv) localProxy(t *testing.T, within time.Duration, parts ...[]byte) ([]byte, string) {
	c, err := net.DialTimeout("tcp", e.local, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return oversizeSend(c, c, within, parts...)
}

// upgrade sends an HTTP/1.1 upgrade request for path with extra header
// lines, and returns the conn, the reader past the response headers, and
// the response.
func (e *oversizeEnv) upgrade(t *testing.T, path string, extra ...string) (*tls.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c := e.dialTLS(t, "http/1.1")
	req := "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, x := range extra {
		req += x + "\r\n"
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		t.Fatalf("upgrade: %v", err)
	}
	c.SetDeadline(time.Time{})
	return c, br, resp
}

// wsFrameHeader is a client's masked binary frame header (mask key zero, so
// the payload goes as it is) announcing n bytes.
func wsFrameHeader(n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, n)[:10:10]
}

func wsFrame(n uint64) []byte { return append(wsFrameHeader(n), 0, 0, 0, 0) }

// wsEnded checks what a WebSocket client read after the 101: nothing but a
// close frame (1000, no text) or nothing at all — never a data frame.
func wsEnded(t *testing.T, got []byte, end string) {
	t.Helper()
	switch {
	case end == "open":
		t.Errorf("still open (read %x)", got)
	case len(got) == 0:
	case bytes.Equal(got, []byte{0x88, 0x02, 0x03, 0xe8}):
	default:
		t.Errorf("read %x, want a close frame 1000 without text or nothing", got)
	}
}

// grpcCall opens a call on the gRPC service of tag, writes body, and keeps
// the request open until the response ends. It returns the response data
// and the grpc-status trailer.
func (e *oversizeEnv) grpcCall(t *testing.T, tag string, body []byte, within time.Duration) ([]byte, string, error) {
	tun, _ := grpc.Paths(probeRouteOf(t, e.g, tag).GRPCSettings.ServiceName)
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+e.gw+tun, pr)
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	// A declared length (one byte more than is ever sent: the request stays
	// open) keeps the client's write buffer to the body's size instead of
	// 512 KiB per call, which would drown the server's allocations.
	req.ContentLength = int64(len(body)) + 1
	go pw.Write(body)
	resp, err := e.h2.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return data, resp.Trailer.Get("Grpc-Status"), err
}

// oversizeCase is one header past its bound. run sends it and checks the
// answer; it returns once the connection ended (or failed the case).
type oversizeCase struct {
	name    string // the protocol/transport, the bound, and the header past it
	within  time.Duration
	budget  uint64 // bytes the process may allocate during the case
	control bool   // a valid header: it must reach the sink
	run     func(t *testing.T, e *oversizeEnv, within time.Duration)
}

const (
	oversizeKiB = 1 << 10
	oversizeMiB = 1 << 20
)

func oversizeCases() []oversizeCase {
	// A refused tunnel on a route is drained (drainAndClose: at most 4 KiB
	// or 3 s) before it closes; the cases send more than 4 KiB so that the
	// close comes at once.
	const drain = 8 * oversizeKiB
	// A header refused at its bound ends the connection (or gets its
	// answer) at once; atOnce is less than the handshake deadline, so a
	// decoder that waits for what the header claims fails the case.
	const atOnce = oversizeHandshake * 3 / 4
	return []oversizeCase{
		// --- raw TLS ---
		{name: "control, raw TLS: valid VLESS v0 header reaches the sink", within: 3 * time.Second, budget: 4 * oversizeMiB, control: true,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c := e.dialTLS(t, "http/1.1")
				c.Write(e.vless0())
				waitSink(t, e, 1)
				c.Close()
			}},
		{name: "raw TLS, VLESS v0: addons length byte 255 (MaxAddonsLen) + 2 MiB, refused within headerBufSize 1 KiB, the site answers 431 at http.Server's 1 MiB",
			within: atOnce, budget: 16 * oversizeMiB, // the site reading its 1 MiB, as it does alone
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				hdr := append(append([]byte{0}, e.id[:]...), 255)
				got, end := e.rawTLS(t, within, hdr, e.junk[:2*oversizeMiB])
				// The site reads the bytes as a request line: 2 MiB of it
				// is past its 1 MiB, unless the random UUID holds a line
				// feed (1 run in about 17), which ends a malformed line.
				want := "HTTP/1.1 431"
				if bytes.IndexByte(hdr, '\n') >= 0 {
					want = "HTTP/1.1 400"
				}
				if !bytes.HasPrefix(got, []byte(want)) {
					t.Errorf("answer %.60q [%s], want the site's %s", got, end, want[9:])
				}
			}},
		{name: "raw TLS, VLESS v1: padding length 65535 > MaxPadLen 16384, closed at once",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				got, end := e.rawTLS(t, within, oversizeVlessV1Pad(e.id, 65535, e.sink.port), e.junk[:64*oversizeKiB])
				if len(got) != 0 || end == "open" {
					t.Errorf("answer %.60q [%s], want a close and nothing", got, end)
				}
			}},
		{name: "raw TLS, VLESS v1: an addon list of 255 (2 to 4) and 1 MiB after a valid UUID, refused within MaxRequestV1Len 292, closed at once",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				hdr := append([]byte{vless.Version1}, e.id[:]...)
				got, end := e.rawTLS(t, within, hdr, []byte{byte(vless.AddonList), 255}, e.junk[:oversizeMiB])
				if len(got) != 0 || end == "open" {
					t.Errorf("answer %.60q [%s], want a close and nothing", got, end)
				}
			}},
		{name: "raw TLS, VMessAEAD: sealed length 65535 > MaxRequestLen 316 with a valid key, refused to the decoy",
			within: atOnce, budget: 4 * oversizeMiB, // the site reading its 64 KiB line
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				// The line end makes the site answer the rewound bytes at once.
				got, end := e.rawTLS(t, within, oversizeVmessLen(t, e.id, 65535), e.junk[:64*oversizeKiB], []byte("\r\n\r\n"))
				if end == "open" || len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 4")) {
					t.Errorf("answer %.60q [%s], want the site's 4xx or its close", got, end)
				}
			}},
		{name: "raw TLS, AnyTLS: padding0 length 65535 (2-byte field) with the right hash, 16 connections stalled, buffer ≤ 68 KiB each, closed at the deadline",
			within: oversizeHandshake + 2*time.Second, budget: 8 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				var wg sync.WaitGroup
				for range 16 {
					c := e.dialTLS(t, "http/1.1")
					wg.Add(1)
					go func() {
						defer wg.Done()
						got, end := oversizeSend(c, c, within, oversizeAnyTLSAuth(e.st.Password, 65535), e.junk[:4*oversizeKiB])
						if end == "open" || len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 4")) {
							t.Errorf("answer %.60q [%s], want a close at the deadline", got, end)
						}
					}()
				}
				wg.Wait()
			}},

		// --- WebSocket ---
		{name: "control, WebSocket: valid VLESS v0 header as early data (≤ MaxEarlyData 8192) reaches the sink", within: 3 * time.Second, budget: 4 * oversizeMiB, control: true,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				ed := base64.RawURLEncoding.EncodeToString(e.vless0())
				c, _, resp := e.upgrade(t, e.path(t, "vless-ws"), "Sec-WebSocket-Protocol: "+ed)
				if resp.StatusCode != 101 {
					t.Fatalf("upgrade answered %s", resp.Status)
				}
				waitSink(t, e, 1)
				c.Close()
			}},
		{name: "WebSocket, VLESS: early data of 12 KiB > MaxEarlyData 8192 (a valid header in it) is not taken",
			within: atOnce, budget: 4 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				ed := base64.RawURLEncoding.EncodeToString(append(e.vless0(), e.junk[:12*oversizeKiB]...))
				c, br, resp := e.upgrade(t, e.path(t, "vless-ws"), "Sec-WebSocket-Protocol: "+ed)
				if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Protocol") != "" {
					t.Fatalf("upgrade answered %s with Sec-WebSocket-Protocol of %d bytes, want 101 without the early data echoed", resp.Status, len(resp.Header.Get("Sec-WebSocket-Protocol")))
				}
				// A wrong key follows: refused, drained, closed.
				got, end := oversizeSend(c, br, within, wsFrame(drain), probeVlessHeader(0, [16]byte{1}, 1, e.sink.port), e.junk[:drain-26])
				wsEnded(t, got, end)
			}},
		{name: "WebSocket, VLESS: one 16 MiB message with a wrong key is streamed, not buffered (no read limit needed)",
			within: atOnce, budget: 4 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c, br, _ := e.upgrade(t, e.path(t, "vless-ws"))
				got, end := oversizeSend(c, br, within, wsFrame(16*oversizeMiB), probeVlessHeader(0, [16]byte{1}, 1, e.sink.port), e.junk[:16*oversizeMiB-26])
				wsEnded(t, got, end)
			}},
		{name: "WebSocket, VLESS: a frame claiming 2^63 bytes (RFC 6455: the length's top bit must be 0) is refused",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c, br, _ := e.upgrade(t, e.path(t, "vless-ws"))
				got, end := oversizeSend(c, br, within, wsFrame(1<<63), e.vless0(), e.junk[:drain])
				if end == "open" || len(got) > 0 && got[0] != 0x88 {
					t.Errorf("read %x [%s], want a close without data", got, end)
				}
			}},
		{name: "WebSocket, VMessAEAD: sealed length 65535 > MaxRequestLen 316 with a valid key, refused and drained",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c, br, _ := e.upgrade(t, e.path(t, "vmess-ws"))
				hdr := oversizeVmessLen(t, e.id, 65535)
				got, end := oversizeSend(c, br, within, wsFrame(uint64(len(hdr)+drain)), hdr, e.junk[:drain])
				wsEnded(t, got, end)
			}},

		// --- HTTP upgrade ---
		{name: "control, HTTP upgrade: valid VLESS v0 header reaches the sink", within: 3 * time.Second, budget: 4 * oversizeMiB, control: true,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c, _, resp := e.upgrade(t, e.path(t, "vless-httpupgrade"))
				if resp.StatusCode != 101 {
					t.Fatalf("upgrade answered %s", resp.Status)
				}
				c.Write(e.vless0())
				waitSink(t, e, 1)
				c.Close()
			}},
		{name: "HTTP upgrade: a 2 MiB upgrade request header > http.Server's 1 MiB gets 431",
			within: atOnce, budget: 16 * oversizeMiB, // net/http reading its 1 MiB
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				req := "GET " + e.path(t, "vless-httpupgrade") + " HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Pad: "
				got, end := e.rawTLS(t, within, []byte(req), e.junk[:2*oversizeMiB], []byte("\r\n\r\n"))
				if !bytes.HasPrefix(got, []byte("HTTP/1.1 431")) {
					t.Errorf("answer %.60q [%s], want 431", got, end)
				}
			}},
		{name: "HTTP upgrade, VLESS v1: padding length 65535 > MaxPadLen 16384, closed at once",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c, br, _ := e.upgrade(t, e.path(t, "vless-httpupgrade"))
				got, end := oversizeSend(c, br, within, oversizeVlessV1Pad(e.id, 65535, e.sink.port), e.junk[:64*oversizeKiB])
				if len(got) != 0 || end == "open" {
					t.Errorf("answer %.60q [%s], want a close and nothing", got, end)
				}
			}},
		{name: "HTTP upgrade, VMessAEAD: sealed length 65535 > MaxRequestLen 316 with a valid key, refused and drained",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				c, br, _ := e.upgrade(t, e.path(t, "vmess-httpupgrade"))
				got, end := oversizeSend(c, br, within, oversizeVmessLen(t, e.id, 65535), e.junk[:drain])
				if len(got) != 0 || end == "open" {
					t.Errorf("answer %.60q [%s], want a close and nothing", got, end)
				}
			}},

		// --- gRPC ---
		{name: "control, gRPC: valid VLESS v0 header reaches the sink", within: 3 * time.Second, budget: 4 * oversizeMiB, control: true,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				tun, _ := grpc.Paths(probeRouteOf(t, e.g, "vless-grpc").GRPCSettings.ServiceName)
				pr, pw := io.Pipe()
				defer pw.Close()
				req, _ := http.NewRequest(http.MethodPost, "https://"+e.gw+tun, pr)
				req.Header.Set("Content-Type", "application/grpc")
				go pw.Write(probeGunMessage(e.vless0()))
				resp, err := e.h2.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				waitSink(t, e, 1)
			}},
		{name: "gRPC, VLESS: a message claiming 1 GiB > DefaultMaxMessageSize 4 MiB ends the call with RESOURCE_EXHAUSTED",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				body := append([]byte{0}, binary.BigEndian.AppendUint32(nil, 1<<30)...)
				body = append(body, e.vless0()...)
				data, status, err := e.grpcCall(t, "vless-grpc", body, within)
				if err != nil || len(data) != 0 || status != "8" {
					t.Errorf("data %q, grpc-status %q, %v; want no data and 8", data, status, err)
				}
			}},
		{name: "gRPC, VLESS: 16 calls each claiming a 4 MiB message (the limit) with 5 bytes sent cost what was sent, end at the deadline",
			within: oversizeHandshake + 2*time.Second, budget: 8 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				var wg sync.WaitGroup
				for range 16 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						body := append([]byte{0}, binary.BigEndian.AppendUint32(nil, grpc.DefaultMaxMessageSize)...)
						body = append(body, 0x0a, 0x80, 0x80, 0x80, 0x02) // the Hunk's tag and a 4 MiB varint
						data, _, err := e.grpcCall(t, "vless-grpc", body, within)
						if len(data) != 0 || errorsAsTimeout(err, new(net.Error)) {
							t.Errorf("data %q, %v; want the call to end without data", data, err)
						}
					}()
				}
				wg.Wait()
			}},
		{name: "gRPC, AnyTLS: padding0 length 65535 (2-byte field) with the right hash, stalled, ends at the deadline",
			within: oversizeHandshake + 2*time.Second, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				data, _, err := e.grpcCall(t, "anytls-grpc", probeGunMessage(oversizeAnyTLSAuth(e.st.Password, 65535)), within)
				if len(data) != 0 || errorsAsTimeout(err, new(net.Error)) {
					t.Errorf("data %q, %v; want the call to end without data", data, err)
				}
			}},

		// --- local proxy (client side) ---
		{name: "control, local HTTP proxy: a small GET reaches the sink", within: 3 * time.Second, budget: 4 * oversizeMiB, control: true,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				req := fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", e.sink.port)
				e.localProxy(t, within, []byte(req))
				waitSink(t, e, 1)
			}},
		{name: "local HTTP proxy: GET with a 1 MiB header > maxHeaderBytes 64 KiB gets 431",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				req := fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", e.sink.port)
				got, end := e.localProxy(t, within, []byte(req), e.junk[:oversizeMiB], []byte("\r\n\r\n"))
				if !bytes.HasPrefix(got, []byte("HTTP/1.1 431")) {
					t.Errorf("answer %.60q [%s], want 431", got, end)
				}
			}},
		{name: "local HTTP proxy: CONNECT with 1 MiB of header lines > maxHeaderBytes 64 KiB gets 431",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				req := fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1\r\n", e.sink.port)
				got, end := e.localProxy(t, within, []byte(req), e.lines, []byte("\r\n"))
				if !bytes.HasPrefix(got, []byte("HTTP/1.1 431")) {
					t.Errorf("answer %.60q [%s], want 431", got, end)
				}
			}},
		{name: "local HTTP proxy: a 1 MiB request line > maxHeaderBytes 64 KiB gets 431",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				got, end := e.localProxy(t, within, []byte(fmt.Sprintf("GET http://127.0.0.1:%d/", e.sink.port)), e.junk[:oversizeMiB])
				if !bytes.HasPrefix(got, []byte("HTTP/1.1 431")) {
					t.Errorf("answer %.60q [%s], want 431", got, end)
				}
			}},
		{name: "local SOCKS5: greeting then 1 MiB of garbage, read through a 1 KiB handshake buffer, refused at once",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				got, end := e.localProxy(t, within, []byte{5, 1, 0}, e.junk[:oversizeMiB])
				// Method selection (no auth), then a general failure reply.
				if !bytes.HasPrefix(got, []byte{5, 0}) || len(got) > 2 && (len(got) < 4 || got[3] == 0) || end == "open" {
					t.Errorf("answer %x [%s], want 05 00 and a failure reply, then a close", got, end)
				}
			}},
		{name: "local SOCKS5: greeting claiming 255 methods (1-byte count), none acceptable, refused at once",
			within: atOnce, budget: 2 * oversizeMiB,
			run: func(t *testing.T, e *oversizeEnv, within time.Duration) {
				greet := append([]byte{5, 255}, bytes.Repeat([]byte{0x80}, 255)...)
				got, end := e.localProxy(t, within, greet, e.junk[:oversizeMiB])
				if !bytes.Equal(got, []byte{5, 0xff}) || end == "open" {
					t.Errorf("answer %x [%s], want 05 ff and a close", got, end)
				}
			}},
	}
}

// waitSink waits until the sink has seen n more connections than when
// the case began (controls).
func waitSink(t *testing.T, e *oversizeEnv, n int32) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); e.sink.n.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("the sink saw %d connections, want %d: the control's header did not work", e.sink.n.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOversizeHeaders runs every case, one at a time.
func TestOversizeHeaders(t *testing.T) {
	e := startOversizeEnv(t)
	for _, tc := range oversizeCases() {
		t.Run(tc.name, func(t *testing.T) {
			e.sink.n.Store(0)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			start := time.Now()
			tc.run(t, e, tc.within)
			el := time.Since(start)
			runtime.ReadMemStats(&m1)
			alloc := m1.TotalAlloc - m0.TotalAlloc
			if el > tc.within+200*time.Millisecond {
				t.Errorf("took %v, want at most %v", el.Round(time.Millisecond), tc.within)
			}
			if alloc > tc.budget {
				t.Errorf("the process allocated %.1f MiB during the case, want at most %.1f MiB", float64(alloc)/oversizeMiB, float64(tc.budget)/oversizeMiB)
			}
			if !tc.control {
				time.Sleep(20 * time.Millisecond) // a dial the server made would have arrived by now
				if n := e.sink.n.Load(); n != 0 {
					t.Errorf("the sink got %d connections: a tunnel was made", n)
				}
			}
			t.Logf("ended after %v, %.2f MiB allocated", el.Round(time.Millisecond), float64(alloc)/oversizeMiB)
		})
	}
}

// h2Only makes an http.Transport speak HTTP/2 alone over TLS.
func h2Only() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	return p
}
