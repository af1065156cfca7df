package vlessserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/v1io"
)

// serveV1 runs the streams of a v1 connection whose first header (hdr,
// from acct) has been read: one stream, or, while each one asks for
// keep-alive and ends cleanly, one after the other; or one UDP tunnel
// (udpv1.go). It owns conn.
func (s *Server) serveV1(ctx context.Context, conn net.Conn, br *v1io.Reader, hdr vless.RequestV1, acct *account, h tunnel.Handler) error {
	log := s.log.With("inbound", s.inbound, "user", acct.label)
	framer := &v1io.Framer{W: conn}
	for streams := 1; ; streams++ {
		switch hdr.Command {
		case vless.CommandMux:
			log.Warn("vless: mux not supported", "remote", remoteString(conn), "version", 1)
			conn.Close()
			return fmt.Errorf("%w (user %s)", ErrMux, acct.label)
		}
		if hdr.PadLen > 0 {
			if err := br.Skip(hdr.PadLen); err != nil {
				conn.Close()
				return fmt.Errorf("vless: skipping %d bytes of padding: %w", hdr.PadLen, err)
			}
		}
		if err := ctx.Err(); err != nil {
			conn.Close()
			return fmt.Errorf("vless: %w", err)
		}
		if hdr.Command == vless.CommandUDP {
			// Only a first header can ask for UDP (the codec refuses it on a
			// reused connection), and the tunnel ends the connection.
			return s.serveUDPV1(ctx, conn, br, &hdr, acct, h)
		}
		log.Debug("vless: tunnel", "target", hdr.Target.String(), "version", 1,
			"keepalive", hdr.KeepAlive, "resolve", hdr.Resolve, "stream", streams)
		c := newV1Conn(conn, br, framer, &hdr)
		err := h.HandleStream(ctx, c.outer(), s.request(conn, acct, hdr.Target))
		c.Close() // the handler must have closed it; make sure
		if !c.kept.Load() {
			if err != nil {
				return fmt.Errorf("vless: tunnel to %v for %s: %w", hdr.Target, acct.label, err)
			}
			return nil
		}
		if err != nil {
			log.Debug("vless: stream ended cleanly but its handler failed", "target", hdr.Target.String(), "err", err)
		}

		// Idle between requests: clear what the handler may have set, then
		// wait for the next header, at most s.idle, and no longer than ctx.
		conn.SetWriteDeadline(time.Time{})
		conn.SetReadDeadline(time.Now().Add(s.idle))
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		hdr, err = v1io.ReadMsg(br, vless.ParseNextRequest)
		if !stop() {
			return fmt.Errorf("vless: %w", ctx.Err())
		}
		if err != nil {
			conn.Close()
			var ne net.Error
			if len(br.Buffered()) == 0 && (err == io.EOF || errors.As(err, &ne) && ne.Timeout()) {
				log.Debug("vless: kept-alive connection ended between requests", "streams", streams, "err", err)
				return nil
			}
			return fmt.Errorf("vless: request %d on a kept-alive connection: %w", streams+1, err)
		}
		conn.SetReadDeadline(time.Time{})
		// The quota or the expiry may have run out since the first request.
		if !s.admitted(acct) {
			log.Info("vless: user no longer admitted; closing the kept-alive connection", "stream", streams+1)
			conn.Close()
			return fmt.Errorf("%w: user %s, request %d on a kept-alive connection; connection closed", ErrNotAdmitted, acct.label, streams+1)
		}
	}
}

// v1Conn is the stream a v1 request hands to the Handler. Without
// keep-alive its payload is the carrier's raw bytes (after those read with
// the header); with keep-alive it is framed in chunks and ends with an end
// marker each way, and a Close after a clean end leaves the carrier open for
// the next request. With resolve, the resolved-address message goes out
// before anything else the stream writes.
type v1Conn struct {
	carrier   net.Conn
	br        *v1io.Reader
	framer    *v1io.Framer
	keepAlive bool
	resolve   bool
	deframer  v1io.Deframer // Read's only

	wmu        sync.Mutex
	resPending bool // the resolved address is owed; guarded by wmu
	writeEnded bool // CloseWrite was called; guarded by wmu

	wClean atomic.Bool // the end marker went out
	rClean atomic.Bool // the client's end marker was read
	broken atomic.Bool // an I/O error: the carrier cannot be reused
	closed atomic.Bool
	kept   atomic.Bool // Close left the carrier open for the next request
}

// v1Half is v1Conn with CloseWrite: always in keep-alive mode (the end
// marker), and otherwise when the carrier can half-close.
type v1Half struct{ *v1Conn }

