package vlessclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/readwait"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/v1io"
)

// Resolver is implemented by the streams of a client with ResolveAddr.
// ResolvedAddr blocks until the server's resolved-address message has been
// read (sending the request first if needed, after HeaderWait) and returns
// the address the server dialled. ok is false when the server did not know
// it, when reading failed, or when the client did not ask.
type Resolver interface {
	ResolvedAddr() (addr netip.AddrPort, ok bool)
}

// PoolStats counts the keep-alive pool's work.
type PoolStats struct {
	Idle     int   // connections waiting in the pool now
	Dialed   int64 // carrier connections opened (every version)
	Reused   int64 // streams that rode a pooled connection
	Returned int64 // clean stream ends that put their connection in the pool
}

// PoolStats returns the pool's counters.
func (c *Client) PoolStats() PoolStats {
	c.mu.Lock()
	idle := len(c.idle)
	c.mu.Unlock()
	return PoolStats{Idle: idle, Dialed: c.dialed.Load(), Reused: c.reused.Load(), Returned: c.returned.Load()}
}

// CloseIdle closes the connections waiting in the pool. Streams in use
// are not affected and may still return theirs.
func (c *Client) CloseIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, cc := range idle {
		cc.conn.Close()
	}
}

// PadSize is the size of the first write on every new connection, or 0
// when padding is off.
func (c *Client) PadSize() int { return c.padTo }

// checkV1 validates the version-1 options and draws the padding size.
func (c *Client) checkV1(o *Options) error {
	switch o.Version {
	case 0:
		if o.KeepAlive || o.ResolveAddr || o.PadMin != 0 || o.PadMax != 0 || o.UDPClassic || o.MaxUDPTunnels != 0 {
			return fmt.Errorf("%w: KeepAlive, ResolveAddr, padding, UDPClassic and MaxUDPTunnels need Version 1", ErrOptions)
		}
		return nil
	case 1:
	default:
		return fmt.Errorf("%w: version %d; want 0 or 1", ErrOptions, o.Version)
	}
	if !o.Secure {
		return fmt.Errorf("%w: set Secure when the carrier is TLS, or use version 0", ErrInsecureV1)
	}
	if o.PoolSize < 0 || o.PoolIdleTimeout < 0 {
		return fmt.Errorf("%w: PoolSize %d and PoolIdleTimeout %v must not be negative", ErrOptions, o.PoolSize, o.PoolIdleTimeout)
	}
	if o.MaxUDPTunnels < 0 {
		return fmt.Errorf("%w: MaxUDPTunnels %d must not be negative", ErrOptions, o.MaxUDPTunnels)
	}
	if c.maxUDPTunnels == 0 {
		c.maxUDPTunnels = DefaultMaxUDPTunnels
	}
	if c.poolSize == 0 {
		c.poolSize = DefaultPoolSize
	}
	if c.poolIdle == 0 {
		c.poolIdle = DefaultPoolIdleTimeout
	}
	if o.PadMax == 0 {
		if o.PadMin != 0 {
			return fmt.Errorf("%w: PadMin %d without PadMax", ErrOptions, o.PadMin)
		}
		return nil
	}
	lo := o.PadMin
	if lo == 0 {
		lo = vless.MinPadTo
	}
	if lo < vless.MinPadTo || o.PadMax > vless.MaxPadTo || lo > o.PadMax {
		return fmt.Errorf("%w: padding range %d..%d; want %d ≤ PadMin ≤ PadMax ≤ %d", ErrOptions, lo, o.PadMax, vless.MinPadTo, vless.MaxPadTo)
	}
	r := o.PadRand
	if r == nil {
		r = rand.Reader
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("%w: choosing the padding size: %v", ErrOptions, err)
	}
	c.padTo = lo + int(binary.BigEndian.Uint64(b[:])%uint64(o.PadMax-lo+1))
	return nil
}

// carrier is a carrier connection with what outlives one stream on it.
type carrier struct {
	conn        net.Conn
	br          *v1io.Reader
	framer      v1io.Framer
	established bool      // its first request went out; later ones are short
	idleSince   time.Time // when it entered the pool
}

// readBufSize is a carrier's read buffer: resolved addresses, chunk
// lengths, and whatever the carrier hands over with them.
const readBufSize = 4096

