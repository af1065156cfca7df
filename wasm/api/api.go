// Package api is the one place where Portico's WebAssembly entries meet the
// pure codecs: each operation takes its arguments as a JSON object and
// returns a JSON-friendly value, so the GOOS=js entry (wasm/js), the
// GOOS=wasip1 command (wasm/wasi) and native unit tests all go through the
// same code.
//
// The operations, by name (see [Ops] for their positional parameters in
// JavaScript):
//
//	vless.encodeRequest  {version, id, command, target, flow?, seed?, udpMulti?, keepAlive?, resolve?, padLen?} -> bytes
//	vless.decodeRequest  {bytes}                                      -> VLESSDecoded
//	vmess.sealHeader     {id, alterId?, security, command, target, time?, ...fixed randomness} -> bytes
//	vmess.openHeader     {bytes, id, time?, alterId?}                  -> VMessOpened
//	anytls.planWrites    {scheme, packet, size, seed?}                 -> []Record
//	anytls.parseScheme   {scheme}                                      -> SchemeInfo
//	links.parse          {url}                                         -> Link
//	links.format         Link                                          -> string
//
// Bytes travel as [Bytes]: lowercase hex in JSON (the wasip1 command), a
// Uint8Array in JavaScript. A codec's error is returned as it is, so the
// message a caller sees is the codec's own; a bad argument gives an error
// prefixed with the operation and the field.
//
// Like the codecs, the package reads no clock and draws no randomness of
// its own: the entries pass both in an [Env].
package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Env is what an operation may take from the outside world: the clock
// (Unix seconds) and a source of random bytes. The zero Env has neither;
// an operation that needs one then fails.
type Env struct {
	Now  func() int64
	Rand io.Reader
}

func (e Env) now() (int64, error) {
	if e.Now == nil {
		return 0, errors.New("no clock: pass time")
	}
	return e.Now(), nil
}

func (e Env) read(b []byte) error {
	if e.Rand == nil {
		return errors.New("no randomness: pass the random values")
	}
	if _, err := io.ReadFull(e.Rand, b); err != nil {
		return fmt.Errorf("randomness: %w", err)
	}
	return nil
}

// Bytes is a byte string: lowercase hex in JSON. Unmarshalling also accepts
// whitespace and ':' between the digits.
type Bytes []byte

// MarshalJSON encodes b as a hex string.
func (b Bytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(hex.EncodeToString(b))
}

// UnmarshalJSON decodes a hex string.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return errors.New("want a hex string")
	}
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r', ':':
			return -1
		}
		return r
	}, s)
	x, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("bad hex: %w", err)
	}
	*b = x
	return nil
}

// Field names a span of an encoded message, for a viewer that colours hex.
type Field struct {
	Name   string `json:"name"`
	Offset int    `json:"offset"`
	Len    int    `json:"len"`
}

// Op is one operation: its name and how it is called.
type Op struct {
	Name string
	// Params are the JavaScript positional parameters, in order: each
	// names the field of the arguments object it fills. A single "" means
	// the one parameter is the arguments object itself.
	Params []string
	call   func(Env, json.RawMessage) (any, error)
}

// Ops are the operations, by name. It is a fixed table: callers read it.
var Ops = index(
	Op{"vless.encodeRequest", []string{""}, op("vless.encodeRequest", func(_ Env, a *VLESSRequest) (any, error) {
		return EncodeVLESSRequest(a)
	})},
	Op{"vless.decodeRequest", []string{"bytes"}, op("vless.decodeRequest", func(_ Env, a *struct {
		Bytes Bytes `json:"bytes"`
	}) (any, error) {
		return DecodeVLESSRequest(a.Bytes)
	})},
	Op{"vmess.sealHeader", []string{""}, op("vmess.sealHeader", func(e Env, a *VMessSeal) (any, error) {
		return SealVMessHeader(e, a)
	})},
	Op{"vmess.openHeader", []string{"bytes", "id", "time", "alterId"}, op("vmess.openHeader", func(e Env, a *VMessOpen) (any, error) {
		return OpenVMessHeader(e, a)
	})},
	Op{"anytls.planWrites", []string{"scheme", "packet", "size", "seed"}, op("anytls.planWrites", func(e Env, a *PlanArgs) (any, error) {
		return PlanWrites(e, a)
	})},
	Op{"anytls.parseScheme", []string{"scheme"}, op("anytls.parseScheme", func(_ Env, a *struct {
		Scheme string `json:"scheme"`
	}) (any, error) {
		return ParseScheme(a.Scheme)
	})},
	Op{"links.parse", []string{"url"}, op("links.parse", func(_ Env, a *struct {
		URL string `json:"url"`
	}) (any, error) {
		return ParseLink(a.URL)
	})},
	Op{"links.format", []string{""}, op("links.format", func(_ Env, a *Link) (any, error) {
		return FormatLink(a), nil
	})},
)

