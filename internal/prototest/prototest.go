// Package prototest has the helpers the protocol packages' tests share:
// loopback echo targets for streams and datagrams, a datagram relay for
// fake handlers, a plain dialer and small address helpers.
package prototest

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
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Echo starts a TCP echo server on loopback (internal/nettest) and returns
// its address as a protocols.Addr.
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

// UDPEcho starts a UDP echo server on loopback and returns its address.
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

// PacketEcho sends count datagrams of size bytes to dst over pc and checks
// that each comes back intact from dst.
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

// Dialer dials Addr over TCP, with TLS when TLS is set: a tunnel.ConnDialer.
type Dialer struct {
	Addr string
	TLS  *tls.Config
}

// DialConn implements tunnel.ConnDialer.
func (d Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	if d.TLS != nil {
		td := tls.Dialer{NetDialer: &nd, Config: d.TLS}
		return td.DialContext(ctx, "tcp", d.Addr)
	}
	return nd.DialContext(ctx, "tcp", d.Addr)
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

// AddrPort is 127.0.0.1:port.
func AddrPort(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}

// LockedBuffer is a bytes.Buffer safe for concurrent writers (a peer's log).
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// HostPort joins host and port.
func HostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// V2RayPath finds the v2ray binary. When it is missing the test is skipped,
// or fails when PORTICO_REQUIRE_PEERS=1.
func V2RayPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("v2ray")
	if err != nil {
		msg := "v2ray not found in PATH (Debian: apt-get install -y v2ray); interop with a real peer not tested"
		if os.Getenv("PORTICO_REQUIRE_PEERS") == "1" {
			t.Fatal(msg + ", and PORTICO_REQUIRE_PEERS=1")
		}
		t.Skip(msg + "; set PORTICO_REQUIRE_PEERS=1 to fail instead")
	}
	return path
}

// V2Ray is a running v2ray process.
type V2Ray struct {
	cmd    *exec.Cmd
	log    *LockedBuffer
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
	v := &V2Ray{log: new(LockedBuffer), done: make(chan struct{}), Config: js}
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

// Exchange writes size pseudo-random bytes (seeded) to conn, through an
// echo server, in 32 KiB writes while reading size bytes back, and compares
// their SHA-256 sums. It does not close conn.
func Exchange(conn net.Conn, size int64, seed uint64) error {
	rng := mathrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	return ExchangeWith(conn, size, 32<<10, func(p []byte) { rng.Read(p) })
}

// ExchangeWith is Exchange with the write size and the byte source chosen
// by the caller: an odd size crosses a framed protocol's frame edges, a
// source with position tags shows where a stream went wrong.
func ExchangeWith(conn net.Conn, size int64, chunk int, fill func([]byte)) error {
	type result struct {
		sum [32]byte
		err error
	}
	sent := make(chan result, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, chunk)
		for left := size; left > 0; {
			n := int(min(int64(len(buf)), left))
			fill(buf[:n])
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
