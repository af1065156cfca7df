// Package vmesstest holds test helpers shared by the vmess, vmessserver and
// vmessclient tests: a loopback echo server, a checksummed bulk exchange, a
// relaying tunnel.Handler, a self-signed certificate, carrier dialers, a
// scripted fake conn, a byte-capturing listener and a runner for a real
// V2Ray peer. It is for tests only.
package vmesstest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Echo starts a TCP echo server on 127.0.0.1 and returns its address.
func Echo(t testing.TB) protocols.Addr {
	t.Helper()
	return protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
}

// CloseWrite half-closes c when it can.
func CloseWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Pattern is the pseudo-random stream Exchange writes for a seed: a 1 MiB
// ChaCha8 block repeated, with the offset of every 32 KiB piece written
// into its first 8 bytes, so that no two pieces are equal. It is cheap to
// produce even under the race detector.
type Pattern struct {
	block []byte
	off   int64
}

// NewPattern returns the stream for seed.
func NewPattern(seed uint64) *Pattern {
	rng := mathrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 2})
	b := make([]byte, 1<<20)
	rng.Read(b)
	return &Pattern{block: b}
}

const piece = 32 << 10

// Next fills p (at most 32 KiB) with the next bytes of the stream.
func (g *Pattern) Next(p []byte) {
	for len(p) > 0 {
		in := int(g.off % piece)
		n := min(len(p), piece-in)
		start := int(g.off % int64(len(g.block)))
		copy(p[:n], g.block[start:])
		var tag [8]byte // the piece's offset, over its first 8 bytes
		binary.BigEndian.PutUint64(tag[:], uint64(g.off-int64(in)))
		for k := in; k < 8 && k < in+n; k++ {
			p[k-in] = tag[k]
		}
		p, g.off = p[n:], g.off+int64(n)
	}
}

// Exchange writes size bytes of NewPattern(seed) to conn (through an echo
// server) while reading size bytes back, and compares their SHA-256 sums.
// It does not close conn.
func Exchange(conn net.Conn, size int64, seed uint64) error {
	type result struct {
		sum [32]byte
		err error
	}
	sent := make(chan result, 1)
	go func() {
		h := sha256.New()
		g := NewPattern(seed)
		buf := make([]byte, piece)
		for left := size; left > 0; {
			n := int(min(int64(len(buf)), left))
			g.Next(buf[:n])
			h.Write(buf[:n])
			if _, err := conn.Write(buf[:n]); err != nil {
				sent <- result{err: fmt.Errorf("write after %d bytes: %w", size-left, err)}
				return
			}
			left -= int64(n)
		}
		var r result
		h.Sum(r.sum[:0])
		sent <- r
	}()
	h := sha256.New()
	got, rerr := io.CopyN(h, conn, size)
	w := <-sent
	if rerr != nil {
		return fmt.Errorf("read %d of %d bytes: %w (writer: %v)", got, size, rerr, w.err)
	}
	if w.err != nil {
		return w.err
	}
	if !bytes.Equal(h.Sum(nil), w.sum[:]) {
		return fmt.Errorf("SHA-256 of the %d bytes read back differs from the bytes written", size)
	}
	return nil
}

// RelayHandler is a tunnel.Handler that dials the request's target and
// relays both ways with io.Copy, passing half-closes on, and records every
// request.
type RelayHandler struct {
	mu       sync.Mutex
	requests []tunnel.Request
}

// Requests returns the requests seen so far.
func (h *RelayHandler) Requests() []tunnel.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.Request(nil), h.requests...)
}

func (h *RelayHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	defer conn.Close()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", req.Target.String())
	if err != nil {
		return err
	}
	defer up.Close()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(up, conn)
		CloseWrite(up)
		errc <- err
	}()
	go func() {
		_, err := io.Copy(conn, up)
		CloseWrite(conn)
		errc <- err
	}()
	err = <-errc
	select {
	case err2 := <-errc:
		return errors.Join(err, err2)
	case <-time.After(20 * time.Second):
		return errors.Join(err, errors.New("relay: one direction still open 20s after the other ended"))
	}
}

// HandlePacket records req and relays the datagrams through one
// unconnected loopback UDP socket (IP destinations only), until pc ends or
// ctx is done; replies go back with their source.
func (h *RelayHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	defer pc.Close()
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	return RelayPackets(ctx, pc)
}