func index(ops ...Op) map[string]Op {
	m := make(map[string]Op, len(ops))
	for _, o := range ops {
		m[o.Name] = o
	}
	return m
}

// op adapts a typed operation to Op.call: it decodes the arguments strictly
// (an unknown field is an error) into A.
func op[A any](name string, f func(Env, *A) (any, error)) func(Env, json.RawMessage) (any, error) {
	return func(e Env, raw json.RawMessage) (any, error) {
		var a A
		if len(bytes.TrimSpace(raw)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&a); err != nil {
				return nil, fmt.Errorf("%s: arguments: %w", name, err)
			}
		}
		return f(e, &a)
	}
}

// OpNames lists the operations, sorted.
func OpNames() []string {
	names := make([]string, 0, len(Ops))
	for n := range Ops {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Call runs the operation name with args, a JSON object. The result is a
// [Bytes], a string, or a struct or slice that encodes to JSON.
func Call(e Env, name string, args json.RawMessage) (any, error) {
	o, ok := Ops[name]
	if !ok {
		return nil, fmt.Errorf("api: unknown operation %q", name)
	}
	return o.call(e, args)
}

// Request is the JSON request the wasip1 command reads.
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args"`
}

// Response is the JSON answer to a Request: OK with Result, or Error.
type Response struct {
	OK     bool   `json:"ok"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Serve reads one Request from r and writes its Response to w, followed by
// a newline. It returns an error only when w cannot be written: every
// failure of the request itself is in the Response.
func Serve(e Env, r io.Reader, w io.Writer) error {
	resp := serve(e, r)
	b, err := json.Marshal(resp)
	if err != nil {
		b, _ = json.Marshal(Response{Error: "api: encoding the result: " + err.Error()})
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("api: writing the response: %w", err)
	}
	return nil
}

func serve(e Env, r io.Reader) Response {
	var req Request
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Response{Error: "api: reading the request: " + err.Error()}
	}
	res, err := Call(e, req.Op, req.Args)
	if err != nil {
		return Response{Error: err.Error()}
	}
	return Response{OK: true, Result: res}
}

// parseUUID reads a UUID in its 36-character text form, or as 32 hex
// digits. (github.com/google/uuid would pull in net for wasip1.)
func parseUUID(s string) ([16]byte, error) {
	var id [16]byte
	h := s
	if len(s) == 36 {
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return id, fmt.Errorf("invalid UUID %q", s)
		}
		h = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	}
	if len(h) != 32 {
		return id, fmt.Errorf("invalid UUID %q: want 36 characters", s)
	}
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, fmt.Errorf("invalid UUID %q", s)
	}
	return id, nil
}

func formatUUID(id [16]byte) string {
	h := hex.EncodeToString(id[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// fixed copies a hex argument of exactly n bytes into dst, or draws dst
// from e when the argument is absent.
func fixed(e Env, dst []byte, arg Bytes, name string) error {
	if arg == nil {
		if err := e.read(dst); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if len(arg) != len(dst) {
		return fmt.Errorf("%s: want %d bytes, got %d", name, len(dst), len(arg))
	}
	copy(dst, arg)
	return nil
}
