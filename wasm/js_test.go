package wasm

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/wasm/api"
)

// TestJS runs every known-answer case through the GOOS=js build under Node,
// calling the functions of the portico namespace with positional arguments
// and Uint8Arrays as a page would, and requires the native answers; errors
// must be thrown as Error objects with the Go error's message. It is skipped
// when node is not installed.
func TestJS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the js build and runs node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found")
	}
	start := time.Now()
	dir := t.TempDir()
	bin := buildWasm(t, "js", "github.com/portico-gw/portico/wasm/js", dir)

	type jsCall struct {
		Fn    string `json:"fn"`
		Args  []any  `json:"args"`
		Bytes []int  `json:"bytes"`
	}
	cases := knownAnswerCases(t)
	calls := make([]jsCall, len(cases))
	for i, c := range cases {
		var args map[string]any
		if err := json.Unmarshal(c.Args, &args); err != nil {
			t.Fatal(err)
		}
		call := jsCall{Fn: c.Op, Bytes: []int{}}
		params := api.Ops[c.Op].Params
		if len(params) == 1 && params[0] == "" {
			call.Args = []any{args}
		} else {
			for j, p := range params {
				call.Args = append(call.Args, args[p])
				if p == "bytes" {
					call.Bytes = append(call.Bytes, j)
				}
			}
		}
		calls[i] = call
	}
	callsFile := filepath.Join(dir, "calls.json")
	b, _ := json.Marshal(calls)
	if err := os.WriteFile(callsFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	wasmExec := filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js")
	cmd := exec.Command(node, "--stack-size=8192", filepath.Join("testdata", "run_js.js"), wasmExec, bin, callsFile)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node: %v\n%s", err, stderr)
	}
	var results []struct {
		Value   json.RawMessage `json:"value"`
		Error   *string         `json:"error"`
		IsError bool            `json:"isError"`
	}
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(cases) {
		t.Fatalf("node output %.300s: %v (%d results for %d calls)", out, err, len(results), len(cases))
	}
	for i, r := range results {
		var got outcome
		switch {
		case r.Error != nil:
			got.Error = *r.Error
			if !r.IsError {
				t.Errorf("%s: thrown value is not an Error", cases[i].Op)
			}
		default:
			var v struct {
				Hex *string `json:"hex"`
			}
			if json.Unmarshal(r.Value, &v) == nil && v.Hex != nil {
				got.Result = `"` + *v.Hex + `"`
			} else {
				got.Result = canonical(t, r.Value)
			}
		}
		check(t, "js", cases[i], got)
	}
	t.Logf("%d cases in %v", len(cases), time.Since(start))
}
