// Package tlsbatch sends the records of one TLS write with one system
// call. crypto/tls writes every record (at most 16 KiB of payload) with a
// write of its own, so a relay's 32 KiB chunk costs two, and a message
// with a few bytes of framing around it (a WebSocket frame, a VMess chunk
// sequence, an HTTP/2 DATA frame) three, the last of them a few bytes
// long. On loopback and on real links alike, each write is a trip through
// the kernel's TCP stack; one per Write is what a TLS tunnel needs.
package tlsbatch

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"

	"github.com/portico-gw/portico/internal/bufpool"
)

// Conn is a *tls.Conn whose Write gathers the records it produces and
// sends them at once. Everything else is the *tls.Conn's.
type Conn struct {
	*tls.Conn
	raw *gatherConn
	wmu sync.Mutex // one Write at a time, as crypto/tls would anyway
	rmu sync.Mutex // one Read at a time: a Read sets raw.noWait
}

// Server returns the server side of TLS over raw, as tls.Server does.
func Server(raw net.Conn, cfg *tls.Config) *Conn {
	g := newGatherConn(raw)
	return &Conn{Conn: tls.Server(g, cfg), raw: g}
}

// Client returns the client side of TLS over raw, as tls.Client does.
func Client(raw net.Conn, cfg *tls.Config) *Conn {
	g := newGatherConn(raw)
	return &Conn{Conn: tls.Client(g, cfg), raw: g}
}

// Dial connects to addr with nd and runs the client handshake, as
// tls.Dialer does.
func Dial(ctx context.Context, nd *net.Dialer, addr string, cfg *tls.Config) (*Conn, error) {
	raw, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	c := Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Write encrypts p as crypto/tls does and sends its records with one
// write (or one per large buffer's worth, for a very long p).
func (c *Conn) Write(p []byte) (int, error) {
	// The handshake must be done and sent before anything is held: its
	// flights wait for answers.
	if err := c.Conn.Handshake(); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.raw.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.release(); err == nil {
		err = ferr
	}
	return n, err
}

// recordPayload is the most plaintext one TLS record carries, and so the
// most one crypto/tls Read returns.
const recordPayload = 16 << 10

// Read reads as crypto/tls does and then, when p is a bulk buffer (room
// for a whole record or more), goes on filling it with what is there
// without waiting: crypto/tls returns one record per Read, so a relay's
// 32 KiB read would otherwise come back half full, and every chunk would
// cost two reads and two writes to the other side. A record that does not
// fit stays in crypto/tls for the next Read.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.Conn.Read(p)
	for err == nil && n > 0 && n < len(p) && len(p) >= recordPayload && c.raw.probe != nil {
		c.raw.noWait = true
		m, perr := c.Conn.Read(p[n:])
		c.raw.noWait = false
		n += m
		if perr != nil || m == 0 {
			if !errors.Is(perr, errWouldBlock) {
				err = perr // the end, or an error crypto/tls keeps for the next Read anyway
			}
			break
		}
	}
	return n, err
}

// errWouldBlock is what the socket says to a read that would wait: a
// temporary net.Error, which crypto/tls returns without keeping (a part of
// a record it got stays buffered for the next Read).
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsbatch: read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// ReadWaiter implements readwait.Waiter: nothing can be told of a TLS
// conn's buffered bytes from outside, so it cannot be waited on.
func (c *Conn) ReadWaiter() func() error { return nil }

// gatherConn is the connection under the tls.Conn: while held, the records
// written to it are gathered, and sent when released.
type gatherConn struct {
	net.Conn
	// noWait makes Read take only what the socket has now; set by
	// Conn.Read around crypto/tls's Read, under rmu.
	noWait  bool
	probe   func(p []byte) (int, error) // a read that does not wait; nil: none
	mu      sync.Mutex
	holding bool
	bp      *[]byte // the gathered records, in a pooled buffer
	err     error   // a failed write: every later one fails too
}

func newGatherConn(raw net.Conn) *gatherConn {
	return &gatherConn{Conn: raw, probe: nonBlockingRead(raw)}
}

func (g *gatherConn) hold() {
	g.mu.Lock()
	g.holding = true
	g.mu.Unlock()
}

// Write gathers p while held, and writes it otherwise. Records reach it in
// their sequence order (crypto/tls writes under its own lock), including
// those a Read writes (a KeyUpdate reply, an alert) while a Write holds.
func (g *gatherConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return 0, g.err
	}
	if !g.holding {
		return g.Conn.Write(p)
	}
	if g.bp == nil {
		g.bp = bufpool.Large()
		*g.bp = (*g.bp)[:0]
	}
	if len(*g.bp)+len(p) > cap(*g.bp) {
		if err := g.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*g.bp) {
			return g.Conn.Write(p)
		}
	}
	*g.bp = append(*g.bp, p...)
	return len(p), nil
}

// Read reads from the socket; with noWait set, it takes what the socket
// holds now and returns errWouldBlock when that is nothing.
func (g *gatherConn) Read(p []byte) (int, error) {
	if g.noWait {
		return g.probe(p)
	}
	return g.Conn.Read(p)
}

// NetConn is the connection gathered for, for those that look through TLS
// at its socket (readwait.SocketReadable).
func (g *gatherConn) NetConn() net.Conn { return g.Conn }

// release sends what was gathered and stops holding.
func (g *gatherConn) release() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holding = false
	err := g.flushLocked()
	if g.bp != nil {
		bufpool.Put(g.bp)
		g.bp = nil
	}
	return err
}

func (g *gatherConn) flushLocked() error {
	if g.bp == nil || len(*g.bp) == 0 {
		return g.err
	}
	_, err := g.Conn.Write(*g.bp)
	*g.bp = (*g.bp)[:0]
	if err != nil && g.err == nil {
		g.err = err
	}
	return err
}