// take returns a live pooled connection, or nil. Connections idle longer
// than poolIdle are closed on the way (the pool is oldest first, so once
// one is too old all the rest are).
func (c *Client) take() *carrier {
	for {
		c.mu.Lock()
		if len(c.idle) == 0 {
			c.mu.Unlock()
			return nil
		}
		cc := c.idle[len(c.idle)-1]
		c.idle[len(c.idle)-1] = nil
		c.idle = c.idle[:len(c.idle)-1]
		var stale []*carrier
		if c.now().Sub(cc.idleSince) > c.poolIdle {
			stale = append(c.idle, cc)
			c.idle = nil
			cc = nil
		}
		c.mu.Unlock()
		for _, s := range stale {
			s.conn.Close()
		}
		if cc == nil {
			return nil
		}
		if alive(cc) {
			return cc
		}
		cc.conn.Close()
	}
}

// probeWait bounds the liveness probe of a pooled connection whose socket
// cannot be asked (a carrier over a transport without one).
const probeWait = time.Millisecond

// alive checks that the server has not closed a pooled connection (nor
// sent anything on it). Where the socket under the carrier can be asked
// (TLS and TCP), it is, without waiting: nothing to read means alive, and
// when there is something (the server's close, most likely) a read finds
// out what. Other carriers are taken on trust.
func alive(cc *carrier) bool {
	if len(cc.br.Buffered()) > 0 {
		return false // the server sent something between streams
	}
	ready, ok := readwait.SocketReadable(cc.conn)
	if !ok {
		return true
	}
	if !ready {
		return true
	}
	// Something is there: a short read shows what. A deadline already in
	// the past would not do: Go's poller then fails the read before trying
	// the socket.
	cc.conn.SetReadDeadline(time.Now().Add(probeWait))
	_, err := cc.br.Fill()
	cc.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && len(cc.br.Buffered()) == 0
}

// put returns a carrier to the pool after a clean stream.
func (c *Client) put(cc *carrier) {
	cc.conn.SetDeadline(time.Time{})
	cc.idleSince = c.now()
	c.returned.Add(1)
	c.mu.Lock()
	c.idle = append(c.idle, cc)
	var drop *carrier
	if len(c.idle) > c.poolSize {
		drop = c.idle[0]
		copy(c.idle, c.idle[1:])
		c.idle[len(c.idle)-1] = nil
		c.idle = c.idle[:len(c.idle)-1]
	}
	c.mu.Unlock()
	if drop != nil {
		drop.conn.Close()
	}
}

// dialV1 is DialStream for version 1. With KeepAlive it takes a pooled
// connection when there is a live one and sends the short header of a
// reused connection; otherwise it dials and sends the first header (padded
// when padding is on). ctx bounds the dial only.
func (c *Client) dialV1(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	req := vless.RequestV1{ID: c.id, KeepAlive: c.keepAlive, Resolve: c.resolve, Command: vless.CommandTCP, Target: dst}
	if protocols.VAddr.Len(dst) < 0 {
		return nil, fmt.Errorf("vless: dial %v: target: %w: cannot encode it", dst, protocols.ErrBadAddr)
	}
	var cc *carrier
	if c.keepAlive {
		if cc = c.take(); cc != nil {
			c.reused.Add(1)
		}
	}
	if cc == nil {
		conn, err := c.carrier.DialConn(ctx)
		if err != nil {
			return nil, fmt.Errorf("vless: dial %v: carrier: %w", dst, err)
		}
		c.dialed.Add(1)
		cc = &carrier{conn: conn, br: v1io.NewReader(conn, readBufSize)}
		cc.framer.W = conn
	}
	s := &stream{cl: c, cc: cc, keepAlive: c.keepAlive, resolve: c.resolve, wait: c.wait,
		sentCh: make(chan struct{}), closed: make(chan struct{})}
	s.deframer.R = cc.br
	var err error
	if cc.established {
		s.hdr, err = vless.AppendNextRequest(make([]byte, 0, 64), &req)
	} else {
		if c.padTo > 0 {
			req.Padded = true
			s.padTo, s.req = c.padTo, req
		}
		s.hdr, err = vless.AppendRequestV1(make([]byte, 0, 64), &req)
	}
	if err != nil { // cannot happen: the target was checked
		cc.conn.Close()
		return nil, fmt.Errorf("vless: dial %v: %w", dst, err)
	}
	if _, ok := cc.conn.(closeWriter); ok || s.keepAlive {
		return streamHalf{s}, nil
	}
	return s, nil
}

