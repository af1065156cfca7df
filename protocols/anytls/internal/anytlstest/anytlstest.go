// Package anytlstest holds test helpers shared by the AnyTLS session,
// server and client tests: a self-signed certificate, TLS loopback
// listeners and dialers, an echo server, a checksummed exchange, a
// relaying handler, a conn that records its writes, and a raw frame reader
// for scripted peers. It is for tests only.
package anytlstest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/internal/prototest"
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

// RelayHandler is a tunnel.Handler that dials the request's target,
// reports the dial (tunnel.DialReporter) and relays both ways, recording
// every request.
type RelayHandler struct {
	mu       sync.Mutex
	requests []tunnel.Request
	Active   atomic.Int32 // HandleStream calls running
}

// Requests returns the requests seen so far.
func (h *RelayHandler) Requests() []tunnel.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tunnel.Request(nil), h.requests...)
}

func (h *RelayHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.Active.Add(1)
	defer h.Active.Add(-1)
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	defer conn.Close()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", req.Target.String())
	if dr, ok := conn.(tunnel.DialReporter); ok {
		dr.ReportDial(err)
	}
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
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	case <-time.After(10 * time.Second):
		return errors.Join(err, errors.New("relay: one direction still open 10s after the other ended"))
	}
}

func (h *RelayHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	return prototest.RelayPackets(ctx, pc)
}

// Cert is a self-signed certificate for "localhost" and 127.0.0.1.
type Cert struct {
	TLS  tls.Certificate
	Pool *x509.CertPool
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
	c := Cert{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Pool: x509.NewCertPool()}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c.Pool.AddCert(leaf)
	return c
}

// ServerTLS is a server config for c.
func (c Cert) ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}
}

// ClientTLS is a client config trusting c.
func (c Cert) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: "localhost"}
}

// Listener is a TLS loopback listener that counts the connections it
// accepts.
type Listener struct {
	net.Listener
	Accepted atomic.Int32
}

// Listen starts a TLS listener on 127.0.0.1 (plain TCP when cfg is nil),
// closed at cleanup.
func Listen(t testing.TB, cfg *tls.Config) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	l := &Listener{Listener: ln}
	if cfg != nil {
		l.Listener = tls.NewListener(ln, cfg)
	}
	return l
}

// Accept counts and returns the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.Accepted.Add(1)
	}
	return c, err
}

// Serve accepts on l until it is closed and runs srv on every connection.
// It returns a channel of ServeConn results (dropped when full) and a
// function that waits for every ServeConn to return.
func Serve(t testing.TB, l net.Listener, srv tunnel.Server, h tunnel.Handler) (<-chan error, func()) {
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
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
	wait := func() { l.Close(); wg.Wait() }
	t.Cleanup(wait)
	return errs, wait
}

// Dialer is a tunnel.ConnDialer over TCP, with TLS when TLS is set. When
// Record is set, every conn it returns is wrapped in a RecordingConn that
// Record receives.
type Dialer struct {
	Addr   string
	TLS    *tls.Config
	Record func(*RecordingConn)
	Dials  atomic.Int32
}

func (d *Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	d.Dials.Add(1)
	var nd net.Dialer
	var c net.Conn
	var err error
	if d.TLS != nil {
		td := tls.Dialer{NetDialer: &nd, Config: d.TLS}
		c, err = td.DialContext(ctx, "tcp", d.Addr)
	} else {
		c, err = nd.DialContext(ctx, "tcp", d.Addr)
	}
	if err != nil || d.Record == nil {
		return c, err
	}
	rc := &RecordingConn{Conn: c}
	d.Record(rc)
	return rc, nil
}

// RecordingConn records every Write's bytes: wrapped around a tls.Conn, it
// sees the plaintext record sizes the session chose.
type RecordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *RecordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Writes returns a copy of every Write's bytes so far.
func (c *RecordingConn) Writes() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

// RawFrame is a frame read by ReadRawFrame.
type RawFrame struct {
	Cmd    byte
	Stream uint32
	Data   []byte
}

// ReadRawFrame reads one session frame from r, decoding the 7-byte header
// by hand (command, big-endian stream id, big-endian length), not with the
// package's parser.
func ReadRawFrame(r io.Reader) (RawFrame, error) {
	var hdr [7]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return RawFrame{}, err
	}
	f := RawFrame{Cmd: hdr[0], Stream: binary.BigEndian.Uint32(hdr[1:5]), Data: make([]byte, binary.BigEndian.Uint16(hdr[5:7]))}
	_, err := io.ReadFull(r, f.Data)
	return f, err
}

// Frame builds a frame by hand: cmd, stream id (4 bytes, big-endian),
// length (2 bytes, big-endian), data.
func Frame(cmd byte, stream uint32, data string) []byte {
	b := []byte{cmd, byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream), byte(len(data) >> 8), byte(len(data))}
	return append(b, data...)
}

// Eventually polls cond every 10 ms until it holds or d passes.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Exchange writes size seeded pseudo-random bytes to conn (through an echo)
// in writes of an odd size, to cross frame edges, while reading them back,
// and compares SHA-256 sums. It does not close conn.
func Exchange(conn net.Conn, size int64, seed uint64) error {
	rng := mathrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 2})
	return prototest.ExchangeWith(conn, size, 24<<10+7, func(p []byte) { rng.Read(p) })
}
