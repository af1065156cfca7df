package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/proxy"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/internal/prototest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/links"
	"github.com/portico-gw/portico/protocols/vless"
)

const (
	testUUID  = "b831381d-6324-4d53-ad4f-8cda48b30811"
	otherUUID = "5783a3e7-e373-51cd-8642-c83782b807c5"
	wsPath    = "/edge-tunnel"
	decoyHTML = "<!doctype html><title>Bakery</title><p>Fresh bread daily.</p>\n"
	bulk      = 64 << 20
)

func directBindings() map[string]string {
	return map[string]string{
		"UUIDS":      otherUUID + ", " + testUUID,
		"WS_PATH":    wsPath,
		"DECOY":      "static",
		"DECOY_HTML": decoyHTML,
		"SELFTEST":   "1",
	}
}

// TestWorkerdRelay is step one: workerd's WebSocketPair and
// cloudflare:sockets connect(), through a network that allows loopback
// only, join a WebSocket to a TCP echo (testdata/relay.js, no codec).
func TestWorkerdRelay(t *testing.T) {
	echo := nettest.Echo(t)
	w := startWorkerd(t, workerdOpts{
		modules:  map[string]string{"worker.js": "testdata/relay.js"},
		bindings: map[string]string{"ECHO_PORT": strconv.Itoa(echo.Port)},
	})
	c, _, err := websocket.DefaultDialer.Dial("ws://"+w.Addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	go func() {
		for i := 0; i < len(msg); i += 16 << 10 {
			c.WriteMessage(websocket.BinaryMessage, msg[i:i+16<<10])
		}
	}()
	var got []byte
	for len(got) < len(msg) {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
}

// readVectors reads the VLESS v0 request vectors of protocols/vless/testdata.
func readVectors(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../protocols/vless/testdata/req_*.hex")
	if err != nil || len(files) < 5 {
		t.Fatalf("vectors: %v (%d files)", err, len(files))
	}
	out := map[string][]byte{}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var h strings.Builder
		for _, line := range strings.Split(string(text), "\n") {
			line, _, _ = strings.Cut(line, "#")
			h.WriteString(strings.Join(strings.Fields(line), ""))
		}
		b, err := hex.DecodeString(h.String())
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// want is what the worker's codec must say about b, from the native codec.
func want(b []byte, users map[[16]byte]int) map[string]any {
	ok, err := vless.Match(b, func(id [16]byte) bool { _, ok := users[id]; return ok })
	if errors.Is(err, protocols.ErrNeedMore) {
		return map[string]any{"status": "more"}
	}
	if err == nil && !ok && len(b) > 0 && b[0] == vless.Version {
		return map[string]any{"status": "user"}
	}
	r, n, err := vless.ParseRequest(b)
	switch {
	case errors.Is(err, protocols.ErrNeedMore):
		return map[string]any{"status": "more"}
	case err != nil:
		return map[string]any{"status": "bad", "error": err.Error()}
	}
	kind := "none"
	if r.Target.IsDomain() {
		kind = "domain"
	} else if r.Target.IP.IsValid() {
		kind = "ip"
	}
	return map[string]any{"status": "ok", "length": n, "command": int(r.Command), "user": users[r.ID],
		"id": hex.EncodeToString(r.ID[:]), "host": r.Target.Host(), "port": int(r.Target.Port), "kind": kind, "flow": r.Addons.Flow}
}

// TestSelftestRoute runs protocols/vless's request vectors, every prefix of
// each, a wrong UUID and a wrong version through the WebAssembly codec
// inside workerd (POST /__portico_selftest) and checks each answer against
// the native codec's.
func TestSelftestRoute(t *testing.T) {
	w := edgeWorker(t, directBindings())
	users := map[[16]byte]int{}
	for i, s := range []string{otherUUID, testUUID} {
		b, _ := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
		users[[16]byte(b)] = i
	}
	type tcase struct {
		Name string         `json:"name"`
		Hex  string         `json:"hex"`
		Want map[string]any `json:"want"`
	}
	var cases []tcase
	add := func(name string, b []byte) {
		cases = append(cases, tcase{name, hex.EncodeToString(b), want(b, users)})
	}
	vectors := readVectors(t)
	for name, b := range vectors {
		for i := 0; i <= len(b); i++ {
			add(fmt.Sprintf("%s[:%d]", name, i), b[:i])
		}
		add(name+"+payload", append(append([]byte{}, b...), "GET / HTTP/1.1\r\n"...))
		wrong := append([]byte{}, b...)
		wrong[5] ^= 0xff
		add(name+"/wrong-uuid", wrong)
		wrong = append([]byte{}, b...)
		wrong[0] = 7
		add(name+"/version-7", wrong)
	}
	resp, err := vless.AppendResponse(nil, &vless.ResponseHeader{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"users": otherUUID + "," + testUUID, "cases": cases, "response": hex.EncodeToString(resp)})
	r, err := http.Post("http://"+w.Addr+"/__portico_selftest", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var res struct {
		Pass   bool              `json:"pass"`
		Failed []json.RawMessage `json:"failed"`
		Count  int               `json:"count"`
	}
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if !res.Pass || res.Count != len(cases) {
		t.Fatalf("selftest: pass=%v count=%d of %d, failed: %s", res.Pass, res.Count, len(cases), raw)
	}
	t.Logf("%d cases from %d vectors pass inside workerd", res.Count, len(vectors))
}

// vlessLink is the share link of the edge worker at w, with early data
// when ed > 0.
func vlessLink(t *testing.T, w *Workerd, id, path string, ed int) links.Link {
	t.Helper()
	host, port, _ := net.SplitHostPort(w.Addr)
	q := url.Values{"type": {"ws"}, "security": {"none"}, "encryption": {"none"}}
	if ed > 0 {
		path += "?ed=" + strconv.Itoa(ed)
	}
	q.Set("path", path)
	s := "vless://" + id + "@" + net.JoinHostPort(host, port) + "?" + q.Encode() + "#edge"
	l, err := links.Parse(s)
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return l
}

// startClient runs `portico client LINK` in-process: the mixed SOCKS5/HTTP
// listener of gateway.ClientConfigFromLink. It returns the SOCKS address.
func startClient(t *testing.T, l links.Link) string {
	t.Helper()
	cfg, _, err := gateway.ClientConfigFromLink(l, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, gateway.Options{Log: slog.New(slog.DiscardHandler), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A WebSocket tunnel cannot half-close: the client's relay keeps
		// the closed test connection's tunnel for its 2 s grace. Do not
		// wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		g.Shutdown(ctx)
	})
	return g.LocalAddrs()[0].String()
}

// socksExchange dials dst through the SOCKS5 proxy at socks and moves size
// bytes both ways through the echo, checking SHA-256.
func socksExchange(t *testing.T, socks string, dst string, size int64) time.Duration {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", socks, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, err := d.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(40 * time.Second))
	if err := prototest.Exchange(c, size, 1); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// TestPorticoClientThroughEdge: Portico's client, from a vless:// WebSocket
// link to the worker, moves 64 MiB both ways through the worker (WASM
// codec, connect()) to a loopback echo, without and with early data, at
// today's compatibility date and an older one.
func TestPorticoClientThroughEdge(t *testing.T) {
	echo := nettest.Echo(t).String()
	for _, date := range []string{compatDate, oldCompatDate} {
		w := edgeWorkerAt(t, date, directBindings())
		for _, ed := range []int{0, 2048} {
			t.Run(date+"/ed="+strconv.Itoa(ed), func(t *testing.T) {
				socks := startClient(t, vlessLink(t, w, testUUID, wsPath, ed))
				took := socksExchange(t, socks, echo, bulk)
				t.Logf("64 MiB each way in %v (%.0f MiB/s each way)", took.Round(time.Millisecond), 64/took.Seconds())
			})
		}
	}
}

// TestV2RayThroughEdge: Debian's V2Ray (4.34) as a VLESS-over-WebSocket
// client, behind its SOCKS inbound, moves 64 MiB through the worker.
func TestV2RayThroughEdge(t *testing.T) {
	prototest.V2RayPath(t)
	w := edgeWorker(t, directBindings())
	echo := nettest.Echo(t).String()
	host, port, _ := net.SplitHostPort(w.Addr)
	p, _ := strconv.Atoi(port)
	socksPort := prototest.FreePort(t)
	cfg := map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": socksPort, "protocol": "socks",
			"settings": map[string]any{"udp": false}}},
		"outbounds": []any{map[string]any{"protocol": "vless",
			"settings": map[string]any{"vnext": []any{map[string]any{"address": host, "port": p,
				"users": []any{map[string]any{"id": testUUID, "encryption": "none"}}}}},
			"streamSettings": map[string]any{"network": "ws", "security": "none",
				"wsSettings": map[string]any{"path": wsPath}}}},
	}
	socks := prototest.HostPort("127.0.0.1", socksPort)
	prototest.StartV2Ray(t, cfg, nil, socks)
	took := socksExchange(t, socks, echo, bulk)
	t.Logf("64 MiB each way in %v", took.Round(time.Millisecond))
}

// rawUpgrade sends a WebSocket upgrade to path with protoHeader as
// Sec-WebSocket-Protocol and returns the response and its reader.
func rawUpgrade(t *testing.T, addr, path, protoHeader string) (net.Conn, *http.Response, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: edge.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if protoHeader != "" {
		req += "Sec-WebSocket-Protocol: " + protoHeader + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, resp, br
}

// vlessRequest is a v0 TCP request for id to dst, followed by payload.
func vlessRequest(t *testing.T, id string, dst protocols.Addr, payload string) []byte {
	t.Helper()
	raw, _ := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	b, err := vless.AppendRequest(nil, &vless.RequestHeader{ID: [16]byte(raw), Command: vless.CommandTCP, Target: dst})
	if err != nil {
		t.Fatal(err)
	}
	return append(b, payload...)
}

// TestEarlyDataRidesTheUpgrade: a VLESS header and payload in
// Sec-WebSocket-Protocol (base64url) reach the target before the client
// sends any WebSocket message; the worker echoes the header value, as
// transports/ws does, and its first message is 00 00 then the echo. The
// target is an IPv4 address, an IPv6 address and a name.
func TestEarlyDataRidesTheUpgrade(t *testing.T) {
	w := edgeWorker(t, directBindings())
	v4 := nettest.Echo(t)
	targets := map[string]protocols.Addr{
		"ipv4":   protocols.AddrFromAddrPort(v4.AddrPort()),
		"domain": protocols.DomainAddr("localhost", uint16(v4.Port)),
	}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
		targets["ipv6"] = protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	}
	for name, dst := range targets {
		t.Run(name, func(t *testing.T) {
			ed := base64.RawURLEncoding.EncodeToString(vlessRequest(t, testUUID, dst, "early bytes"))
			_, resp, br := rawUpgrade(t, w.Addr, wsPath, ed)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %s", resp.Status)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != ed {
				t.Fatalf("Sec-WebSocket-Protocol echoed as %q, want %q", got, ed)
			}
			// One unmasked binary frame from the server, no message sent by us.
			hdr := make([]byte, 2)
			if _, err := io.ReadFull(br, hdr); err != nil {
				t.Fatal(err)
			}
			if hdr[0] != 0x82 || hdr[1]&0x80 != 0 || int(hdr[1]) > 125 {
				t.Fatalf("frame header % x", hdr)
			}
			msg := make([]byte, hdr[1])
			if _, err := io.ReadFull(br, msg); err != nil {
				t.Fatal(err)
			}
			if want := "\x00\x00early bytes"; string(msg) != want {
				t.Fatalf("first message %q, want %q", msg, want)
			}
		})
	}
}

// TestDecoy: a wrong UUID in early data, a plain GET, a wrong path and a
// WebSocket upgrade with garbage early data all get the decoy page; a
// wrong UUID sent after the upgrade gets the connection closed without a
// byte of VLESS.
func TestDecoy(t *testing.T) {
	w := edgeWorker(t, directBindings())
	echo := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	wrong := base64.RawURLEncoding.EncodeToString(vlessRequest(t, "00000000-0000-4000-8000-000000000000", echo, "x"))
	check := func(name string, resp *http.Response, br *bufio.Reader) {
		t.Helper()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode != 200 || string(body) != decoyHTML {
			t.Errorf("%s: %s %q, want the decoy", name, resp.Status, body)
		}
	}
	_, resp, br := rawUpgrade(t, w.Addr, wsPath, wrong)
	check("wrong UUID (early data)", resp, br)
	_, resp, br = rawUpgrade(t, w.Addr, wsPath, base64.RawURLEncoding.EncodeToString([]byte("GET / HTTP/1.1\r\n")))
	check("not VLESS (early data)", resp, br)
	_, resp, br = rawUpgrade(t, w.Addr, "/elsewhere", "")
	check("wrong path", resp, br)
	r, err := http.Get("http://" + w.Addr + wsPath)
	if err != nil {
		t.Fatal(err)
	}
	check("plain GET", r, nil)

	// Without early data the 101 comes first; a wrong UUID then only
	// closes the WebSocket.
	c, _, err := websocket.DefaultDialer.Dial("ws://"+w.Addr+wsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.WriteMessage(websocket.BinaryMessage, vlessRequest(t, "00000000-0000-4000-8000-000000000000", echo, "x"))
	if typ, b, err := c.ReadMessage(); err == nil {
		t.Fatalf("got a %d message %q after a wrong UUID, want a close", typ, b)
	} else if !websocket.IsCloseError(err, websocket.CloseInternalServerErr, websocket.CloseNormalClosure) {
		t.Fatalf("after a wrong UUID: %v, want a close frame", err)
	}
}

// TestOriginMode: in MODE=origin the worker relays the WebSocket unchanged
// to a real Portico gateway's VLESS WebSocket route (the embedded default,
// TLS with its self-signed certificate, which the worker's network trusts);
// Portico's client with the gateway's UUID moves data through both, with
// and without early data.
func TestOriginMode(t *testing.T) {
	stDir := t.TempDir()
	st, err := gateway.LoadOrCreateState(stDir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(st.DefaultConfig("127.0.0.1:0"), gateway.Options{Log: slog.New(slog.DiscardHandler), StateDir: stDir})
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
	pem, err := os.ReadFile(filepath.Join(stDir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, gport, _ := net.SplitHostPort(g.Addr().String())
	origin := "https://localhost:" + gport + "/" + st.RouteKey + "/vless-ws"
	w := edgeWorker(t, map[string]string{"MODE": "origin", "ORIGIN": origin, "WS_PATH": wsPath,
		"DECOY": "static", "DECOY_HTML": decoyHTML}, string(pem))
	echo := nettest.Echo(t).String()
	for _, ed := range []int{0, 2048} {
		t.Run("ed="+strconv.Itoa(ed), func(t *testing.T) {
			socks := startClient(t, vlessLink(t, w, st.UUID, wsPath, ed))
			took := socksExchange(t, socks, echo, bulk)
			t.Logf("64 MiB each way through worker and gateway in %v", took.Round(time.Millisecond))
		})
	}
	r, err := http.Get("http://" + w.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if string(body) != decoyHTML {
		t.Fatalf("origin mode, plain GET: %q, want the decoy", body)
	}
}

// TestBackpressureTowardsClient: a client that stops reading stops the
// worker reading the target (it watches the WebSocket's bufferedAmount), so
// a fast target can write only what the buffers on the way hold, not its
// whole 256 MiB.
func TestBackpressureTowardsClient(t *testing.T) {
	w := edgeWorker(t, directBindings())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wrote := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			wrote <- -1
			return
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64<<10)
		var n int64
		for n < 256<<20 {
			m, err := c.Write(buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		wrote <- n
	}()
	dst := protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	c, _, err := websocket.DefaultDialer.Dial("ws://"+w.Addr+wsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.BinaryMessage, vlessRequest(t, testUUID, dst, "")); err != nil {
		t.Fatal(err)
	}
	n := <-wrote // we never read
	t.Logf("the target could write %.1f MiB to a client that does not read", float64(n)/(1<<20))
	if n < 0 || n >= 64<<20 {
		t.Fatalf("target wrote %d bytes: no backpressure", n)
	}
}

// TestNetworkIsLoopbackOnly: the test config's network allows loopback
// only, so a tunnel to any other address is refused by workerd itself (the
// WebSocket closes with no byte); nothing leaves the machine.
func TestNetworkIsLoopbackOnly(t *testing.T) {
	w := edgeWorker(t, directBindings())
	c, _, err := websocket.DefaultDialer.Dial("ws://"+w.Addr+wsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	dst := protocols.AddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:80")) // TEST-NET-1
	c.WriteMessage(websocket.BinaryMessage, vlessRequest(t, testUUID, dst, "GET / HTTP/1.0\r\n\r\n"))
	if typ, b, err := c.ReadMessage(); err == nil {
		t.Fatalf("got a %d message %q from a non-loopback target", typ, b)
	}
}

// TestUpstreamDecoy: with DECOY set to a URL, what is not a tunnel gets
// that site's answer for the same path and query.
func TestUpstreamDecoy(t *testing.T) {
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Site", "upstream")
		io.WriteString(w, "upstream page for "+r.URL.RequestURI())
	}))
	defer site.Close()
	b := directBindings()
	b["DECOY"] = site.URL
	w := edgeWorker(t, b)
	r, err := http.Get("http://" + w.Addr + "/some/page?q=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if string(body) != "upstream page for /some/page?q=1" || r.Header.Get("X-Site") != "upstream" {
		t.Fatalf("decoy: %s %q", r.Status, body)
	}
	_, resp, _ := rawUpgrade(t, w.Addr, wsPath, base64.RawURLEncoding.EncodeToString([]byte("not vless at all")))
	body, _ = io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), "upstream page for "+wsPath) {
		t.Fatalf("decoy for a bad upgrade: %s %q", resp.Status, body)
	}
}
