package edge

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestCodecStaysPureAndSmall: the edge codec pulls in no network stack
// (like wasm/purity_test.go for the other entries) and stays far under the
// 10 MiB module limit of Workers-style runtimes (3 MiB compressed on
// Cloudflare's free plan).
func TestCodecStaysPureAndSmall(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./codec")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, bad := range []string{"net", "net/http", "os/exec", "crypto/tls"} {
		if slices.Contains(deps, bad) {
			t.Errorf("wasm/edge/codec imports %s", bad)
		}
	}
	for _, want := range []string{"github.com/portico-gw/portico/protocols/vless", "github.com/portico-gw/portico/protocols/vmess"} {
		if !slices.Contains(deps, want) {
			t.Errorf("wasm/edge/codec does not use %s", want)
		}
	}
	b, err := os.ReadFile(codecWasm(t))
	if err != nil {
		t.Fatal(err)
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	t.Logf("codec.wasm: %d bytes, %d gzip -9", len(b), z.Len())
	if len(b) > 10<<20 || z.Len() > 3<<20 {
		t.Fatalf("codec.wasm is %d bytes (%d gzipped): over the edge limits", len(b), z.Len())
	}
}
