// Package anytlsclient is the net side of an AnyTLS (protocol version 2)
// client: an outbound [tunnel.Dialer] that keeps a pool of sessions, each
// over one carrier connection from a [tunnel.ConnDialer] (TLS, WebSocket…),
// and opens one stream per DialStream.
//
// The pool follows the spec's reuse rules: a stream goes on the idle
// session with the highest sequence number, or on a new session when none
// is idle; a session whose last stream is closed becomes idle; a periodic
// check closes sessions idle for longer than IdleSessionTimeout, oldest
// first, but keeps the MinIdleSession newest. Each new session writes the
// authentication (write #0, with padding0 from the scheme's packet 0) and
// shapes its first writes by the padding scheme; a scheme the server
// pushes is kept by the Client and used by every later write of every
// session. The codec is package anytls, the session layer package session;
// the server is package anytlsserver.
//
// Supported: TCP streams. UDP (udp-over-tcp) is a later issue.
package anytlsclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/anytls/internal/uotconn"
	"github.com/portico-gw/portico/protocols/anytls/session"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Options configures a Client. Zero durations mean the defaults.
type Options struct {
	Password string            // required
	Carrier  tunnel.ConnDialer // opens the connection to the server; required

	// IdleSessionCheckInterval is how often idle sessions are checked;
	// 0 means DefaultIdleSessionCheckInterval.
	IdleSessionCheckInterval time.Duration
	// IdleSessionTimeout closes, at a check, sessions idle for longer; 0
	// means DefaultIdleSessionTimeout.
	IdleSessionTimeout time.Duration
	// MinIdleSession is how many idle sessions a check keeps however long
	// they have been idle (the newest ones): sessions ready for the next
	// streams.
	MinIdleSession int

	// UDPPerPacket makes DialPacket use udp-over-tcp's per-packet-address
	// mode: one stream carries datagrams to and from any address, so a
	// full-cone server can hand over datagrams from remotes the client
	// never sent to. Off: connect mode, one destination per stream, as
	// AnyTLS clients commonly do.
	UDPPerPacket bool

	Now  func() time.Time // the clock for idle times; nil means time.Now
	Rand io.Reader        // randomness for padding sizes; nil means crypto/rand
	Log  *slog.Logger     // nil: discard
}

// Defaults, as the spec suggests ("定期（如 30s）检查会话池，关闭并删除持续空闲
// 超过一定时间（如 60s）的会话").
const (
	DefaultIdleSessionCheckInterval = 30 * time.Second
	DefaultIdleSessionTimeout       = 60 * time.Second
)

// ClientName is what the client reports as client= in its settings.
const ClientName = "portico/anytls"

// Errors; use errors.Is.
var (
	ErrUDP     = errors.New("anytls: UDP not supported yet")
	ErrOptions = errors.New("anytls: bad client options")
	ErrClosed  = fmt.Errorf("anytls: client closed: %w", net.ErrClosed)
)

// Stats is a snapshot of the pool.
type Stats struct {
	Sessions int    // open sessions
	Idle     int    // of which idle
	Streams  int    // streams open on them
	Created  uint64 // sessions created since New
}

// Client is an AnyTLS client. It implements tunnel.Dialer and is safe for
// concurrent use. Close stops it.
type Client struct {
	hash          [anytls.AuthHashLen]byte
	carrier       tunnel.ConnDialer
	checkInterval time.Duration
	idleTimeout   time.Duration
	minIdle       int
	now           func() time.Time
	rand          anytls.Rand
	log           *slog.Logger
	padding       atomic.Pointer[anytls.Scheme]
	synAckTimeout time.Duration // 0: session's default; tests shorten it
	udpPerPacket  bool

	mu       sync.Mutex
	closed   bool
	seq      uint64
	sessions map[*session.Session]*entry
	idle     []*entry // by seq, ascending: the newest is last

	running sync.WaitGroup // session Run goroutines
	stop    chan struct{}
	stopped chan struct{}
}

