// Package vmesstest holds test helpers shared by the vmess, vmessserver and
// vmessclient tests: a loopback echo server, a checksummed bulk exchange, a
// relaying tunnel.Handler, a self-signed certificate, carrier dialers, a
// scripted fake conn, a byte-capturing listener and a runner for a real
// V2Ray peer. It is for tests only.
package vmesstest

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/prototest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

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

// LogBuffer is a bytes.Buffer safe for concurrent use, for slog handlers.
type LogBuffer = lockedBuffer

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

// Exchange writes size bytes of NewPattern(seed) to conn (through an echo
// server) in piece-sized writes while reading them back, and compares
// SHA-256 sums; the pattern's offset tags show where a stream went wrong.
func Exchange(conn net.Conn, size int64, seed uint64) error {
	return prototest.ExchangeWith(conn, size, piece, NewPattern(seed).Next)
}