// RelayPackets relays pc's datagrams through one unconnected loopback UDP
// socket until pc ends or ctx is done, and closes pc.
func RelayPackets(ctx context.Context, pc tunnel.PacketConn) error {
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		pc.Close()
		return err
	}
	stop := context.AfterFunc(ctx, func() { pc.Close(); out.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := out.ReadFromUDPAddrPort(buf)
			if err != nil || pc.WritePacket(buf[:n], protocols.AddrFromAddrPort(from)) != nil {
				pc.Close()
				return
			}
		}
	}()
	buf := make([]byte, 65535)
	for {
		n, dst, err := pc.ReadPacket(buf)
		if err != nil {
			out.Close()
			<-done
			return nil
		}
		if ap, ok := dst.AddrPort(); ok {
			out.WriteToUDPAddrPort(buf[:n], ap)
		}
	}
}

// UDPEcho starts a UDP echo server on 127.0.0.1 and returns its address.
func UDPEcho(t testing.TB) protocols.Addr {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return protocols.AddrFromAddrPort(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

// PacketEcho sends count datagrams of size random bytes to dst through pc,
// one at a time, and checks each comes back intact (a few resends allowed,
// since loopback UDP may drop under load): each try waits 1 s, and after 5
// tries pc is closed and an error returned.
func PacketEcho(pc tunnel.PacketConn, dst protocols.Addr, count, size int) error {
	type result struct {
		n    int
		from protocols.Addr
		err  error
	}
	got := make(chan result, 1)
	buf := make([]byte, 65535)
	read := func() {
		n, from, err := pc.ReadPacket(buf)
		got <- result{n, from, err}
	}
	msg := make([]byte, size)
	for i := range count {
		rand.Read(msg)
		var r result
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if err := pc.WritePacket(msg, dst); err != nil {
				return fmt.Errorf("packet %d: write: %w", i, err)
			}
			if try == 0 {
				go read()
			}
			select {
			case r = <-got:
				if r.err != nil {
					return fmt.Errorf("packet %d: read: %w", i, r.err)
				}
				if !bytes.Equal(buf[:r.n], msg) {
					return fmt.Errorf("packet %d: %d bytes back from %v differ", i, r.n, r.from)
				}
				ok = true
			case <-time.After(time.Second):
			}
		}
		if !ok {
			pc.Close()
			<-got
			return fmt.Errorf("packet %d: no echo after 5 tries", i)
		}
	}
	return nil
}

// Cert is a self-signed certificate for "localhost" and 127.0.0.1.
type Cert struct {
	TLS               tls.Certificate
	CertPEM, KeyPEM   []byte
	Pool              *x509.CertPool
	CertFile, KeyFile string // written by Files
}

// SelfSigned makes a fresh self-signed ECDSA certificate.
func SelfSigned(t testing.TB) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := Cert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Pool:    x509.NewCertPool(),
	}
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		t.Fatal(err)
	}
	c.Pool.AppendCertsFromPEM(c.CertPEM)
	dir := t.TempDir()
	c.CertFile, c.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(c.CertFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// ServerTLS is a tls.Config serving c.
func (c Cert) ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}
}

// ClientTLS is a tls.Config trusting c for "localhost".
func (c Cert) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: "localhost"}
}

// Dialer is a tunnel.ConnDialer over TCP, with TLS when TLS is set.
type Dialer struct {
	Addr string
	TLS  *tls.Config
}

func (d Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	if d.TLS != nil {
		td := tls.Dialer{NetDialer: &nd, Config: d.TLS}
		return td.DialContext(ctx, "tcp", d.Addr)
	}
	return nd.DialContext(ctx, "tcp", d.Addr)
}

// Serve accepts on ln until it is closed and runs srv on every
// connection, wrapped in TLS when cfg is not nil. A connection refused with
// ErrNotProtocol is closed, as the gateway's decoy would. ServeConn errors
// are sent to the returned channel when there is room.
func Serve(t testing.TB, ln net.Listener, cfg *tls.Config, srv tunnel.Server, h tunnel.Handler) <-chan error {
	errs := make(chan error, 1000)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			go func() {
				err := srv.ServeConn(context.Background(), c, h)
				if errors.Is(err, protocols.ErrNotProtocol) {
					c.Close()
				}
				select {
				case errs <- err:
				default:
				}
			}()
		}
	}()
	return errs
}

// Drain returns the errors waiting in errs, one per line.
func Drain(errs <-chan error) string {
	out := ""
	for {
		select {
		case err := <-errs:
			out += fmt.Sprintf("\n  %v", err)
		default:
			return out
		}
	}
}