// entry is a session in the pool.
type entry struct {
	s         *session.Session
	seq       uint64
	idle      bool
	idleSince time.Time
}

var _ tunnel.Dialer = (*Client)(nil)

// New returns a client for opts and starts its idle check (one goroutine,
// stopped by Close). It fails without a password or a carrier.
func New(opts Options) (*Client, error) {
	if opts.Password == "" {
		return nil, fmt.Errorf("%w: no password", ErrOptions)
	}
	if opts.Carrier == nil {
		return nil, fmt.Errorf("%w: no carrier dialer", ErrOptions)
	}
	if opts.MinIdleSession < 0 {
		return nil, fmt.Errorf("%w: MinIdleSession %d is negative", ErrOptions, opts.MinIdleSession)
	}
	c := &Client{
		hash:          anytls.PasswordHash(opts.Password),
		carrier:       opts.Carrier,
		checkInterval: opts.IdleSessionCheckInterval,
		idleTimeout:   opts.IdleSessionTimeout,
		minIdle:       opts.MinIdleSession,
		udpPerPacket:  opts.UDPPerPacket,
		now:           opts.Now,
		log:           opts.Log,
		sessions:      map[*session.Session]*entry{},
		stop:          make(chan struct{}),
		stopped:       make(chan struct{}),
	}
	if c.checkInterval <= 0 {
		c.checkInterval = DefaultIdleSessionCheckInterval
	}
	if c.idleTimeout <= 0 {
		c.idleTimeout = DefaultIdleSessionTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
	c.rand = session.ReaderRand(r)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.padding.Store(anytls.DefaultScheme())
	go c.checkLoop()
	return c, nil
}

// DialStream opens a stream to dst on an idle session, or on a new one.
// The stream's first write is the target (with cmdSYN, in one write); the
// server's dial outcome comes later: a failure makes the stream's I/O fail
// with a session.DialError. ctx bounds the carrier dial and the
// authentication write. The stream is a net.Conn with CloseWrite (cmdFIN;
// AnyTLS has no half-close, see package session); closing it returns its
// session to the pool.
func (c *Client) DialStream(ctx context.Context, dst protocols.Addr) (net.Conn, error) {
	if protocols.SOCKSAddr.Len(dst) < 0 {
		return nil, fmt.Errorf("anytls: dial %v: %w", dst, protocols.ErrBadAddr)
	}
	for {
		e := c.takeIdle()
		reused := e != nil
		if !reused {
			var err error
			if e, err = c.newSession(ctx); err != nil {
				return nil, fmt.Errorf("anytls: dial %v: %w", dst, err)
			}
		}
		st, err := e.s.OpenStream(ctx, dst)
		if err == nil {
			return st, nil
		}
		if reused && e.s.IsClosed() && ctx.Err() == nil {
			continue // it died while idle: try the next one
		}
		e.s.Close()
		return nil, fmt.Errorf("anytls: dial %v: %w", dst, err)
	}
}

// DialPacket opens a udp-over-tcp v2 stream (sing-box's layout). In
// connect mode (the default) its packets go to dst and come from dst; with
// UDPPerPacket each packet names its destination, and each reply its
// source.
func (c *Client) DialPacket(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	connect := !c.udpPerPacket
	req, err := anytls.AppendUoTRequest(nil, anytls.UoTRequest{Connect: connect, Target: dst})
	if err != nil {
		return nil, fmt.Errorf("anytls: dial udp %v: %w", dst, err)
	}
	st, err := c.DialStream(ctx, protocols.Addr{Domain: anytls.UoTMagicAddress})
	if err != nil {
		return nil, err
	}
	if _, err := st.Write(req); err != nil {
		st.Close()
		return nil, fmt.Errorf("anytls: dial udp %v: %w", dst, err)
	}
	return uotconn.Client(st, dst, connect), nil
}

// PaddingScheme is the scheme new writes are shaped by: the default until
// a server pushes another.
func (c *Client) PaddingScheme() *anytls.Scheme { return c.padding.Load() }

// Stats returns a snapshot of the pool.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Stats{Sessions: len(c.sessions), Idle: len(c.idle), Created: c.seq}
	for s := range c.sessions {
		st.Streams += s.NumStreams()
	}
	return st
}

