package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/wasm/api"
)

// TestPlaygroundErrors: a port in use and a -wasm folder without the
// artifacts each give one clear line and exit status 1.
func TestPlaygroundErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	empty := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"playground", "-listen", busy.Addr().String()}, busy.Addr().String() + " is already in use; pass -listen HOST:PORT"},
		{[]string{"playground", "-listen", "127.0.0.1:0", "-wasm", empty}, "-wasm " + empty + ": no portico.wasm there"},
		{[]string{"playground", "-listen", "127.0.0.1:99999"}, "playground: listen 127.0.0.1:99999:"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 1 {
			t.Errorf("%v: exit %d, want 1 (stderr %q)", tc.args, code, stderr.String())
		}
		msg := stderr.String()
		if !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "portico: playground: ") {
			t.Errorf("%v: stderr %q, want one line containing %q", tc.args, msg, tc.want)
		}
	}
}

// TestPlaygroundHandler: the page, its scripts and the artifacts are served
// with their types and the CSP; nothing else is.
func TestPlaygroundHandler(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "portico.wasm"), []byte("\x00asm\x01\x00\x00\x00"), 0o644)
	os.WriteFile(filepath.Join(dir, "wasm_exec.js"), []byte("// go\n"), 0o644)
	a, err := findPlaygroundAssets(dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gateway.PlaygroundHandler(a.Wasm, a.WasmExec))
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", "<title>Portico playground</title>"},
		{"GET", "/app.js", 200, "text/javascript; charset=utf-8", "portico.vless.encodeRequest"},
		{"GET", "/style.css", 200, "text/css; charset=utf-8", ".field"},
		{"GET", "/portico.wasm", 200, "application/wasm", "\x00asm"},
		{"GET", "/wasm_exec.js", 200, "text/javascript; charset=utf-8", "// go"},
		{"GET", "/embed.go", 404, "", ""},
		{"GET", "/../go.mod", 404, "", ""},
		{"POST", "/", 405, "", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			continue
		}
		if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "'wasm-unsafe-eval'") {
			t.Errorf("%s %s: CSP %q", tc.method, tc.path, resp.Header.Get("Content-Security-Policy"))
		}
		if tc.status != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("%s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if !strings.Contains(string(body), tc.body) {
			t.Errorf("%s: body lacks %q", tc.path, tc.body)
		}
	}
}

// chromium returns the Chromium binary, skipping the test when there is
// none unless PORTICO_REQUIRE_PEERS=1, where that is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed (Debian package chromium; scripts/install-peers.sh installs it)"
	if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
		t.Fatal(msg + ", and PORTICO_REQUIRE_PEERS=1")
	}
	t.Skip(msg + "; set PORTICO_REQUIRE_PEERS=1 to fail instead")
	return ""
}

