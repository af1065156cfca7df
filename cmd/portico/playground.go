package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/wasm/playground"
)

// modulePath is the module a source checkout must declare for
// `portico playground` to build portico.wasm from it.
const modulePath = "github.com/portico-gw/portico"

func cmdPlayground(args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("playground", stderr)
	listen := fset.String("listen", "127.0.0.1:8080", "address to serve the playground on")
	wasmDir := fset.String("wasm", "", "folder holding "+playground.WasmFile+" and "+playground.WasmExecFile+
		" (default: next to this executable, else built from the source checkout around the working folder)")
	if err := parse(fset, args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "portico playground: unexpected argument %q\n", fset.Arg(0))
		return errUsage
	}
	ln, err := listenPlayground(*listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	assets, err := findPlaygroundAssets(*wasmDir, stderr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gateway.PlaygroundHandler(assets.Wasm, assets.WasmExec), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "playground: http://%s/ (wasm %s)\n", ln.Addr(), assets.Wasm)
	select {
	case err := <-errc:
		return fmt.Errorf("playground: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// listenPlayground listens on addr with a one-line error a user can act on.
func listenPlayground(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case err == nil:
		return ln, nil
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("playground: %s is already in use; pass -listen HOST:PORT", addr)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("playground: %s: permission denied; use a port above 1023", addr)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	return nil, fmt.Errorf("playground: listen %s: %v", addr, err)
}

// playgroundAssets are the two build artifacts the page loads besides its
// embedded files: the GOOS=js build of wasm/js and the wasm_exec.js of the
// Go that built it.
type playgroundAssets struct {
	Wasm, WasmExec string // file paths
}

// findPlaygroundAssets finds portico.wasm and wasm_exec.js: in dir when
// given; else next to the executable (wasm_exec.js from there, or from the
// installed Go); else it builds them from the source checkout that holds the
// working folder into the user cache folder. Progress goes to log.
func findPlaygroundAssets(dir string, log io.Writer) (playgroundAssets, error) {
	if dir != "" {
		a := playgroundAssets{filepath.Join(dir, playground.WasmFile), filepath.Join(dir, playground.WasmExecFile)}
		for _, f := range []string{a.Wasm, a.WasmExec} {
			if !isFile(f) {
				return a, fmt.Errorf("playground: -wasm %s: no %s there", dir, filepath.Base(f))
			}
		}
		return a, nil
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			d := filepath.Dir(exe)
			a := playgroundAssets{filepath.Join(d, playground.WasmFile), filepath.Join(d, playground.WasmExecFile)}
			if isFile(a.Wasm) {
				if !isFile(a.WasmExec) {
					goroot, err := goEnvGOROOT()
					if err != nil {
						return a, fmt.Errorf("playground: %s has no %s beside it and %v", a.Wasm, playground.WasmExecFile, err)
					}
					a.WasmExec = filepath.Join(goroot, "lib", "wasm", playground.WasmExecFile)
					fmt.Fprintf(log, "playground: using %s (it must come from the Go that built %s)\n", a.WasmExec, a.Wasm)
				}
				return a, nil
			}
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return playgroundAssets{}, fmt.Errorf("playground: %v", err)
	}
	root, ok := findModuleRoot(wd)
	if !ok {
		return playgroundAssets{}, fmt.Errorf("playground: %s unavailable: put %s and %s next to the portico executable, pass -wasm DIR, or run from a Portico source checkout with Go installed",
			playground.WasmFile, playground.WasmFile, playground.WasmExecFile)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	out := filepath.Join(cache, "portico", "playground")
	fmt.Fprintf(log, "playground: building %s from %s into %s\n", playground.WasmFile, root, out)
	return buildPlaygroundAssets(root, out)
}

// buildPlaygroundAssets builds wasm/js of the checkout at root into
// out/portico.wasm and copies the installed Go's wasm_exec.js beside it.
func buildPlaygroundAssets(root, out string) (playgroundAssets, error) {
	a := playgroundAssets{filepath.Join(out, playground.WasmFile), filepath.Join(out, playground.WasmExecFile)}
	if _, err := exec.LookPath("go"); err != nil {
		return a, fmt.Errorf("playground: %s unavailable: building it needs go in PATH (or pass -wasm DIR)", playground.WasmFile)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return a, fmt.Errorf("playground: %v", err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", a.Wasm, "./wasm/js")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return a, fmt.Errorf("playground: building %s failed: %v: %s", playground.WasmFile, err, firstLine(msg))
	}
	goroot, err := goEnvGOROOT()
	if err != nil {
		return a, fmt.Errorf("playground: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(goroot, "lib", "wasm", playground.WasmExecFile))
	if err != nil {
		return a, fmt.Errorf("playground: %v", err)
	}
	if err := os.WriteFile(a.WasmExec, src, 0o644); err != nil {
		return a, fmt.Errorf("playground: %v", err)
	}
	return a, nil
}

func goEnvGOROOT() (string, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// findModuleRoot walks up from dir to the folder whose go.mod declares
// modulePath.
func findModuleRoot(dir string) (string, bool) {
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			sc.Scan()
			f.Close()
			if strings.TrimSpace(strings.TrimPrefix(sc.Text(), "module")) == modulePath {
				return dir, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func isFile(name string) bool {
	st, err := os.Stat(name)
	return err == nil && st.Mode().IsRegular()
}

func firstLine(b []byte) string {
	b = bytes.TrimSpace(b)
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return string(b[:i]) + " …"
	}
	return string(b)
}