// Close stops the idle check and closes every session; their streams fail.
// DialStream fails from then on.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	all := make([]*session.Session, 0, len(c.sessions))
	for s := range c.sessions {
		all = append(all, s)
	}
	c.idle = nil
	c.mu.Unlock()
	close(c.stop)
	<-c.stopped
	for _, s := range all {
		s.Close()
	}
	c.running.Wait()
	return nil
}

// takeIdle takes the idle session with the highest sequence number.
func (c *Client) takeIdle() *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.idle) > 0 {
		e := c.idle[len(c.idle)-1]
		c.idle = c.idle[:len(c.idle)-1]
		e.idle = false
		if !e.s.IsClosed() {
			return e
		}
	}
	return nil
}

// newSession dials the carrier, writes the authentication and starts a
// session on it.
func (c *Client) newSession(ctx context.Context) (*entry, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	conn, err := c.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("carrier: %w", err)
	}
	// Write #0: the authentication, padding0 drawn from packet 0.
	auth, _ := anytls.AppendAuth(nil, c.hash, c.padding.Load().Padding0(c.rand))
	if d, ok := ctx.Deadline(); ok {
		conn.SetWriteDeadline(d)
	}
	if _, err := conn.Write(auth); err != nil {
		conn.Close()
		return nil, fmt.Errorf("writing the authentication: %w", err)
	}
	conn.SetWriteDeadline(time.Time{})
	s := session.NewClient(conn, session.ClientConfig{
		Padding:       &c.padding,
		Rand:          c.rand,
		ClientName:    ClientName,
		SynAckTimeout: c.synAckTimeout,
		OnIdle:        c.onIdle,
		OnClose:       c.onClose,
		Log:           c.log,
	})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.Close()
		return nil, ErrClosed
	}
	c.seq++
	e := &entry{s: s, seq: c.seq}
	c.sessions[s] = e
	c.running.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.running.Done()
		if err := s.Run(); err != nil {
			c.log.Debug("anytls: session ended", "seq", e.seq, "err", err)
		}
	}()
	return e, nil
}

// onIdle puts a session whose last stream is done into the idle pool.
func (c *Client) onIdle(s *session.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.sessions[s]
	if e == nil || e.idle || c.closed || s.IsClosed() {
		return
	}
	e.idle = true
	e.idleSince = c.now()
	i, _ := slices.BinarySearchFunc(c.idle, e.seq, func(x *entry, seq uint64) int {
		return compare(x.seq, seq)
	})
	c.idle = slices.Insert(c.idle, i, e)
}

func compare(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// onClose forgets a session that ended.
func (c *Client) onClose(s *session.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.sessions[s]
	if e == nil {
		return
	}
	delete(c.sessions, s)
	if e.idle {
		c.idle = slices.DeleteFunc(c.idle, func(x *entry) bool { return x == e })
	}
}

func (c *Client) checkLoop() {
	defer close(c.stopped)
	t := time.NewTicker(c.checkInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.closeIdle()
		case <-c.stop:
			return
		}
	}
}

// closeIdle closes the sessions idle for longer than the timeout, oldest
// first, keeping the MinIdleSession newest idle sessions whatever their age.
func (c *Client) closeIdle() {
	var expired []*session.Session
	c.mu.Lock()
	limit := c.now().Add(-c.idleTimeout)
	kept := 0
	for i := len(c.idle) - 1; i >= 0; i-- {
		e := c.idle[i]
		if !e.idleSince.Before(limit) || kept < c.minIdle {
			kept++
			continue
		}
		e.idle = false
		c.idle = slices.Delete(c.idle, i, i+1)
		expired = append(expired, e.s)
	}
	c.mu.Unlock()
	for _, s := range expired {
		c.log.Debug("anytls: closing idle session")
		s.Close()
	}
}
