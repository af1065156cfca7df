package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/connlimit"
	"github.com/portico-gw/portico/internal/offstack"
	"github.com/portico-gw/portico/internal/tlsbatch"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// RawProtocol is one protocol served on raw TLS: its matcher picks the
// connection from its first bytes, its server takes it from there.
type RawProtocol struct {
	Name    string   // for logs: "vless", "vmess", "anytls"
	Inbound string   // the inbound's tag
	ALPN    []string // when set, only connections that negotiated one of these
	Match   protocols.Matcher
	Server  tunnel.Server
}

// FrontDoor is the one HTTPS port: TLS, then the first bytes decide between
// the HTTP server (the decoy site and HTTP-based transports) and the raw-TLS
// protocols. A connection no protocol accepts reaches the HTTP server with
// every byte it sent, so a prober sees exactly what the site would answer.
type FrontDoor struct {
	TLS       *tls.Config    // nil: plain TCP, behind a TLS-terminating reverse proxy
	HTTP      http.Handler   // the site: decoy, later transports' routes
	Protocols []RawProtocol  // asked in this order
	Handler   tunnel.Handler // receives authenticated tunnels
	Log       *slog.Logger

	// HandshakeTimeout bounds the TLS handshake plus the protocol header.
	// Zero means 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes idle HTTP keep-alive connections. Zero means 2 min.
	IdleTimeout time.Duration
	// BaseContext is the parent of every tunnel's context: cancelling it
	// ends every tunnel. Nil means context.Background().
	BaseContext context.Context
	// MaxConnections bounds the connections open at once on the listener,
	// whatever they are doing (handshake, site, tunnels); a connection
	// past it is closed right after accept, before TLS. Zero: unlimited.
	MaxConnections int
	// MaxConnectionsPerIP is the same bound per client IP. Zero: unlimited.
	MaxConnectionsPerIP int

	initOnce sync.Once
	httpLn   *chanListener
	httpSrv  *http.Server
	table    atomic.Pointer[protocolTable] // Protocols, swapped by SetProtocols
	failures *handshakeFailures            // counted for metrics; nil: not counted
	slots    *connlimit.Slots              // nil: no connection limit

	timeouts             atomic.Int64
	limitLog, timeoutLog rateLog

	mu       sync.Mutex
	ln       net.Listener
	conns    sync.WaitGroup // connections still in their handshake
	closing  bool
	httpDone chan struct{}
}

// protocolTable is the raw-TLS protocols a connection is classified
// against, with their matchers; a reload swaps the whole table, and each
// connection keeps the one it started with.
type protocolTable struct {
	protocols []RawProtocol
	matchers  []protocols.Matcher
	byALPN    bool // some protocol is restricted to an ALPN
}

func newProtocolTable(ps []RawProtocol) *protocolTable {
	t := &protocolTable{protocols: ps}
	for _, p := range ps {
		t.matchers = append(t.matchers, p.Match)
		t.byALPN = t.byALPN || len(p.ALPN) > 0
	}
	return t
}

// SetProtocols replaces the raw-TLS protocols for connections accepted
// from now on.
func (f *FrontDoor) SetProtocols(ps []RawProtocol) { f.table.Store(newProtocolTable(ps)) }

// CurrentProtocols returns the raw-TLS protocols new connections meet.
func (f *FrontDoor) CurrentProtocols() []RawProtocol {
	if t := f.table.Load(); t != nil {
		return t.protocols
	}
	return f.Protocols
}

func (f *FrontDoor) init(addr net.Addr) {
	f.initOnce.Do(func() {
		if f.Log == nil {
			f.Log = slog.Default()
		}
		if f.HandshakeTimeout == 0 {
			f.HandshakeTimeout = 10 * time.Second
		}
		if f.IdleTimeout == 0 {
			f.IdleTimeout = 2 * time.Minute
		}
		if f.table.Load() == nil {
			f.table.Store(newProtocolTable(f.Protocols))
		}
		f.slots = connlimit.New(f.MaxConnections, f.MaxConnectionsPerIP)
		f.httpLn = newChanListener(addr)
		f.httpSrv = NewSiteServer(f.HTTP, f.Log, f.HandshakeTimeout, f.IdleTimeout)
		f.httpDone = make(chan struct{})
		go func() {
			defer close(f.httpDone)
			f.httpSrv.Serve(f.httpLn)
		}()
	})
}

// NewSiteServer is the HTTP server behind the front door: the decoy site and
// HTTP-based transports. Tests use it alone as "the decoy answering
// directly", which a fallback must be indistinguishable from.
func NewSiteServer(h http.Handler, log *slog.Logger, headerTimeout, idle time.Duration) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	// The front door terminated TLS already, so to net/http every conn is
	// "unencrypted": HTTP/2 arrives as prior-knowledge h2 after ALPN h2.
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           withTLSState(h),
		Protocols:         &protos,
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idle,
		ConnContext:       tlsStateContext,
		ErrorLog:          slogErrorLog(log),
		// gRPC tunnels share HTTP/2 connections: with net/http's 1 MiB
		// connection window one tunnel whose target stops reading would
		// stall every other tunnel on the connection.
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: 32 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
			MaxConcurrentStreams:          1000,
		},
	}
}