// Capture listens on 127.0.0.1 and records what connections send until
// each has been quiet for quiet (or ends). The returned function waits for
// the first recording that is not empty (at most 15 s): a peer's readiness
// probe, which sends nothing, is skipped.
func Capture(t testing.TB, quiet time.Duration) (addr string, wait func() []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan []byte, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b []byte
				buf := make([]byte, 64<<10)
				for {
					c.SetReadDeadline(time.Now().Add(quiet))
					n, err := c.Read(buf)
					b = append(b, buf[:n]...)
					if err != nil {
						break
					}
				}
				if len(b) > 0 {
					select {
					case got <- b:
					default:
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []byte {
		select {
		case b := <-got:
			return b
		case <-time.After(15 * time.Second):
			t.Fatal("capture: nothing recorded in 15s")
			return nil
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// AddrPort is "127.0.0.1:port" as a netip.AddrPort.
func AddrPort(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}

// HostPort joins a host and port like net.JoinHostPort with an int port.
func HostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// V2RayPath finds the v2ray binary. When it is missing the test is skipped,
// or fails when PORTICO_REQUIRE_PEERS=1.
func V2RayPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("v2ray")
	if err != nil {
		msg := "v2ray not found in PATH (Debian: apt-get install -y v2ray); interop with a real VMess peer not tested"
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatal(msg + ", and PORTICO_REQUIRE_PEERS=1")
		}
		t.Skip(msg + "; set PORTICO_REQUIRE_PEERS=1 to fail instead")
	}
	return path
}

// LogBuffer is a bytes.Buffer safe for concurrent use, for slog handlers.
type LogBuffer = lockedBuffer

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// V2Ray is a running v2ray process.
type V2Ray struct {
	cmd    *exec.Cmd
	log    *lockedBuffer
	done   chan struct{}
	Config []byte // the JSON it runs
}

// Log returns what v2ray has printed so far.
func (v *V2Ray) Log() string { return v.log.String() }

// StartV2Ray writes config as JSON to a temporary file, runs `v2ray -config
// FILE` with env added to the environment, and waits until every address in
// waitFor accepts connections. At cleanup it kills the process by its PID
// and, if the test failed, logs v2ray's config and output.
func StartV2Ray(t testing.TB, config any, env []string, waitFor ...string) *V2Ray {
	t.Helper()
	path := V2RayPath(t)
	js, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "v2ray.json")
	if err := os.WriteFile(file, js, 0o600); err != nil {
		t.Fatal(err)
	}
	v := &V2Ray{log: new(lockedBuffer), done: make(chan struct{}), Config: js}
	v.cmd = exec.CommandContext(context.Background(), path, "-config", file)
	v.cmd.Env = append(os.Environ(), env...)
	v.cmd.Stdout, v.cmd.Stderr = v.log, v.log
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		v.cmd.Process.Kill() // this process only, by its PID
		<-v.done
		if t.Failed() {
			t.Logf("v2ray config:\n%s\nv2ray log:\n%s", js, v.Log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for _, addr := range waitFor {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-v.done:
				t.Fatalf("v2ray exited before listening on %s: %v\nconfig:\n%s\nlog:\n%s", addr, v.cmd.ProcessState, js, v.Log())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("v2ray does not listen on %s after 15s\nlog:\n%s", addr, v.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return v
}

// Capture is a file of the codec's testdata/v2ray: bytes a real V2Ray wrote.
type CaptureFile struct {
	Role, Security    string
	AlterID           int
	Time              int64
	Request, Response []byte
}

// ReadCapture reads one of the codec's testdata/v2ray files.
func ReadCapture(t testing.TB, path string) CaptureFile {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c CaptureFile
	for _, line := range strings.Split(string(text), "\n") {
		key, val, ok := strings.Cut(line, ": ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch key {
		case "role":
			c.Role = val
		case "security":
			c.Security = val
		case "alterId":
			c.AlterID, err = strconv.Atoi(val)
		case "time":
			c.Time, err = strconv.ParseInt(val, 10, 64)
		case "request":
			c.Request, err = hex.DecodeString(val)
		case "response":
			c.Response, err = hex.DecodeString(val)
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", path, key, err)
		}
	}
	return c
}

// FakeDialer is a tunnel.ConnDialer that hands out fresh FakeConns made by
// New (NewFake() when nil) and keeps them.
type FakeDialer struct {
	mu    sync.Mutex
	New   func() *FakeConn
	Conns []*FakeConn
}

func (d *FakeDialer) DialConn(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := NewFake()
	if d.New != nil {
		c = d.New()
	}
	d.Conns = append(d.Conns, c)
	return c.Half(), nil
}
