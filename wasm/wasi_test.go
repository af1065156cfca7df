package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/portico-gw/portico/wasm/api"
)

// wasiModule builds wasm/wasi for wasip1 and compiles it with wazero.
func wasiModule(t *testing.T) (context.Context, wazero.Runtime, wazero.CompiledModule) {
	t.Helper()
	bin := buildWasm(t, "wasip1", "github.com/portico-gw/portico/wasm/wasi", t.TempDir())
	code, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	mod, err := rt.CompileModule(ctx, code)
	if err != nil {
		t.Fatalf("wazero: compile: %v", err)
	}
	return ctx, rt, mod
}

// runWASI runs the command once with request on stdin and returns stdout.
func runWASI(t *testing.T, ctx context.Context, rt wazero.Runtime, mod wazero.CompiledModule, request []byte) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cfg := wazero.NewModuleConfig().WithName("").WithArgs("portico-wasi").
		WithStdin(bytes.NewReader(request)).WithStdout(&stdout).WithStderr(&stderr).
		WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader)
	m, err := rt.InstantiateModule(ctx, mod, cfg)
	if m != nil {
		m.Close(ctx)
	}
	var exit *sys.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 0) {
		t.Fatalf("wasi %s: %v\nstderr: %s", request, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestWASI runs every known-answer case through the wasip1 command under
// wazero and requires the native answer, byte for byte.
func TestWASI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the wasip1 command")
	}
	start := time.Now()
	ctx, rt, mod := wasiModule(t)
	t.Logf("build and compile: %v", time.Since(start))

	cases := knownAnswerCases(t)
	for _, c := range cases {
		req, _ := json.Marshal(c)
		out := runWASI(t, ctx, rt, mod, req)
		var resp struct {
			OK     bool            `json:"ok"`
			Result json.RawMessage `json:"result"`
			Error  string          `json:"error"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("%s: response %q: %v", req, out, err)
		}
		got := outcome{Error: resp.Error}
		if resp.OK {
			got.Result = canonical(t, resp.Result)
		}
		check(t, "wasip1", c, got)
	}

	// With the host's clock and randomness: a fresh header opens natively.
	out := runWASI(t, ctx, rt, mod, []byte(`{"op":"vmess.sealHeader","args":{"id":"`+testUUID+`","security":"aes-128-gcm","command":"tcp","target":"example.com:443"}}`))
	var resp api.Response
	if err := json.Unmarshal(out, &resp); err != nil || !resp.OK {
		t.Fatalf("random seal: %s %v", out, err)
	}
	opened, err := api.Call(api.Env{Now: func() int64 { return time.Now().Unix() }}, "vmess.openHeader",
		json.RawMessage(`{"bytes":"`+resp.Result.(string)+`","id":"`+testUUID+`"}`))
	if err != nil || opened.(*api.VMessOpened).Target != "example.com:443" {
		t.Errorf("random seal does not open natively: %v %+v", err, opened)
	}
	// A request that is not one.
	if out := runWASI(t, ctx, rt, mod, []byte(`{"op":"nope"}`)); !strings.HasPrefix(string(out), `{"ok":false,"error":"api: unknown operation`) {
		t.Errorf("unknown op: %s", out)
	}
	t.Logf("%d cases in %v", len(cases)+2, time.Since(start))
}