// stream is a version-1 tunnel stream. Without keep-alive its payload is
// raw; with it, chunks and an end marker each way, and Close hands the
// carrier back to the pool after a clean end both ways.
type stream struct {
	cl        *Client
	cc        *carrier
	keepAlive bool
	resolve   bool
	wait      time.Duration
	padTo     int             // > 0: pad the first write to this size
	req       vless.RequestV1 // the first header, re-encoded with its PadLen

	wmu        sync.Mutex
	hdr        []byte        // the request header; guarded by wmu until reqSent
	reqSent    atomic.Bool   // the request header is on its way
	sentCh     chan struct{} // closed when reqSent becomes true
	writeEnded bool          // CloseWrite or Close ended the write side; guarded by wmu

	rmu       sync.Mutex // held while the read side is being prepared
	readReady atomic.Bool
	readErr   error          // a sticky failure preparing the read side; guarded by rmu
	resolved  netip.AddrPort // the server's answer; written before readReady
	deframer  v1io.Deframer  // Read's only

	wClean   atomic.Bool // our end marker went out
	rClean   atomic.Bool // the server's end marker was read
	broken   atomic.Bool // an I/O or protocol error: never pool
	isClosed atomic.Bool
	closed   chan struct{} // closed by Close
}

// streamHalf is stream with CloseWrite: always with keep-alive (the end
// marker), and otherwise when the carrier can half-close.
type streamHalf struct{ *stream }

var (
	_ Resolver = (*stream)(nil)
	_ Resolver = streamHalf{}
)

var errWriteEnded = errors.New("vless: write after CloseWrite")

// Write sends p, preceded on the first call by the request header in the
// same carrier write (padded on a new connection when padding is on).
func (s *stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed.Load() {
		return 0, net.ErrClosed
	}
	if s.writeEnded {
		return 0, errWriteEnded
	}
	if !s.reqSent.Load() {
		return s.writeFirstLocked(p)
	}
	n, err := s.writeBodyLocked(nil, p)
	if err != nil {
		s.broken.Store(true)
	}
	return n, err
}

// writeFirstLocked sends the request header with as much of p as belongs
// in the first carrier write, then the rest. wmu is held.
func (s *stream) writeFirstLocked(p []byte) (int, error) {
	prefix, rest, done := s.hdr, p, 0
	s.hdr = nil
	s.reqSent.Store(true)
	close(s.sentCh)
	s.cc.established = true
	if s.padTo > 0 {
		if pad, take, ok := vless.SplitFirstWrite(s.padTo, len(prefix), len(p), s.keepAlive); ok {
			s.req.PadLen = pad
			b, _ := vless.AppendRequestV1(make([]byte, 0, s.padTo), &s.req) // same length as prefix
			b = vless.AppendPadding(b, pad)
			if take > 0 {
				if s.keepAlive {
					b = vless.AppendChunkHeader(b, take)
				}
				b = append(b, p[:take]...)
			}
			if _, err := s.cc.conn.Write(b); err != nil {
				s.broken.Store(true)
				return 0, fmt.Errorf("vless: sending request header: %w", err)
			}
			prefix, rest, done = nil, p[take:], take
			if len(rest) == 0 {
				return done, nil
			}
		}
	}
	n, err := s.writeBodyLocked(prefix, rest)
	if err != nil {
		s.broken.Store(true)
		if n == 0 && done == 0 {
			err = fmt.Errorf("vless: sending request header: %w", err)
		}
	}
	return done + n, err
}

// writeBodyLocked sends prefix and p, framed or raw. wmu is held.
func (s *stream) writeBodyLocked(prefix, p []byte) (int, error) {
	if s.keepAlive {
		return s.cc.framer.Write(prefix, p)
	}
	return v1io.WriteRaw(s.cc.conn, prefix, p)
}

