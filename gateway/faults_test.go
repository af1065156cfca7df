package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/links"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// The fault tests of issue #9: each fault happens while "survivor" tunnels
// (one per raw-TLS protocol) move checksummed data both ways; after it the
// survivors' checksums must match, the failing tunnel must have ended with
// one log line naming the cause, and no goroutine may be left behind.

// faultSurvivorBytes is what each survivor moves each way at full speed
// before it slows to a trickle that lasts until the fault is over.
const faultSurvivorBytes = 4 << 20

// faultEnv is a server gateway on the embedded default with a client
// outbound for each of its raw-TLS links.
type faultEnv struct {
	t       *testing.T
	dir     string
	st      *State
	g       *Gateway
	logs    *logBuffer
	links   map[string]links.Link
	dialers map[string]tunnel.Dialer
	echo    protocols.Addr
	stopped atomic.Bool
}

// faultLeakCheck registers a goroutine leak check that runs after every
// later cleanup (gateway shutdown, servers, clients) of t.
func faultLeakCheck(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, ignore)
		}
	})
}

// newFaultEnv starts a server gateway on the state dir dir (a temp dir when
// empty) at listen (127.0.0.1:0 when empty), tweak adjusting its config.
func newFaultEnv(t *testing.T, dir, listen string, tweak func(*Config)) *faultEnv {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	st, err := LoadOrCreateState(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.DefaultConfig(listen)
	if tweak != nil {
		tweak(cfg)
	}
	logs := &logBuffer{}
	g, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := &faultEnv{t: t, dir: dir, st: st, g: g, logs: logs, echo: protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())}
	t.Cleanup(func() {
		e.shutdown(2 * time.Second)
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	e.links = rawTLSLinks(t, st, g)
	e.dialers = map[string]tunnel.Dialer{}
	for name, l := range e.links {
		e.dialers[name] = faultDialer(t, l)
	}
	return e
}

// shutdown drains the gateway for at most drain (once).
func (e *faultEnv) shutdown(drain time.Duration) error {
	if e.stopped.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	return e.g.Shutdown(ctx)
}

// faultDialer is the outbound `portico client LINK` would use; it is closed
// when the test ends.
func faultDialer(t *testing.T, l links.Link) tunnel.Dialer {
	t.Helper()
	cfg, _, err := ClientConfigFromLink(l, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	outs, def, err := buildOutbounds(cfg.Outbounds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range outs {
			if c, ok := d.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	})
	return outs[def]
}

// faultProtoNames are the raw-TLS links' names in a fixed order.
func faultProtoNames(m map[string]tunnel.Dialer) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// faultSurvivors are tunnels that move checksummed data through an echo while a
// fault happens elsewhere.
type faultSurvivors struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	errs  []error
	moved atomic.Int64
	ready sync.WaitGroup // each survivor has moved its first chunk
}

// faultStartSurvivors opens one tunnel per dialer to echo. Each moves min bytes
// each way at full speed, then a 16 KiB chunk every 50 ms until finish, and
// compares the SHA-256 of what it sent with that of what came back.
func faultStartSurvivors(t *testing.T, dialers map[string]tunnel.Dialer, echo protocols.Addr, min int64) *faultSurvivors {
	s := &faultSurvivors{stop: make(chan struct{})}
	for _, name := range faultProtoNames(dialers) {
		d := dialers[name]
		s.wg.Add(1)
		s.ready.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.run(d, echo, min); err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, fmt.Errorf("survivor %s: %w", name, err))
				s.mu.Unlock()
			}
		}()
	}
	return s
}

