//go:build js && wasm

// Command js is Portico's GOOS=js GOARCH=wasm entry: it exposes the pure
// codecs to JavaScript under one global namespace, portico, and then waits
// for calls for as long as the page lives.
//
//	portico.vless.encodeRequest({version, id, command, target, flow?, keepAlive?, resolve?, padLen?}) -> Uint8Array
//	portico.vless.decodeRequest(bytes)                    -> object
//	portico.vmess.sealHeader({id, alterId?, security, command, target, time?, ...}) -> Uint8Array
//	portico.vmess.openHeader(bytes, id, time?, alterId?)  -> object
//	portico.anytls.planWrites(schemeText, packet, size, seed?) -> array
//	portico.anytls.parseScheme(schemeText)                -> object
//	portico.links.parse(url)                              -> object
//	portico.links.format(obj)                             -> string
//
// Bytes are passed as a Uint8Array (or a hex string) and returned as a
// Uint8Array. A failure is thrown as an Error whose message is the Go
// error's. The operations are those of package wasm/api; the clock is
// Date.now and randomness crypto.getRandomValues, through Go's time and
// crypto/rand.
//
// Build it with
//
//	GOOS=js GOARCH=wasm go build -trimpath -ldflags="-s -w" -o portico.wasm ./wasm/js
//
// and load it with Go's $(go env GOROOT)/lib/wasm/wasm_exec.js.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"syscall/js"
	"time"

	"github.com/portico-gw/portico/wasm/api"
)

var env = api.Env{
	Now:  func() int64 { return time.Now().Unix() },
	Rand: rand.Reader,
}

func main() {
	ns := object.New()
	for _, name := range api.OpNames() {
		group, fn, _ := strings.Cut(name, ".")
		g := ns.Get(group)
		if g.IsUndefined() {
			g = object.New()
			ns.Set(group, g)
		}
		g.Set(fn, thrower.Invoke(js.FuncOf(wrap(api.Ops[name]))))
	}
	js.Global().Set("portico", ns)
	select {} // keep the functions alive
}

var (
	uint8Array = js.Global().Get("Uint8Array")
	jsonObj    = js.Global().Get("JSON")
	object     = js.Global().Get("Object")
	// thrower wraps a Go function that returns {value} or {error} into one
	// that returns the value or throws an Error: a Go callback cannot throw.
	thrower = js.Global().Get("Function").New("f",
		`return function(...args) { const r = f(...args); if ("error" in r) throw new Error(r.error); return r.value; };`)
)

// wrap turns an operation into a JavaScript function returning {value} or
// {error}: positional arguments become the fields of the arguments object,
// a Uint8Array becomes hex.
func wrap(op api.Op) func(this js.Value, args []js.Value) any {
	return func(_ js.Value, args []js.Value) any {
		v, err := call(op, args)
		r := object.New()
		if err != nil {
			r.Set("error", err.Error())
		} else {
			r.Set("value", v)
		}
		return r
	}
}

func call(op api.Op, args []js.Value) (any, error) {
	raw, err := argsJSON(op, args)
	if err != nil {
		return nil, err
	}
	res, err := api.Call(env, op.Name, raw)
	if err != nil {
		return nil, err
	}
	switch r := res.(type) {
	case api.Bytes:
		a := uint8Array.New(len(r))
		js.CopyBytesToJS(a, r)
		return a, nil
	case string:
		return r, nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("%s: encoding the result: %w", op.Name, err)
	}
	return jsonObj.Call("parse", string(b)), nil
}

func argsJSON(op api.Op, args []js.Value) (json.RawMessage, error) {
	if len(op.Params) == 1 && op.Params[0] == "" {
		if len(args) == 0 || args[0].IsUndefined() || args[0].IsNull() {
			return nil, nil
		}
		return json.RawMessage(jsonObj.Call("stringify", args[0]).String()), nil
	}
	if len(args) > len(op.Params) {
		return nil, fmt.Errorf("%s: %d arguments, want at most %d (%s)", op.Name, len(args), len(op.Params), strings.Join(op.Params, ", "))
	}
	obj := map[string]json.RawMessage{}
	for i, a := range args {
		if a.IsUndefined() || a.IsNull() {
			continue
		}
		if a.InstanceOf(uint8Array) {
			b := make([]byte, a.Length())
			js.CopyBytesToGo(b, a)
			obj[op.Params[i]], _ = json.Marshal(hex.EncodeToString(b))
			continue
		}
		obj[op.Params[i]] = json.RawMessage(jsonObj.Call("stringify", a).String())
	}
	return json.Marshal(obj)
}