// TestPlaygroundBrowser drives the page in headless Chromium: the VLESS and
// VMess headers it builds from fixed inputs are the native codec's bytes,
// captured bytes decode (or fail with the codec's exact message), the
// AnyTLS chart has the native plan's records, and live mode fetches a page
// through a real gateway over VLESS+WebSocket.
func TestPlaygroundBrowser(t *testing.T) {
	browser := chromium(t)
	if testing.Short() {
		t.Skip("builds portico.wasm and runs chromium")
	}
	start := time.Now()
	wd, _ := os.Getwd()
	root, ok := findModuleRoot(wd)
	if !ok {
		t.Fatalf("no %s checkout above %s", modulePath, wd)
	}
	assets, err := buildPlaygroundAssets(root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("portico.wasm built in %v", time.Since(start).Round(time.Millisecond))
	page := httptest.NewServer(gateway.PlaygroundHandler(assets.Wasm, assets.WasmExec))
	defer page.Close()

	// The gateway (embedded default) and a tiny HTTP target on loopback.
	st, err := gateway.LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(st.DefaultConfig("127.0.0.1:0"), gateway.Options{StateDir: st.Dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	token := uuid.NewString()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the target: %s %s", r.URL.Path, token)
	}))
	defer target.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browser),
		chromedp.UserDataDir(t.TempDir()),
		// Chromium puts its singleton socket in a directory of its own under
		// TMPDIR and leaves it when it is killed; keep it in the test's.
		chromedp.Env("TMPDIR="+t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors", true), // the gateway's self-signed certificate
		chromedp.WindowSize(1200, 900),
	)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	// fields returns the annotated hex of box: each field's name, and the
	// concatenation of their bytes.
	fields := func(box string) (names []string, all string) {
		t.Helper()
		spans, err := chromedp.Run(bctx, chromedp.Evaluate[[]struct {
			Name  string `json:"name"`
			Bytes string `json:"bytes"`
		}](`Array.from(document.querySelectorAll("`+box+` .field"), (e) => ({name: e.dataset.field, bytes: e.dataset.bytes}))`))
		if err != nil {
			t.Fatalf("fields of %s: %v", box, err)
		}
		for _, s := range spans {
			names = append(names, s.Name)
			all += s.Bytes
		}
		return names, all
	}

	phase := time.Now()
	do("load", chromedp.Navigate(page.URL), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)))
	t.Logf("page and wasm loaded in %v", time.Since(phase).Round(time.Millisecond))

	// 1. A share link.
	link := "vless://" + st.UUID + "@gw.example:443?type=ws&path=%2Fx&security=tls&sni=gw.example#demo"
	do("link", chromedp.SetValue(chromedp.CSS(`#link-input`), link), chromedp.Click(chromedp.CSS(`#link-parse`)),
		chromedp.WaitVisible(chromedp.CSS(`#link-out tr[data-key="host"]`)))
	if got := text(`#link-out tr[data-key="host"] td`); got != "gw.example" {
		t.Errorf("link host: %q", got)
	}
	if got := text(`#link-out tr[data-key="transport"] td`); got != "ws" {
		t.Errorf("link transport: %q", got)
	}

	// 2a. A VLESS v0 header from the form, against vless.AppendRequest.
	id := uuid.MustParse(st.UUID)
	do("vless form",
		chromedp.SetValue(chromedp.CSS(`#b-proto`), "vless0"),
		chromedp.SetValue(chromedp.CSS(`#b-id`), st.UUID),
		chromedp.SetValue(chromedp.CSS(`#b-command`), "tcp"),
		chromedp.SetValue(chromedp.CSS(`#b-target`), "example.com:443"),
		chromedp.Click(chromedp.CSS(`#b-build`)),
		chromedp.WaitVisible(chromedp.CSS(`#b-hex .field`)))
	want, err := vless.AppendRequest(nil, &vless.RequestHeader{ID: id, Command: vless.CommandTCP, Target: mustAddr(t, "example.com:443")})
	if err != nil {
		t.Fatal(err)
	}
	names, got := fields("#b-hex")
	if got != hex.EncodeToString(want) {
		t.Errorf("VLESS header in the page:\n%s\nnative:\n%x", got, want)
	}
	if strings.Join(names, ",") != "version,uuid,addons length,command,port,address type,address" {
		t.Errorf("VLESS fields: %v", names)
	}

	// 2b. A VMess AEAD header with fixed time and randomness, against
	// vmess.AppendAEADRequest.
	const ts = 1_750_000_000
	key, iv := bytes.Repeat([]byte{0x11}, 16), bytes.Repeat([]byte{0x22}, 16)
	authRand, nonce, padding := []byte{1, 2, 3, 4}, []byte{5, 6, 7, 8, 9, 10, 11, 12}, []byte{0xaa, 0xbb, 0xcc}
	do("vmess form",
		chromedp.SetValue(chromedp.CSS(`#b-proto`), "vmess"),
		chromedp.SetValue(chromedp.CSS(`#b-security`), "aes-128-gcm"),
		chromedp.SetValue(chromedp.CSS(`#b-target`), "203.0.113.7:8443"),
		chromedp.SetValue(chromedp.CSS(`#b-time`), fmt.Sprint(ts)),
		chromedp.SetValue(chromedp.CSS(`#b-key`), hex.EncodeToString(key)),
		chromedp.SetValue(chromedp.CSS(`#b-iv`), hex.EncodeToString(iv)),
		chromedp.SetValue(chromedp.CSS(`#b-respauth`), "77"),
		chromedp.SetValue(chromedp.CSS(`#b-padding`), hex.EncodeToString(padding)),
		chromedp.SetValue(chromedp.CSS(`#b-authrand`), hex.EncodeToString(authRand)),
		chromedp.SetValue(chromedp.CSS(`#b-nonce`), hex.EncodeToString(nonce)),
		chromedp.Click(chromedp.CSS(`#b-build`)),
		chromedp.WaitVisible(chromedp.CSS(`#b-hex .field[data-field="auth id"]`)))
	sec, err := vmess.ParseSecurity("aes-128-gcm")
	if err != nil {
		t.Fatal(err)
	}
	r := vmess.Request{ResponseAuth: 77, Command: vmess.CommandTCP, Target: mustAddr(t, "203.0.113.7:8443"), Padding: padding}
	copy(r.Key[:], key)
	copy(r.IV[:], iv)
	r.Security, r.Options = vmess.ClientOptions(sec.Resolve(), false)
	seed := vmess.AEADSeed{Time: ts}
	copy(seed.AuthRand[:], authRand)
	copy(seed.Nonce[:], nonce)
	sealed, err := vmess.AppendAEADRequest(nil, vmess.NewUserKey(id), seed, &r)
	if err != nil {
		t.Fatal(err)
	}
	names, got = fields("#b-hex")
	if got != hex.EncodeToString(sealed) {
		t.Errorf("VMess header in the page:\n%s\nnative:\n%x", got, sealed)
	}
	if strings.Join(names, ",") != "auth id,sealed length,nonce,sealed command" {
		t.Errorf("VMess fields: %v", names)
	}

	// 3. Captured bytes: the sealed header opens with the right id and
	// time; with another id, or as VLESS, the error is the codec's own.
	decode := func(proto, id, hexBytes string, at int64) {
		t.Helper()
		do("decode form",
			chromedp.SetValue(chromedp.CSS(`#d-proto`), proto),
			chromedp.SetValue(chromedp.CSS(`#d-id`), id),
			chromedp.SetValue(chromedp.CSS(`#d-time`), fmt.Sprint(at)),
			chromedp.SetValue(chromedp.CSS(`#d-hex`), hexBytes),
			chromedp.Click(chromedp.CSS(`#d-decode`)),
			chromedp.Sleep(50*time.Millisecond))
	}
	decode("vmess", st.UUID, hex.EncodeToString(sealed), ts+30)
	if got := text(`#d-out tr[data-key="target"] td`); got != "203.0.113.7:8443" {
		t.Errorf("decoded VMess target: %q", got)
	}
	if _, got = fields("#d-hexout"); got != hex.EncodeToString(sealed) {
		t.Errorf("decoded VMess hex %s", got)
	}
	if e := text(`#d-err`); e != "" {
		t.Errorf("decode error %q", e)
	}
	other := uuid.NewString()
	at := int64(ts + 30)
	_, werr := api.OpenVMessHeader(api.Env{}, &api.VMessOpen{Bytes: sealed, ID: other, Time: &at})
	decode("vmess", other, hex.EncodeToString(sealed), at)
	if e := text(`#d-err`); werr == nil || e != werr.Error() {
		t.Errorf("wrong id: page says %q, codec %v", e, werr)
	}
	_, werr = api.DecodeVLESSRequest(sealed)
	decode("vless", st.UUID, hex.EncodeToString(sealed), at)
	if e := text(`#d-err`); werr == nil || e != werr.Error() {
		t.Errorf("VMess bytes as VLESS: page says %q, codec %v", e, werr)
	}
	decode("vless", st.UUID, hex.EncodeToString(want), at)
	if got := text(`#d-out tr[data-key="target"] td`); got != "example.com:443" {
		t.Errorf("decoded VLESS target: %q", got)
	}

	// 4. The AnyTLS chart: one bar per record of the native seeded plan.
	do("anytls", chromedp.Click(chromedp.CSS(`#a-plan`)), chromedp.WaitVisible(chromedp.CSS(`#a-chart .bar`)))
	bars, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#a-chart .row"), (r) => r.dataset.packet + ":" + Array.from(r.querySelectorAll(".bar"), (b) => b.dataset.len).join(","))`))
	if err != nil {
		t.Fatal(err)
	}
	info, err := api.ParseScheme("")
	if err != nil {
		t.Fatal(err)
	}
	var wantBars []string
	seed1 := uint64(1)
	for p := uint32(0); p <= info.Stop; p++ {
		plan, err := api.PlanWrites(api.Env{}, &api.PlanArgs{Packet: p, Size: 200, Seed: &seed1})
		if err != nil {
			t.Fatal(err)
		}
		var lens []string
		for _, rec := range plan {
			lens = append(lens, fmt.Sprint(rec.Len))
		}
		wantBars = append(wantBars, fmt.Sprintf("%d:%s", p, strings.Join(lens, ",")))
	}
	if w, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`document.querySelector("#a-chart .bar").getBoundingClientRect().width`)); err != nil || w < 10 {
		t.Errorf("first AnyTLS bar is %v px wide (%v): the page's CSP blocks its styles?", w, err)
	}
	if strings.Join(bars, " ") != strings.Join(wantBars, " ") {
		t.Errorf("AnyTLS bars:\n%v\nnative plan:\n%v", bars, wantBars)
	}

	// 5. Live mode through the gateway.
	phase = time.Now()
	wsURL := "wss://" + g.Addr().String() + "/" + st.RouteKey + "/vless-ws"
	do("live",
		chromedp.SetValue(chromedp.CSS(`#l-url`), wsURL),
		chromedp.SetValue(chromedp.CSS(`#l-id`), st.UUID),
		chromedp.SetValue(chromedp.CSS(`#l-target`), target.Listener.Addr().String()),
		chromedp.SetValue(chromedp.CSS(`#l-path`), "/playground"),
		chromedp.Click(chromedp.CSS(`#l-go`)),
		chromedp.WaitVisible(chromedp.CSS(`#live[data-state="done"], #live[data-state="error"]`)))
	state, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById("live").dataset.state`))
	if err != nil {
		t.Fatal(err)
	}
	steps := text(`#l-steps`)
	if body, wantBody := text(`#l-body`), "hello from the target: /playground "+token; state != "done" || body != wantBody {
		t.Errorf("live mode: state %s, body %q, want %q; steps:\n%s", state, body, wantBody, steps)
	}
	if head := text(`#l-head`); !strings.HasPrefix(head, "HTTP/1.1 200 OK") {
		t.Errorf("live mode: response head %q", head)
	}
	for _, s := range []string{"connecting to " + wsURL, "VLESS header sent", "VLESS response header (2 bytes)", "response complete"} {
		if !strings.Contains(steps, s) {
			t.Errorf("live mode steps lack %q:\n%s", s, steps)
		}
	}
	t.Logf("live fetch in %v", time.Since(phase).Round(time.Millisecond))

	// A screenshot of the whole page: a PNG that is not blank.
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	file := filepath.Join(t.TempDir(), "playground.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if colours := countColours(img, 3); colours < 3 {
		t.Errorf("screenshot %s (%v) has %d colours: blank", file, img.Bounds().Size(), colours)
	}
	t.Logf("all in %v", time.Since(start).Round(time.Millisecond))
}

// countColours counts the distinct colours of img, stopping at limit.
func countColours(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}

func mustAddr(t *testing.T, s string) protocols.Addr {
	t.Helper()
	a, err := protocols.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