func (s *faultSurvivors) run(d tunnel.Dialer, echo protocols.Addr, min int64) (err error) {
	readyOnce := sync.OnceFunc(s.ready.Done)
	defer readyOnce()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := d.DialStream(ctx, echo)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(45 * time.Second))
	sizes := make(chan int, 4096)
	sent, got := sha256.New(), sha256.New()
	werr := make(chan error, 1)
	go func() {
		defer close(sizes)
		rng := mrand.NewChaCha8([32]byte{byte(min)})
		buf := make([]byte, 64<<10)
		var total int64
		for i := 0; ; i++ {
			n := len(buf)
			if total >= min {
				select {
				case <-s.stop:
					werr <- nil
					return
				case <-time.After(50 * time.Millisecond):
				}
				n = 16 << 10
			}
			rng.Read(buf[:n])
			sent.Write(buf[:n])
			if _, err := conn.Write(buf[:n]); err != nil {
				werr <- fmt.Errorf("write after %d bytes: %w", total, err)
				return
			}
			total += int64(n)
			sizes <- n
		}
	}()
	buf := make([]byte, 64<<10)
	var total int64
	for n := range sizes {
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			conn.Close()
			for range sizes {
			}
			<-werr
			return fmt.Errorf("read back after %d bytes: %w", total, err)
		}
		got.Write(buf[:n])
		total += int64(n)
		s.moved.Add(int64(n))
		readyOnce()
	}
	if err := <-werr; err != nil {
		return err
	}
	if err := faultEnd(conn); err != nil {
		return err
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return fmt.Errorf("SHA-256 of the %d bytes echoed differs from what was sent", total)
	}
	if total < min {
		return fmt.Errorf("moved %d bytes, want at least %d", total, min)
	}
	return nil
}

// finish stops the faultSurvivors and fails t unless each one's data came back
// intact.
func (s *faultSurvivors) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	s.wg.Wait()
	for _, err := range s.errs {
		t.Error(err)
	}
	t.Logf("survivors moved %d bytes each way, checksums match", s.moved.Load())
}

// faultLinesWith returns the log lines containing every one of subs.
func faultLinesWith(text string, subs ...string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// faultWaitLines waits (5 s at most) for n log lines containing every one of subs.
func faultWaitLines(t *testing.T, logs *logBuffer, n int, subs ...string) []string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = faultLinesWith(logs.String(), subs...)
		if len(got) >= n || time.Now().After(deadline) {
			break
		}
	}
	if len(got) != n {
		t.Errorf("%d log lines with %q, want %d:\n%s", len(got), subs, n, strings.Join(got, "\n"))
	}
	return got
}

// faultCheckSurvivorLines: every survivor's tunnel ended with a log line without
// an error.
// extra counts the other tunnels to the same echo.
func faultCheckSurvivorLines(t *testing.T, e *faultEnv, extra int) {
	t.Helper()
	for _, line := range faultWaitLines(t, e.logs, len(e.dialers)+extra, `msg=tunnel `, "target="+e.echo.String()+" ") {
		if strings.Contains(line, "err=") {
			t.Errorf("a survivor's tunnel ended with an error: %s", line)
		}
	}
}

// faultExpectEnd reads conn until it fails and checks that it does so within
// limit, by an error or EOF that is not the read deadline. It returns what
// it read.
func faultExpectEnd(t *testing.T, name string, conn net.Conn, limit time.Duration) []byte {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(limit + 10*time.Second))
	var got bytes.Buffer
	_, err := io.Copy(&got, conn)
	if err == nil {
		err = io.EOF
	}
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || took > limit {
		t.Errorf("%s: the client's tunnel did not end promptly: %v after %v", name, err, took)
	} else {
		t.Logf("%s: the client's tunnel ended after %v: %v (%d bytes)", name, took.Round(time.Millisecond), err, got.Len())
	}
	return got.Bytes()
}

// faultClosedPort returns a loopback address nothing listens on.
func faultClosedPort(t *testing.T) protocols.Addr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return protocols.AddrFromAddrPort(a)
}

// faultResetTarget accepts, reads the 5-byte greeting, sends 256 KiB of a known
// pattern, and then resets the connection (SO_LINGER 0 and Close: an RST,
// no FIN).
func faultResetTarget(t *testing.T, pattern []byte) protocols.Addr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				greeting := make([]byte, 5)
				if _, err := io.ReadFull(c, greeting); err == nil {
					c.Write(pattern)
					time.Sleep(50 * time.Millisecond)
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}()
		}
	}()
	return protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
}

// faultTrackingEcho is an echo whose connections report when they end.
type faultTrackingEcho struct {
	addr   protocols.Addr
	mu     sync.Mutex
	open   int
	closed int
}

func faultNewTrackingEcho(t *testing.T) *faultTrackingEcho {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	te := &faultTrackingEcho{addr: protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns[c] = true
			cmu.Unlock()
			te.mu.Lock()
			te.open++
			te.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c) // ends when the gateway closes its side
				c.Close()
				te.mu.Lock()
				te.closed++
				te.mu.Unlock()
			}()
		}
	}()
	return te
}

func (te *faultTrackingEcho) counts() (open, closed int) {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.open, te.closed
}