// Serve accepts connections on ln until Shutdown or an accept error.
func (f *FrontDoor) Serve(ln net.Listener) error {
	// init runs under mu, and not at all once closing: a Shutdown that comes
	// before Serve gets going would otherwise read httpSrv while init writes
	// it, and leave the HTTP server it did not see running.
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		return http.ErrServerClosed
	}
	f.init(ln.Addr())
	f.ln = ln
	f.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			f.mu.Lock()
			closing := f.closing
			f.mu.Unlock()
			if closing {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				f.Log.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if f.slots != nil {
			release, why := f.slots.Take(remoteAddrPort(c).Addr())
			if release == nil {
				c.Close()
				logRefusal(f.Log, &f.limitLog, f.slots, why, "server.limits.", c.RemoteAddr())
				continue
			}
			c = connlimit.Wrap(c, release)
		}
		f.mu.Lock()
		if f.closing {
			f.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		f.conns.Add(1)
		f.mu.Unlock()
		go func() {
			defer f.conns.Done()
			f.handle(c)
		}()
	}
}

// logRefusal logs (at most once per interval) a connection closed at
// accept because a connection limit was reached; slots counted it.
func logRefusal(l *slog.Logger, rl *rateLog, slots *connlimit.Slots, why connlimit.Refusal, field string, source net.Addr, args ...any) {
	name, max := slots.Limit(why)
	rl.log(l, slog.LevelWarn, limitLogInterval, "connection limit reached; closing new connections",
		append([]any{"limit", field + name, "max", max, "source", source.String()}, args...)...)
}

// handshakeTimedOut counts and logs (at most once per interval) a
// connection whose TLS handshake plus protocol header took longer than
// HandshakeTimeout.
func (f *FrontDoor) handshakeTimedOut(c net.Conn, stage string, read int) {
	f.timeouts.Add(1)
	f.timeoutLog.log(f.Log, slog.LevelInfo, limitLogInterval, "handshake timeout",
		"timeout", f.HandshakeTimeout, "stage", stage, "read", read, "source", c.RemoteAddr().String())
}

// LimitStats counts what the front door's limits did since it started.
type LimitStats struct {
	Open              int   // connections open now; counted only when a connection limit is set
	RefusedMax        int64 // closed at accept: MaxConnections reached
	RefusedPerIP      int64 // closed at accept: MaxConnectionsPerIP reached
	HandshakeTimeouts int64 // TLS handshake plus protocol header not done within HandshakeTimeout
}

// LimitStats returns the counters of the front door's limits.
func (f *FrontDoor) LimitStats() LimitStats {
	f.mu.Lock()
	slots := f.slots // set by Serve's init, which metrics may race
	f.mu.Unlock()
	sl := slots.Stats()
	return LimitStats{Open: sl.Open, RefusedMax: sl.RefusedMax, RefusedPerIP: sl.RefusedPerIP, HandshakeTimeouts: f.timeouts.Load()}
}

// Shutdown stops accepting, lets the HTTP server finish its requests, and
// waits for connections still in their handshake, until ctx is done. Tunnels
// already handed to the Handler are the Handler's to drain.
func (f *FrontDoor) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	f.closing = true
	ln, srv := f.ln, f.httpSrv
	f.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	done := make(chan struct{})
	go func() { f.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// Close stops everything at once.
func (f *FrontDoor) Close() error {
	f.mu.Lock()
	f.closing = true
	ln, srv := f.ln, f.httpSrv
	f.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if srv != nil {
		return srv.Close()
	}
	return nil
}

// peekLimit bounds the bytes the classifier reads before giving up on every
// matcher: far more than any protocol needs to say yes or no.
const peekLimit = 4096

func (f *FrontDoor) handle(raw net.Conn) {
	deadline := time.Now().Add(f.HandshakeTimeout)
	raw.SetDeadline(deadline)
	var (
		c     net.Conn = raw // what the protocols read: the TLS conn, or raw without TLS
		state *tls.ConnectionState
	)
	if f.TLS != nil {
		tc := tlsbatch.Server(raw, f.TLS)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		_, err := offstack.Do(func() (struct{}, error) { return struct{}{}, tc.HandshakeContext(ctx) })
		cancel()
		if err != nil {
			if !time.Now().Before(deadline) {
				f.handshakeTimedOut(raw, "tls", 0)
			}
			f.Log.Debug("tls handshake failed", "source", raw.RemoteAddr().String(), "err", err)
			raw.Close()
			return
		}
		st := tc.ConnectionState()
		if st.NegotiatedProtocol == "acme-tls/1" {
			// A TLS-ALPN-01 validation: the handshake itself was the answer.
			tc.Close()
			return
		}
		c, state = tc, &st
	}

	t := f.table.Load()
	protos, matchers := t.protocols, t.matchers
	if t.byALPN {
		protos, matchers = t.forALPN(state)
	}
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		v, i, why := classify(buf, matchers)
		if v == verdictMore && len(buf) >= peekLimit {
			v = verdictDecoy
		}
		if v == verdictMore && err != nil {
			// EOF or the deadline before anyone could decide: whatever was
			// sent is the decoy's to answer, exactly as it would alone.
			v = verdictDecoy
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			f.handshakeTimedOut(raw, "header", len(buf))
		}
		switch v {
		case verdictMore:
			continue
		case verdictHTTP, verdictDecoy:
			if len(buf) == 0 && err != nil {
				c.Close()
				return
			}
			if v == verdictDecoy {
				reason := "no protocol matched"
				if why != nil {
					reason = why.Error()
				}
				if f.failures != nil {
					f.failures.fallbacks.Add(1)
					f.failures.count(why)
				}
				f.Log.Debug("fallback to decoy", "source", raw.RemoteAddr().String(), "read", len(buf), "reason", reason)
			}
			f.toHTTP(newPrefixConn(c, state, buf), deadline)
			return
		case verdictProto:
			f.serveProtocol(c, state, buf, protos[i], deadline)
			return
		}
	}
}

