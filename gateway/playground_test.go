package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlaygroundMounted: with server.playground set, the page and its two
// artifacts are served under the path, the bare path redirects, and the
// rest of the site is untouched; without it, the path is the site's 404.
func TestPlaygroundMounted(t *testing.T) {
	dir := t.TempDir()
	wasm, exec := filepath.Join(dir, "portico.wasm"), filepath.Join(dir, "wasm_exec.js")
	os.WriteFile(wasm, []byte("\x00asm fake module"), 0o644)
	os.WriteFile(exec, []byte("// go's loader"), 0o644)
	st, err := LoadOrCreateState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mounted := range []bool{true, false} {
		cfg := st.DefaultConfig("127.0.0.1:0")
		if mounted {
			cfg.Server.Playground = &PlaygroundConfig{Path: "/play/"}
		}
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		g, err := New(cfg, Options{Log: slog.New(slog.DiscardHandler), PlaygroundWasm: wasm, PlaygroundWasmExec: exec})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		get := func(path string) (int, string, http.Header) {
			resp, err := hc.Get("https://" + g.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b), resp.Header
		}
		code, body, hdr := get("/play/")
		if mounted && (code != 200 || !strings.Contains(body, "app.js") || hdr.Get("Content-Security-Policy") == "") {
			t.Fatalf("GET /play/ = %d %.80q", code, body)
		}
		if !mounted && (code != 404 || !strings.Contains(body, "Page not found")) {
			t.Fatalf("without the playground, GET /play/ = %d %.80q", code, body)
		}
		if mounted {
			if code, body, hdr := get("/play/portico.wasm"); code != 200 || body != "\x00asm fake module" || hdr.Get("Content-Type") != "application/wasm" {
				t.Fatalf("GET /play/portico.wasm = %d %q %q", code, body, hdr.Get("Content-Type"))
			}
			if code, _, hdr := get("/play"); code != 301 || hdr.Get("Location") != "/play/" {
				t.Fatalf("GET /play = %d %q", code, hdr.Get("Location"))
			}
		}
		if code, body, _ := get("/about.html"); code != 200 || !strings.Contains(body, "Two friends") {
			t.Fatalf("the site under a mounted playground: %d", code)
		}
		g.Shutdown(context.Background())
	}
	if _, err := ParseConfig([]byte(`{"server": {"playground": {"path": "/"}}}`)); err == nil || !strings.Contains(err.Error(), "server.playground.path") {
		t.Fatalf("root path accepted: %v", err)
	}
}
