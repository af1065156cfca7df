package wasm

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// CodecPackages are the packages that must stay pure: no sockets, no
// processes, no HTTP, so that they compile to WebAssembly and can be fuzzed
// in isolation. Keep in step with CODEC_PKGS in the Makefile.
var CodecPackages = []string{
	"github.com/portico-gw/portico/protocols",
	"github.com/portico-gw/portico/protocols/links",
	"github.com/portico-gw/portico/protocols/vless",
	"github.com/portico-gw/portico/protocols/anytls",
	"github.com/portico-gw/portico/protocols/vmess",
	"github.com/portico-gw/portico/wasm",
	"github.com/portico-gw/portico/wasm/api",
}

// EntryPackages are the WebAssembly mains, by the GOOS they build for
// (each has no files for the other one); they must stay as pure as the
// codecs they expose.
var EntryPackages = map[string][]string{
	"js":     {"github.com/portico-gw/portico/wasm/js"},
	"wasip1": {"github.com/portico-gw/portico/wasm/wasi"},
}

var forbidden = []string{"net", "net/http", "os/exec", "crypto/tls"}

// TestCodecsStayPure is the check Tailscale's jsdeps test makes for its
// WebAssembly client: it lists every package each codec pulls in, for the
// WebAssembly targets, and refuses the network stack.
func TestCodecsStayPure(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("the go command is needed to list dependencies")
	}
	for _, goos := range []string{"js", "wasip1"} {
		pkgs := append(append([]string{}, CodecPackages...), EntryPackages[goos]...)
		cmd := exec.Command("go", append([]string{"list", "-deps", "-json=ImportPath,Deps"}, pkgs...)...)
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "GOARCH=wasm")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOOS=%s go list: %v", goos, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		deps := map[string][]string{}
		for dec.More() {
			var p struct {
				ImportPath string
				Deps       []string
			}
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			deps[p.ImportPath] = p.Deps
		}
		for _, pkg := range pkgs {
			d, ok := deps[pkg]
			if !ok {
				t.Fatalf("GOOS=%s: %s not listed", goos, pkg)
			}
			for _, dep := range d {
				for _, bad := range forbidden {
					if dep == bad {
						t.Errorf("GOOS=%s: %s imports %s (directly or through a dependency)", goos, pkg, bad)
					}
				}
			}
		}
	}
}
