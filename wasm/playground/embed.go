// Package playground holds Portico's browser playground: a static page
// (index.html, style.css, app.js; no framework) over the GOOS=js build of
// wasm/js. `portico playground` serves these files together with
// portico.wasm and the wasm_exec.js of the Go that built it, which are build
// artifacts and are not embedded here (see docs/wasm.md).
package playground

import "embed"

// Files are the page's static files, at the root of the FS.
//
//go:embed index.html style.css app.js
var Files embed.FS

// Asset names the page loads besides Files, from the same origin.
const (
	WasmFile     = "portico.wasm" // GOOS=js GOARCH=wasm go build ./wasm/js
	WasmExecFile = "wasm_exec.js" // $(go env GOROOT)/lib/wasm/wasm_exec.js of the same Go
)
