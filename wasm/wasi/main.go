//go:build wasip1

// Command wasi is Portico's GOOS=wasip1 GOARCH=wasm command: it reads one
// JSON request on stdin,
//
//	{"op": "vless.encodeRequest", "args": {...}}
//
// runs it through package wasm/api and writes the JSON result on stdout:
//
//	{"ok": true, "result": ...}   or   {"ok": false, "error": "..."}
//
// The operations and their arguments are wasm/api's (vless.encodeRequest,
// vless.decodeRequest, vmess.sealHeader, vmess.openHeader,
// anytls.planWrites, anytls.parseScheme, links.parse, links.format); bytes
// are hex strings. The clock and randomness are the host's (WASI
// clock_time_get and random_get). The exit status is 0 whenever a response
// was written, failed requests included.
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -trimpath -ldflags="-s -w" -o portico-wasi.wasm ./wasm/wasi
//
// and run it with any WASI runtime: echo '{"op":...}' | wasmtime portico-wasi.wasm
package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/portico-gw/portico/wasm/api"
)

func main() {
	env := api.Env{
		Now:  func() int64 { return time.Now().Unix() },
		Rand: rand.Reader,
	}
	if err := api.Serve(env, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