var (
	_ tunnel.RemoteReporter = (*v1Conn)(nil)
	_ tunnel.DialReporter   = (*v1Conn)(nil)
)

// errWriteEnded is returned by Write after CloseWrite.
var errWriteEnded = errors.New("vless: write after CloseWrite")

func newV1Conn(carrier net.Conn, br *v1io.Reader, framer *v1io.Framer, hdr *vless.RequestV1) *v1Conn {
	c := &v1Conn{carrier: carrier, br: br, framer: framer, keepAlive: hdr.KeepAlive, resolve: hdr.Resolve, resPending: hdr.Resolve}
	c.deframer.R = br
	return c
}

// outer returns c as the handler sees it, with CloseWrite when it has one.
func (c *v1Conn) outer() net.Conn {
	if _, ok := c.carrier.(closeWriter); ok || c.keepAlive {
		return v1Half{c}
	}
	return c
}

func (c *v1Conn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if !c.keepAlive {
		return c.br.Read(p)
	}
	n, err := c.deframer.Read(p)
	if err != nil {
		if err == io.EOF && c.deframer.Ended() {
			c.rClean.Store(true)
		} else {
			c.broken.Store(true)
		}
	}
	return n, err
}

// owed returns the resolved-address message still to send ("unknown" when
// nothing was reported), or nil, and marks it sent. wmu must be held.
func (c *v1Conn) owed() []byte {
	if !c.resPending {
		return nil
	}
	c.resPending = false
	return vless.AppendResolved(make([]byte, 0, vless.MaxResolvedLen), netip.AddrPort{})
}

func (c *v1Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.writeEnded {
		return 0, errWriteEnded
	}
	prefix := c.owed()
	var n int
	var err error
	if c.keepAlive {
		n, err = c.framer.Write(prefix, p)
	} else {
		n, err = v1io.WriteRaw(c.carrier, prefix, p)
	}
	if err != nil {
		c.broken.Store(true)
	}
	return n, err
}

// ReportRemote sends the resolved address now, if the client asked for it
// and nothing has been written yet. It implements tunnel.RemoteReporter.
func (c *v1Conn) ReportRemote(remote netip.AddrPort) {
	if !c.resolve {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.resPending || c.closed.Load() {
		return
	}
	c.resPending = false
	if _, err := c.carrier.Write(vless.AppendResolved(make([]byte, 0, vless.MaxResolvedLen), remote)); err != nil {
		c.broken.Store(true)
	}
}

// ReportDial sends the "unknown" resolved-address marker if the client
// asked for the address and the handler did not report it before saying
// how the dial went. It implements tunnel.DialReporter.
func (c *v1Conn) ReportDial(err error) {
	if !c.resolve {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushOwed()
}

// flushOwed writes the owed resolved-address marker alone; wmu held.
func (c *v1Conn) flushOwed() {
	if b := c.owed(); b != nil && !c.closed.Load() {
		if _, err := c.carrier.Write(b); err != nil {
			c.broken.Store(true)
		}
	}
}

// CloseWrite ends the stream's server-to-client direction: the end marker
// in keep-alive mode, the carrier's half-close otherwise.
func (c v1Half) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	if c.writeEnded {
		return nil
	}
	c.writeEnded = true
	if !c.keepAlive {
		c.flushOwed()
		return c.carrier.(closeWriter).CloseWrite()
	}
	if err := c.framer.End(c.owed()); err != nil {
		c.broken.Store(true)
		return err
	}
	c.wClean.Store(true)
	return nil
}

// Close ends the stream. After a clean end both ways of a keep-alive
// stream it leaves the carrier open (ServeConn reads the next request);
// otherwise it sends what is owed, if no Write is in the way, and closes the
// carrier. It never waits for a Write in progress.
func (c *v1Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if c.keepAlive && c.rClean.Load() && c.wClean.Load() && !c.broken.Load() {
		c.kept.Store(true)
		return nil
	}
	if c.resolve && c.wmu.TryLock() {
		if b := c.owed(); b != nil {
			c.carrier.Write(b) // best effort: the stream is ending
		}
		c.wmu.Unlock()
	}
	return c.carrier.Close()
}

func (c *v1Conn) LocalAddr() net.Addr  { return c.carrier.LocalAddr() }
func (c *v1Conn) RemoteAddr() net.Addr { return c.carrier.RemoteAddr() }

// The deadlines are the carrier's while the stream is open; ServeConn
// clears them between requests.
func (c *v1Conn) SetDeadline(t time.Time) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.carrier.SetDeadline(t)
}

func (c *v1Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.carrier.SetReadDeadline(t)
}

func (c *v1Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.carrier.SetWriteDeadline(t)
}
