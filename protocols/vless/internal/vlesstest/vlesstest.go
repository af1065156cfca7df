// Package vlesstest holds test helpers shared by the vlessserver and
// vlessclient tests: a loopback echo server, a checksummed bulk exchange, a
// relaying tunnel.Handler, a self-signed certificate, carrier dialers,
// and a runner for a real V2Ray peer. It is for tests only.
package vlesstest

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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Echo starts a TCP echo server on 127.0.0.1 and returns its address. Each
// connection is echoed until EOF, then half-closed (or closed).
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

// Exchange writes size pseudo-random bytes to conn (through an echo
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
		rng := mathrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
		buf := make([]byte, 32<<10)
		for left := size; left > 0; {
			n := int(min(int64(len(buf)), left))
			rng.Read(buf[:n])
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
// relays both ways with io.Copy, recording every request. Like the
// gateway's router it reports the dialled address (tunnel.RemoteReporter,
// unless NoReport) and the dial's outcome (tunnel.DialReporter), passes a
// clean end of one direction on as a half-close, and closes both sides
// when a direction fails (so a target's reset reaches the client as an
// abort, not as a clean end).
type RelayHandler struct {
	NoReport bool // do not call ReportRemote

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
	if err == nil && !h.NoReport {
		if rr, ok := conn.(tunnel.RemoteReporter); ok {
			rr.ReportRemote(up.RemoteAddr().(*net.TCPAddr).AddrPort())
		}
	}
	if dr, ok := conn.(tunnel.DialReporter); ok {
		dr.ReportDial(err)
	}
	if err != nil {
		return err
	}
	defer up.Close()
	errc := make(chan error, 2)
	pass := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err != nil {
			conn.Close()
			up.Close()
		} else {
			CloseWrite(dst)
		}
		errc <- err
	}
	go pass(up, conn)
	go pass(conn, up)
	err = <-errc
	select {
	case err2 := <-errc:
		return errors.Join(err, err2)
	case <-time.After(10 * time.Second):
		return errors.Join(err, errors.New("relay: one direction still open 10s after the other ended"))
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

// ResetTarget starts a TCP server on 127.0.0.1 that reads once from each
// connection and then resets it (RST, SO_LINGER 0), and returns its
// address.
func ResetTarget(t testing.TB) protocols.Addr {
	t.Helper()
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
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Read(make([]byte, 1024))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	return protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
}

// CountingListener counts the connections it accepts.
type CountingListener struct {
	net.Listener
	n atomic.Int64
}

// Accept counts and returns the next connection.
func (l *CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// Accepted is the number of connections accepted so far.
func (l *CountingListener) Accepted() int64 { return l.n.Load() }

// Cert is a self-signed certificate for "localhost" and 127.0.0.1.
type Cert struct {
	TLS     tls.Certificate
	CertPEM []byte
	KeyPEM  []byte
	Pool    *x509.CertPool
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
	return c
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
// connection, wrapped in TLS when cfg is not nil. ServeConn errors are sent
// to the returned channel when there is room.
func Serve(t testing.TB, ln net.Listener, cfg *tls.Config, srv tunnel.Server, h tunnel.Handler) <-chan error {
	errs := make(chan error, 100)
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

// AddrPort is netip.MustParseAddrPort for "127.0.0.1:port".
func AddrPort(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}

// V2RayPath finds the v2ray binary. When it is missing the test is skipped,
// or fails when PORTICO_REQUIRE_PEERS=1.
func V2RayPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("v2ray")
	if err != nil {
		msg := "v2ray not found in PATH (Debian: apt-get install -y v2ray); interop with a real VLESS peer not tested"
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatal(msg + ", and PORTICO_REQUIRE_PEERS=1")
		}
		t.Skip(msg + "; set PORTICO_REQUIRE_PEERS=1 to fail instead")
	}
	return path
}

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
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

// Log returns what v2ray has printed so far.
func (v *V2Ray) Log() string { return v.log.String() }

// StartV2Ray writes config as JSON to a temporary file, runs
// `v2ray -config FILE`, and waits until every address in waitFor accepts
// connections. At cleanup it kills the process by its PID and, if the test
// failed, logs v2ray's output.
func StartV2Ray(t testing.TB, config any, waitFor ...string) *V2Ray {
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
	v := &V2Ray{log: new(lockedBuffer), done: make(chan struct{})}
	v.cmd = exec.CommandContext(context.Background(), path, "-config", file)
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

// HostPort joins a host and port like net.JoinHostPort with an int port.
func HostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