// faultBlackHole forwards TCP to a target until hole is called; then it drops
// what it reads, stops reading and never closes: a client that vanished
// without a FIN (a pulled cable, a NAT that forgot the flow).
type faultBlackHole struct {
	ln      net.Listener
	holed   atomic.Bool
	release chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func faultNewBlackHole(t *testing.T, target string) *faultBlackHole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &faultBlackHole{ln: ln, release: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		close(b.release)
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, s)
			b.mu.Unlock()
			b.wg.Add(2)
			go b.pipe(s, c)
			go b.pipe(c, s)
		}
	}()
	return b
}

func (b *faultBlackHole) pipe(dst, src net.Conn) {
	defer b.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if b.holed.Load() {
			<-b.release // drop it, stop reading, never close
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if cw, ok := dst.(*net.TCPConn); ok && err == io.EOF {
				cw.CloseWrite()
			}
			return
		}
	}
}

func (b *faultBlackHole) hole() { b.holed.Store(true) }

// faultEnd ends a tunnel the polite way: a half-close (VLESS v1's end
// marker, a FIN) where the conn has one, then it reads to the echo's EOF.
// AnyTLS and WebSocket have no half-close; their Close ends both ways.
func faultEnd(conn net.Conn) error {
	defer conn.Close()
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	if err := cw.CloseWrite(); errors.Is(err, errors.ErrUnsupported) {
		return nil // a WebSocket conn before the peer's close: Close it is
	} else if err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if err != nil || n != 0 {
		return fmt.Errorf("after the half-close: %d more bytes, %v; want EOF", n, err)
	}
	return nil
}

// faultExchange moves size random bytes each way through conn (an echo) and
// checks them by SHA-256.
func faultExchange(conn net.Conn, size int) error {
	payload := make([]byte, size)
	rng := mrand.NewChaCha8([32]byte{byte(size)})
	rng.Read(payload)
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(payload); werr <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		return errors.New("echo differs (SHA-256)")
	}
	return nil
}

// faultExchangeEnd is faultExchange, then faultEnd.
func faultExchangeEnd(conn net.Conn, size int) error {
	if err := faultExchange(conn, size); err != nil {
		conn.Close()
		return err
	}
	return faultEnd(conn)
}

// faultDialEachExpectEnd opens a tunnel to dst through every dialer,
// sends first, and expects the tunnel to end promptly (or the dial to fail
// promptly): the failing side of a fault.
func faultDialEachExpectEnd(t *testing.T, dialers map[string]tunnel.Dialer, dst protocols.Addr, first []byte) {
	t.Helper()
	for _, name := range faultProtoNames(dialers) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		conn, err := dialers[name].DialStream(ctx, dst)
		cancel()
		if err != nil {
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("%s: dial failed only after %v: %v", name, took, err)
			}
			t.Logf("%s: the client's dial failed: %v", name, err)
			continue
		}
		conn.Write(first)
		faultExpectEnd(t, name, conn, 3*time.Second)
		conn.Close()
	}
}