// forALPN returns the protocols (and their matchers) a connection may reach
// given the ALPN it negotiated: those without an ALPN restriction, and those
// whose list has it.
func (t *protocolTable) forALPN(state *tls.ConnectionState) ([]RawProtocol, []protocols.Matcher) {
	negotiated := ""
	if state != nil {
		negotiated = state.NegotiatedProtocol
	}
	var ps []RawProtocol
	var ms []protocols.Matcher
	for _, p := range t.protocols {
		if len(p.ALPN) == 0 || slices.Contains(p.ALPN, negotiated) {
			ps, ms = append(ps, p), append(ms, p.Match)
		}
	}
	return ps, ms
}

// toHTTP hands c to the HTTP server. net/http sets its own deadlines per
// request from here on, except for a connection whose handshake deadline
// has passed: its reads stay bound by that deadline, so that the site
// answers what it was sent (a 400 for a complete bad request line) and
// then finds the connection timed out, as it would have alone, instead of
// granting a slow client a fresh header timeout.
func (f *FrontDoor) toHTTP(c *prefixConn, deadline time.Time) {
	if time.Now().Before(deadline) {
		c.SetDeadline(time.Time{})
	} else {
		c.readBy = deadline
		c.Conn.SetWriteDeadline(time.Time{})
	}
	if !f.httpLn.push(c) {
		c.Close()
	}
}

func (f *FrontDoor) serveProtocol(tc net.Conn, state *tls.ConnectionState, prefix []byte, p RawProtocol, deadline time.Time) {
	rc := newRewindConn(tc, state, prefix)
	var authed atomic.Bool
	h := &inboundHandler{next: f.Handler, carrier: tc, inbound: p.Inbound, transport: "tls", source: remoteAddrPort(tc),
		authenticated: func() { authed.Store(true); rc.commit() }}
	base := f.BaseContext
	if base == nil {
		base = context.Background()
	}
	err := p.Server.ServeConn(base, rc, h)
	if err == nil {
		return
	}
	if !authed.Load() && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(deadline) {
		f.handshakeTimedOut(tc, p.Name, len(prefix))
	}
	if f.failures != nil && !authed.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		if errors.Is(err, protocols.ErrNotProtocol) {
			f.failures.fallbacks.Add(1)
		}
		f.failures.count(err)
	}
	if errors.Is(err, protocols.ErrNotProtocol) {
		if back := rc.Rewind(); back != nil {
			f.Log.Debug("fallback to decoy", "source", tc.RemoteAddr().String(), "protocol", p.Name, "reason", err.Error())
			f.toHTTP(back, deadline)
			return
		}
	}
	f.Log.Debug("connection ended", "protocol", p.Name, "source", tc.RemoteAddr().String(), "err", err)
	tc.Close()
}

// inboundHandler stands between a protocol server and the router: it ends
// the handshake deadline once a tunnel is authenticated, and fills in what
// only the gateway knows about the request.
type inboundHandler struct {
	next      tunnel.Handler
	carrier   net.Conn
	inbound   string
	transport string
	source    netip.AddrPort
	// authenticated, when set, is told that the protocol accepted the
	// connection: there is no falling back to the decoy any more.
	authenticated func()
	filled        atomic.Bool // a tunnel was handed on: the handshake succeeded
}

// authed reports whether the protocol handed on a tunnel.
func (h *inboundHandler) authed() bool { return h.filled.Load() }

func (h *inboundHandler) fill(req *tunnel.Request) {
	h.filled.Store(true)
	h.carrier.SetDeadline(time.Time{})
	if h.authenticated != nil {
		h.authenticated()
	}
	if req.Inbound == "" {
		req.Inbound = h.inbound
	}
	if req.Transport == "" {
		req.Transport = h.transport
	}
	// The gateway knows the client best: behind a trusted proxy, the
	// carrier's peer address is the proxy's.
	if h.source.IsValid() {
		req.Source = h.source
	}
}

func (h *inboundHandler) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	h.fill(&req)
	return h.next.HandleStream(ctx, conn, req)
}

func (h *inboundHandler) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	h.fill(&req)
	return h.next.HandlePacket(ctx, pc, req)
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap
}