// sendHeader writes the request header (padded if due) if no Write has.
func (s *stream) sendHeader() error {
	if s.reqSent.Load() {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.reqSent.Load() {
		return nil
	}
	if s.isClosed.Load() {
		return net.ErrClosed
	}
	_, err := s.writeFirstLocked(nil)
	return err
}

// Read returns the server's payload: raw, or the chunks until the end
// marker (then io.EOF). The first call waits for the request to be sent
// and, with ResolveAddr, reads the resolved address first.
func (s *stream) Read(p []byte) (int, error) {
	if s.isClosed.Load() {
		return 0, net.ErrClosed
	}
	if !s.readReady.Load() {
		if err := s.prepareRead(); err != nil {
			return 0, err
		}
	}
	if !s.keepAlive {
		return s.cc.br.Read(p)
	}
	n, err := s.deframer.Read(p)
	if err != nil {
		if err == io.EOF && s.deframer.Ended() {
			s.rClean.Store(true)
		} else {
			s.broken.Store(true)
		}
	}
	return n, err
}

// prepareRead makes sure the request is sent (a Read before any Write
// gives the first Write HeaderWait to carry the header) and reads the
// resolved address when it was asked for.
func (s *stream) prepareRead() error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.readReady.Load() {
		return nil
	}
	if s.readErr != nil {
		return s.readErr
	}
	if !s.reqSent.Load() && s.wait > 0 {
		t := time.NewTimer(s.wait)
		select {
		case <-s.sentCh:
		case <-t.C:
		case <-s.closed:
			t.Stop()
			return net.ErrClosed
		}
		t.Stop()
	}
	if err := s.sendHeader(); err != nil {
		s.readErr = err
		return err
	}
	if s.resolve {
		ap, err := v1io.ReadMsg(s.cc.br, vless.ParseResolved)
		if err != nil {
			s.broken.Store(true)
			switch {
			case err == io.EOF && len(s.cc.br.Buffered()) == 0 && !s.keepAlive:
				s.readErr = io.EOF // the server closed without a word
			case err == io.EOF:
				s.readErr = fmt.Errorf("vless: resolved address cut: %w", io.ErrUnexpectedEOF)
			default:
				s.readErr = fmt.Errorf("vless: reading resolved address: %w", err)
			}
			return s.readErr
		}
		s.resolved = ap
	}
	s.readReady.Store(true)
	return nil
}

// ResolvedAddr implements Resolver.
func (s *stream) ResolvedAddr() (netip.AddrPort, bool) {
	if !s.resolve || s.isClosed.Load() {
		return netip.AddrPort{}, false
	}
	if !s.readReady.Load() {
		if err := s.prepareRead(); err != nil {
			return netip.AddrPort{}, false
		}
	}
	return s.resolved, s.resolved.IsValid()
}

// CloseWrite ends the client-to-server direction: the end marker with
// keep-alive, the carrier's half-close otherwise. The request header goes
// first if no Write sent it.
func (s streamHalf) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed.Load() {
		return net.ErrClosed
	}
	if s.writeEnded {
		return nil
	}
	if !s.reqSent.Load() {
		if _, err := s.writeFirstLocked(nil); err != nil {
			return err
		}
	}
	s.writeEnded = true
	if !s.keepAlive {
		return s.cc.conn.(closeWriter).CloseWrite()
	}
	if err := s.cc.framer.End(nil); err != nil {
		s.broken.Store(true)
		return err
	}
	s.wClean.Store(true)
	return nil
}

// Close ends the stream. With keep-alive, once the server's end marker has
// been read and nothing broke, it sends our end marker if CloseWrite did
// not and puts the carrier in the pool; otherwise, or when a Write is in
// progress, it closes the carrier. A Read waiting for the first Write
// returns.
func (s *stream) Close() error {
	if s.isClosed.Swap(true) {
		return nil
	}
	close(s.closed)
	if s.keepAlive && s.rClean.Load() && !s.broken.Load() && s.wmu.TryLock() {
		ok := s.wClean.Load()
		if !ok && !s.writeEnded {
			ok = s.cc.framer.End(nil) == nil
		}
		s.writeEnded = true
		s.wmu.Unlock()
		if ok && !s.broken.Load() {
			s.cl.put(s.cc)
			return nil
		}
	}
	return s.cc.conn.Close()
}

func (s *stream) LocalAddr() net.Addr  { return s.cc.conn.LocalAddr() }
func (s *stream) RemoteAddr() net.Addr { return s.cc.conn.RemoteAddr() }

// The deadlines are the carrier's while the stream is open; a carrier is
// put in the pool with none.
func (s *stream) SetDeadline(t time.Time) error {
	if s.isClosed.Load() {
		return net.ErrClosed
	}
	return s.cc.conn.SetDeadline(t)
}

func (s *stream) SetReadDeadline(t time.Time) error {
	if s.isClosed.Load() {
		return net.ErrClosed
	}
	return s.cc.conn.SetReadDeadline(t)
}

func (s *stream) SetWriteDeadline(t time.Time) error {
	if s.isClosed.Load() {
		return net.ErrClosed
	}
	return s.cc.conn.SetWriteDeadline(t)
}
