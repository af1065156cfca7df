package edge

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/prototest"
)

// workerdPath finds the workerd binary: $PORTICO_WORKERD, the cache
// scripts/install-workerd.sh fills, or PATH. Missing, the test is skipped,
// or fails when PORTICO_REQUIRE_PEERS=1.
func workerdPath(t testing.TB) string {
	t.Helper()
	var candidates []string
	if p := os.Getenv("PORTICO_WORKERD"); p != "" {
		candidates = append(candidates, p)
	}
	cache := os.Getenv("PORTICO_CACHE")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache", "portico")
		}
	}
	if cache != "" {
		candidates = append(candidates, filepath.Join(cache, "workerd", "node_modules", "@cloudflare", "workerd-"+platform(), "bin", "workerd"))
	}
	if p, err := exec.LookPath("workerd"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	msg := "workerd not found (scripts/install-workerd.sh installs it); the edge worker is not tested"
	if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
		t.Fatal(msg + ", and PORTICO_REQUIRE_PEERS=1")
	}
	t.Skip(msg + "; set PORTICO_REQUIRE_PEERS=1 to fail instead")
	return ""
}

// platform is the suffix of workerd's npm platform package.
func platform() string {
	arch := map[string]string{"amd64": "64", "arm64": "arm64"}[runtime.GOARCH]
	return runtime.GOOS + "-" + arch
}

var codecOnce struct {
	sync.Once
	path string
	err  error
}

// codecWasm builds ./codec for wasip1 once per test binary.
func codecWasm(t testing.TB) string {
	t.Helper()
	codecOnce.Do(func() {
		dir, err := os.MkdirTemp("", "portico-edge-codec")
		if err != nil {
			codecOnce.err = err
			return
		}
		out := filepath.Join(dir, "codec.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", out, "./codec")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			codecOnce.err = fmt.Errorf("build codec: %v\n%s", err, b)
			return
		}
		codecOnce.path = out
	})
	if codecOnce.err != nil {
		t.Fatal(codecOnce.err)
	}
	return codecOnce.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if codecOnce.path != "" {
		os.RemoveAll(filepath.Dir(codecOnce.path))
	}
	os.Exit(code)
}

// workerdOpts describes one workerd: the worker's modules (name -> file),
// its text bindings, and PEM certificates its outbound TLS trusts.
type workerdOpts struct {
	modules  map[string]string // "worker.js" is the main module
	bindings map[string]string
	trust    []string // PEM
	// compatDate is the worker's compatibility date; "" = compatDate.
	compatDate string
}

// compatDate is what a worker deployed today gets; the tests also run an
// older one (oldCompatDate) where they differ (binary messages were
// ArrayBuffers by default before websocket_standard_binary_type).
const (
	compatDate    = "2026-11-01"
	oldCompatDate = "2025-06-01"
)

// Workerd is a running workerd serving one worker on loopback.
type Workerd struct {
	Addr string // host:port of its HTTP socket
	log  *prototest.LockedBuffer
}

// startWorkerd writes a config that serves the worker on 127.0.0.1 and
// gives it a network that reaches loopback only (allow = ["local"]; the
// "internet" service backs both fetch() and connect()), runs workerd on it
// and waits until it accepts. The process is killed, by its PID, at cleanup.
func startWorkerd(t testing.TB, o workerdOpts) *Workerd {
	t.Helper()
	bin := workerdPath(t)
	dir := t.TempDir()
	var mods []string
	names := make([]string, 0, len(o.modules))
	for name := range o.modules {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		return names[i] == "worker.js" || (names[j] != "worker.js" && names[i] < names[j])
	})
	for _, name := range names {
		b, err := os.ReadFile(o.modules[name])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		kind := "esModule"
		if strings.HasSuffix(name, ".wasm") {
			kind = "wasm"
		}
		mods = append(mods, fmt.Sprintf("(name = %q, %s = embed %q)", name, kind, name))
	}
	var binds []string
	for k, v := range o.bindings {
		binds = append(binds, fmt.Sprintf("(name = %q, text = %s)", k, strconv.Quote(v)))
	}
	sort.Strings(binds)
	var trust []string
	for i, pem := range o.trust {
		f := fmt.Sprintf("trust%d.pem", i)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(pem), 0o600); err != nil {
			t.Fatal(err)
		}
		trust = append(trust, fmt.Sprintf("embed %q", f))
	}
	port := prototest.FreePort(t)
	addr := prototest.HostPort("127.0.0.1", port)
	cfg := fmt.Sprintf(`using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "internet", network = (allow = ["local"], tlsOptions = (trustedCertificates = [%s]))),
  ],
  sockets = [(name = "http", address = %q, http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [%s],
  compatibilityDate = %q,
  bindings = [%s],
);
`, strings.Join(trust, ", "), addr, strings.Join(mods, ", "), cmp.Or(o.compatDate, compatDate), strings.Join(binds, ", "))
	cfgPath := filepath.Join(dir, "config.capnp")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &Workerd{Addr: addr, log: new(prototest.LockedBuffer)}
	cmd := exec.Command(bin, "serve", cfgPath, "config", "--verbose")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = w.log, w.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // this process only, by its PID
		<-done
		if t.Failed() {
			t.Logf("workerd config:\n%s\nworkerd log:\n%s", cfg, w.log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return w
		}
		select {
		case <-done:
			t.Fatalf("workerd exited: %v\nconfig:\n%s\nlog:\n%s", cmd.ProcessState, cfg, w.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("workerd does not listen on %s after 15s\nlog:\n%s", addr, w.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log is what workerd printed so far.
func (w *Workerd) Log() string { return w.log.String() }

// edgeWorker starts workerd with worker.js, codec.js and a freshly built
// codec.wasm, and the given bindings.
func edgeWorker(t testing.TB, bindings map[string]string, trust ...string) *Workerd {
	t.Helper()
	return edgeWorkerAt(t, compatDate, bindings, trust...)
}

// edgeWorkerAt is edgeWorker with a compatibility date.
func edgeWorkerAt(t testing.TB, date string, bindings map[string]string, trust ...string) *Workerd {
	t.Helper()
	wasm := codecWasm(t)
	return startWorkerd(t, workerdOpts{
		modules:    map[string]string{"worker.js": "worker.js", "codec.js": "codec.js", "codec.wasm": wasm},
		bindings:   bindings,
		trust:      trust,
		compatDate: date,
	})
}