// TestFaults: each fault of issue #9, with faultSurvivors moving checksummed
// data beside it.
func TestFaults(t *testing.T) {
	t.Run("TargetRefuses", func(t *testing.T) {
		faultLeakCheck(t)
		e := newFaultEnv(t, "", "", nil)
		surv := faultStartSurvivors(t, e.dialers, e.echo, faultSurvivorBytes)
		surv.ready.Wait()
		dst := faultClosedPort(t)
		faultDialEachExpectEnd(t, e.dialers, dst, []byte("hello"))
		surv.finish(t)
		lines := faultWaitLines(t, e.logs, len(e.dialers), "target="+dst.String()+" ")
		for _, line := range lines {
			if !strings.Contains(line, `msg="tunnel dial failed"`) || !strings.Contains(line, "connection refused") {
				t.Errorf("log line does not say the dial was refused: %s", line)
			}
		}
		t.Logf("the failing tunnel's line: %s", lines[0])
		faultCheckSurvivorLines(t, e, 0)
	})

	t.Run("TargetResetsMidStream", func(t *testing.T) {
		faultLeakCheck(t)
		e := newFaultEnv(t, "", "", nil)
		pattern := make([]byte, 256<<10)
		mrand.NewChaCha8([32]byte{7}).Read(pattern)
		dst := faultResetTarget(t, pattern)
		surv := faultStartSurvivors(t, e.dialers, e.echo, faultSurvivorBytes)
		surv.ready.Wait()
		for _, name := range faultProtoNames(e.dialers) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			conn, err := e.dialers[name].DialStream(ctx, dst)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if _, err := conn.Write([]byte("hello")); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got := faultExpectEnd(t, name, conn, 5*time.Second)
			conn.Close()
			// Bytes after the reset may be lost (the RST discards what the
			// target's kernel still held), but what arrived is the target's.
			if !bytes.HasPrefix(pattern, got) {
				t.Errorf("%s: the %d bytes received are not what the target sent", name, len(got))
			}
		}
		surv.finish(t)
		lines := faultWaitLines(t, e.logs, len(e.dialers), `msg=tunnel `, "target="+dst.String()+" ")
		for _, line := range lines {
			if !strings.Contains(line, "connection reset by peer") {
				t.Errorf("log line does not name the reset: %s", line)
			}
		}
		if len(lines) > 0 {
			t.Logf("the failing tunnel's line: %s", lines[0])
		}
		faultCheckSurvivorLines(t, e, 0)
	})

	t.Run("ClientVanishes", func(t *testing.T) {
		faultLeakCheck(t)
		const idle = 2 * time.Second
		e := newFaultEnv(t, "", "", func(c *Config) { c.Timeouts.Idle = Duration(idle) })
		target := faultNewTrackingEcho(t)
		hole := faultNewBlackHole(t, e.g.Addr().String())
		_, port, _ := net.SplitHostPort(hole.ln.Addr().String())
		var victims []net.Conn
		for _, name := range faultProtoNames(e.dialers) {
			l := e.links[name]
			fmt.Sscan(port, &l.Port)
			conn, err := faultDialer(t, l).DialStream(context.Background(), target.addr)
			if err != nil {
				t.Fatalf("%s through the forwarder: %v", name, err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			if err := faultExchange(conn, 64<<10); err != nil {
				t.Fatalf("%s through the forwarder: %v", name, err)
			}
			victims = append(victims, conn)
		}
		// The victims' last bytes have come back: from now on nothing
		// moves on their tunnels, and the forwarder swallows all.
		hole.hole()
		start := time.Now()
		surv := faultStartSurvivors(t, e.dialers, e.echo, faultSurvivorBytes)
		surv.ready.Wait()
		for _, c := range victims {
			c.Write([]byte("lost in the hole")) // the forwarder drops it
		}
		lines := faultWaitLines(t, e.logs, len(victims), `msg=tunnel `, "target="+target.addr.String()+" ")
		took := time.Since(start)
		for _, line := range lines {
			if !strings.Contains(line, "idle_timeout=true") {
				t.Errorf("log line does not say the tunnel idled out: %s", line)
			}
		}
		if len(lines) > 0 {
			t.Logf("the vanished client's tunnel ended after %v: %s", took.Round(time.Millisecond), lines[0])
		}
		if took < idle-250*time.Millisecond || took > idle+3*time.Second {
			t.Errorf("the vanished clients' tunnels ended after %v, want about the idle timeout %v", took, idle)
		}
		// The gateway closed its connections to the target too.
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			open, closed := target.counts()
			if open == len(victims) && closed == open {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("target: %d connections, %d closed; want %d closed", open, closed, len(victims))
			}
		}
		surv.finish(t)
		faultCheckSurvivorLines(t, e, 0)
		// Every tunnel is over without a shutdown.
		for deadline := time.Now().Add(3 * time.Second); e.g.Router().Active() != 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := e.g.Router().Active(); n != 0 {
			t.Errorf("%d tunnels still open", n)
		}
	})

	t.Run("ServerRestartDrains", func(t *testing.T) {
		faultLeakCheck(t)
		const drain = 3 * time.Second
		dir := t.TempDir()
		tweak := func(c *Config) { c.Timeouts.Drain = Duration(drain) }
		e := newFaultEnv(t, dir, "", tweak)
		addr, pin, id := e.g.Addr().String(), e.g.Pin(), e.st.UUID
		stuckTarget := faultNewTrackingEcho(t)
		// The stuck tunnel: open, then silent (its client neither sends
		// nor closes) until the drain deadline.
		stuck, err := e.dialers["vless"].DialStream(context.Background(), stuckTarget.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer stuck.Close()
		stuck.SetDeadline(time.Now().Add(20 * time.Second))
		if err := faultExchange(stuck, 16<<10); err != nil {
			t.Fatal(err)
		}
		// The finishers move 1 MiB at full speed, then trickle until the
		// shutdown has begun, then end by themselves well within the drain.
		surv := faultStartSurvivors(t, e.dialers, e.echo, 1<<20)
		surv.ready.Wait()
		// Leave an idle AnyTLS session in the client's pool.
		if c, err := e.dialers["anytls"].DialStream(context.Background(), e.echo); err != nil {
			t.Fatal(err)
		} else if err := faultExchangeEnd(c, 1024); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		shut := make(chan error, 1)
		go func() { shut <- e.shutdown(drain) }()
		// New connections are refused as soon as the drain begins.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil && strings.Contains(err.Error(), "connection refused") {
				break
			}
			// Connected, or reset: that dial raced the listener's close
			// (a connection in the accept queue is reset).
			if c != nil {
				c.Close()
			}
			if time.Now().After(deadline) {
				t.Fatal("the front door still accepts 2 s into the drain")
			}
		}
		fresh := faultDialer(t, e.links["vmess"])
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if c, err := fresh.DialStream(ctx, e.echo); err == nil {
			if err := faultExchange(c, 1024); err == nil {
				t.Error("a new tunnel was served during the drain")
			}
			c.Close()
		} else {
			t.Logf("a new tunnel during the drain: %v", err)
		}
		cancel()
		// An AnyTLS client with an idle session in its pool asks for a new
		// stream on that session.
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
		if c, err := e.dialers["anytls"].DialStream(ctx, e.echo); err == nil {
			if err := faultExchange(c, 1024); err == nil {
				t.Error("a new AnyTLS stream on a pooled session was served during the drain")
			} else {
				t.Logf("a new AnyTLS stream on a pooled session during the drain: %v", err)
			}
			c.Close()
		} else {
			t.Logf("a new AnyTLS stream on a pooled session during the drain: %v", err)
		}
		cancel()
		faultWaitLines(t, e.logs, 1, `msg="tunnel refused"`, "inbound=anytls", "shutting down")
		time.Sleep(200 * time.Millisecond)
		surv.finish(t) // the finishers complete, checksums intact, during the drain
		if took := time.Since(start); took > drain {
			t.Errorf("the finishers took %v, more than the drain", took)
		}
		// The stuck tunnel is cut at the deadline.
		faultExpectEnd(t, "stuck tunnel", stuck, drain+2*time.Second)
		err = <-shut
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) || took < drain-100*time.Millisecond || took > drain+2*time.Second {
			t.Errorf("Shutdown returned %v after %v, want the deadline after about %v", err, took, drain)
		}
		warn := faultWaitLines(t, e.logs, 1, "tunnels still open at the deadline are cut", "open=1")
		cut := faultWaitLines(t, e.logs, 1, `msg=tunnel `, "target="+stuckTarget.addr.String()+" ", "err=")
		t.Logf("drain lines:\n%s\n%s", strings.Join(warn, "\n"), strings.Join(cut, "\n"))
		faultCheckSurvivorLines(t, e, 1)

		// A new gateway on the same state dir and address: same identity,
		// and the old clients' links work again.
		e2 := newFaultEnv(t, dir, addr, tweak)
		if e2.st.UUID != id || e2.g.Pin() != pin {
			t.Fatalf("after restart: UUID %s pin %s, want %s %s", e2.st.UUID, e2.g.Pin(), id, pin)
		}
		for _, name := range faultProtoNames(e.dialers) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := e.dialers[name].DialStream(ctx, e2.echo)
			cancel()
			if err != nil {
				t.Errorf("%s after restart: %v", name, err)
				continue
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if err := faultExchangeEnd(c, 1<<20); err != nil {
				t.Errorf("%s after restart: %v", name, err)
			}
		}
	})

	t.Run("DNSFailure", func(t *testing.T) {
		faultLeakCheck(t)
		e := newFaultEnv(t, "", "", nil)
		surv := faultStartSurvivors(t, e.dialers, e.echo, faultSurvivorBytes)
		surv.ready.Wait()
		dst := protocols.DomainAddr("does-not-exist.invalid", 80)
		faultDialEachExpectEnd(t, e.dialers, dst, []byte("GET / HTTP/1.0\r\n\r\n"))
		surv.finish(t)
		lines := faultWaitLines(t, e.logs, len(e.dialers), "target="+dst.String()+" ")
		for _, line := range lines {
			if !strings.Contains(line, `msg="tunnel dial failed"`) || !strings.Contains(line, "no such host") {
				t.Errorf("log line does not say the name did not resolve: %s", line)
			}
		}
		if len(lines) > 0 {
			t.Logf("the failing tunnel's line: %s", lines[0])
		}
		faultCheckSurvivorLines(t, e, 0)
	})

	t.Run("StateDiskFull", func(t *testing.T) {
		faultLeakCheck(t)
		// A fresh state dir on a full disk: one clear line, no debris.
		small := faultTinyTmpfs(t, "64k")
		faultFill(t, small)
		fresh := filepath.Join(small, "fresh")
		_, err := LoadOrCreateState(fresh)
		faultCheckDiskFullErr(t, "LoadOrCreateState", err)
		faultCheckNoDebris(t, fresh)

		// State saved, then the disk filled before the first start: the
		// self-signed certificate cannot be written.
		small2 := faultTinyTmpfs(t, "64k")
		st, err := LoadOrCreateState(small2)
		if err != nil {
			t.Fatal(err)
		}
		faultFill(t, small2)
		_, err = New(st.DefaultConfig("127.0.0.1:0"), Options{Log: slog.New(slog.DiscardHandler)})
		faultCheckDiskFullErr(t, "New (self-signed certificate)", err)
		faultCheckNoDebris(t, small2, stateFile)

		// A running gateway whose state dir fills up: at run time it
		// writes nothing there (the self-signed certificate is read once
		// by New; the command line saves state.json once after Start and
		// only warns when it cannot), so established and new tunnels go on.
		dir := faultTinyTmpfs(t, "256k")
		e := newFaultEnv(t, dir, "", nil)
		surv := faultStartSurvivors(t, e.dialers, e.echo, faultSurvivorBytes)
		surv.ready.Wait()
		before, _ := os.ReadFile(filepath.Join(dir, stateFile))
		faultFill(t, dir)
		e.st.Listen = e.g.Addr().String()
		faultCheckDiskFullErr(t, "State.Save", e.st.Save())
		if after, _ := os.ReadFile(filepath.Join(dir, stateFile)); !bytes.Equal(before, after) {
			t.Errorf("a failed Save changed state.json:\n%s\nwas:\n%s", after, before)
		}
		faultCheckNoDebris(t, dir, stateFile, "cert.pem", "key.pem", "filler")
		for _, name := range faultProtoNames(e.dialers) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := e.dialers[name].DialStream(ctx, e.echo)
			cancel()
			if err != nil {
				t.Errorf("%s on a full disk: %v", name, err)
				continue
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if err := faultExchangeEnd(c, 1<<20); err != nil {
				t.Errorf("%s on a full disk: %v", name, err)
			}
		}
		surv.finish(t)
		// The faultSurvivors' lines plus one per new tunnel; none with an error.
		for _, line := range faultWaitLines(t, e.logs, 2*len(e.dialers), `msg=tunnel `, "target="+e.echo.String()+" ") {
			if strings.Contains(line, "err=") {
				t.Errorf("a tunnel ended with an error on a full disk: %s", line)
			}
		}
		if strings.Contains(e.logs.String(), "no space") {
			t.Errorf("the gateway logged about the full disk:\n%s", e.logs.String())
		}
	})
}

// faultTinyTmpfs mounts a tmpfs of size on a new temp dir, unmounted when the
// test ends. Without permission to mount it skips, unless
// PORTICO_REQUIRE_PEERS=1.
func faultTinyTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		msg := fmt.Sprintf("cannot mount a tmpfs to faultFill (needs root or CAP_SYS_ADMIN): %v", err)
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// faultFill writes dir's file system full.
func faultFill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i := 0; i < 1<<16; i++ {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the tmpfs never filled up")
}

func faultCheckDiskFullErr(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s on a full disk: no error", what)
	case !strings.Contains(err.Error(), "no space left on device") || strings.Contains(err.Error(), "\n"):
		t.Errorf("%s on a full disk: %q, want one line naming \"no space left on device\"", what, err)
	default:
		t.Logf("%s on a full disk: %v", what, err)
	}
}

// faultCheckNoDebris: dir holds only the files named in keep (and the filler)
// and nothing half-written.
func faultCheckNoDebris(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, ent := range ents {
		if ent.Name() == "filler" || slices.Contains(keep, ent.Name()) {
			continue
		}
		t.Errorf("%s: left behind after a failure: %s", dir, ent.Name())
	}
}
