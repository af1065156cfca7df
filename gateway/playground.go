package gateway

import (
	"net/http"
	"strings"

	"github.com/portico-gw/portico/wasm/playground"
)

// playgroundCSP allows what the page needs and nothing else: its own
// scripts, WebAssembly, the Function-made wrapper of wasm/js ('unsafe-eval';
// see docs/wasm.md) and WebSockets to any gateway for live mode.
const playgroundCSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'; " +
	"style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// PlaygroundHandler serves the WebAssembly playground (wasm/playground): the
// embedded page, and the two build artifacts it loads from the files wasm
// (portico.wasm) and wasmExec (wasm_exec.js of the Go that built it). Paths
// are relative to where it is mounted.
func PlaygroundHandler(wasm, wasmExec string) http.Handler {
	static := http.FileServerFS(playground.Files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", playgroundCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/" + playground.WasmFile:
			h.Set("Content-Type", "application/wasm")
			http.ServeFile(w, r, wasm)
		case "/" + playground.WasmExecFile:
			h.Set("Content-Type", "text/javascript; charset=utf-8")
			http.ServeFile(w, r, wasmExec)
		case "/", "/index.html", "/style.css", "/app.js":
			static.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// mountPlayground serves the playground under prefix (which ends in "/")
// and the site everywhere else.
func mountPlayground(site http.Handler, prefix string, pg http.Handler) http.Handler {
	inner := http.StripPrefix(strings.TrimSuffix(prefix, "/"), pg)
	bare := strings.TrimSuffix(prefix, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == bare:
			http.Redirect(w, r, prefix, http.StatusMovedPermanently)
		case strings.HasPrefix(r.URL.Path, prefix):
			inner.ServeHTTP(w, r)
		default:
			site.ServeHTTP(w, r)
		}
	})
}
