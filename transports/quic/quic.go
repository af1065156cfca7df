// Package quic carries tunnels over QUIC on the front door's port number
// (UDP), as HTTP/3. Every connection negotiates ALPN "h3" and is served by
// an HTTP/3 server, so to a prober the port is the same site over HTTP/3.
// A tunnel is one HTTP/3 request stream: a POST to the route's path whose
// request and response bodies (DATA frames) are the tunnel's two
// directions once the server has answered 200 — one bidirectional QUIC
// stream per tunnel, many tunnels per connection, and 0-RTT when the client
// holds a session ticket.
//
// Like every transport here, it knows nothing of the protocol inside: the
// server side yields net.Conn to a Serve func, the client side is a
// tunnel.ConnDialer.
package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/portico-gw/portico/internal/connlimit"
	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Error codes for streams ended early, from RFC 9114 §8.1.
const (
	codeNoError          = quicgo.StreamErrorCode(http3.ErrCodeNoError)
	codeRequestCancelled = quicgo.StreamErrorCode(http3.ErrCodeRequestCanceled)
)

// Server serves HTTP/3 on a UDP socket. Handler receives every request:
// the site, with TunnelHandler routes mounted in front of it.
type Server struct {
	TLS         *tls.Config // certificates; NextProtos is set to h3
	Handler     http.Handler
	Log         *slog.Logger
	IdleTimeout time.Duration // HTTP/3 idle connections; zero = 2 min
	// Limits, when not nil, bounds the QUIC connections open at once,
	// overall and per client IP. A connection past a limit is refused at
	// its first packet (CONNECTION_REFUSED) when that is already clear,
	// else closed right after it is accepted.
	Limits *connlimit.Slots
	// Refused, when set, is told of every connection a limit refused.
	Refused func(why connlimit.Refusal, source net.Addr)
	// MaxStreams bounds the tunnels (request streams) open at once on one
	// connection; zero = DefaultMaxStreams.
	MaxStreams int

	once sync.Once
	h3   *http3.Server
}

// DefaultMaxStreams is how many tunnels one QUIC connection may hold open
// at once unless the Server says otherwise (quic-go's own default, 100, is
// less than one browser-like client opens). A Dialer opens another
// connection when it has this many tunnels on each of its connections.
const DefaultMaxStreams = 1024

// errRefused refuses a connection at its first packet.
var errRefused = errors.New("quic: connection limit reached")

func (s *Server) init() {
	s.once.Do(func() {
		idle := s.IdleTimeout
		if idle == 0 {
			idle = 2 * time.Minute
		}
		streams := s.MaxStreams
		if streams <= 0 {
			streams = DefaultMaxStreams
		}
		qc := &quicgo.Config{
			Allow0RTT:          true,
			MaxIdleTimeout:     idle,
			KeepAlivePeriod:    0,
			MaxIncomingStreams: int64(streams),
		}
		if s.Limits != nil {
			// The callback's answer replaces the whole config (nil would
			// mean quic-go's defaults), so it answers with this one.
			perConn := qc.Clone()
			// Refusing at the first packet costs no handshake; the slot
			// itself is taken in ConnContext, once the conn exists to give
			// it back when it ends.
			qc.GetConfigForClient = func(info *quicgo.ClientInfo) (*quicgo.Config, error) {
				if why := s.Limits.WouldRefuse(connlimit.AddrOf(info.RemoteAddr)); why != connlimit.Admitted {
					s.Limits.CountRefusal(why)
					s.refused(why, info.RemoteAddr)
					return nil, errRefused
				}
				return perConn, nil
			}
		}
		s.h3 = &http3.Server{
			TLSConfig:   http3.ConfigureTLSConfig(s.TLS),
			Handler:     s.Handler,
			QUICConfig:  qc,
			IdleTimeout: idle,
			Logger:      s.Log,
			ConnContext: func(ctx context.Context, c *quicgo.Conn) context.Context {
				if s.Limits != nil {
					release, why := s.Limits.Take(connlimit.AddrOf(c.RemoteAddr()))
					if release == nil {
						s.refused(why, c.RemoteAddr())
						c.CloseWithError(quicgo.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "")
					} else {
						go func() {
							<-c.Context().Done()
							release()
						}()
					}
				}
				return context.WithValue(ctx, quicConnKey{}, c)
			},
		}
	})
}

func (s *Server) refused(why connlimit.Refusal, source net.Addr) {
	if s.Refused != nil {
		s.Refused(why, source)
	}
}

// quicConnKey carries a request's QUIC connection in its context, so that
// a tunnel route can wait for the connection's handshake.
type quicConnKey struct{}

// Serve serves pc until Close; it returns the socket's error.
func (s *Server) Serve(pc net.PacketConn) error {
	s.init()
	return s.h3.Serve(pc)
}

// Close stops the server and closes every connection at once.
func (s *Server) Close() error {
	s.init()
	return s.h3.Close()
}

// Shutdown stops accepting and lets requests finish until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	return s.h3.Shutdown(ctx)
}

// AltSvc wraps the TCP site so that every answer advertises HTTP/3 on port,
// as modern sites do.
func AltSvc(next http.Handler, port int) http.Handler {
	value := `h3=":` + strconv.Itoa(port) + `"; ma=86400`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor < 3 {
			w.Header().Set("Alt-Svc", value)
		}
		next.ServeHTTP(w, r)
	})
}

// TunnelHandler is one tunnel route on the HTTP/3 server. A POST to Path
// (and Host, when set) over HTTP/3 is answered 200 and its stream becomes
// the tunnel handed to Serve; every other request goes to Next, so probers
// see the site. Serve is called in the request's goroutine and the stream is
// closed when it returns.
type TunnelHandler struct {
	Path  string
	Host  string
	Next  http.Handler
	Serve func(conn net.Conn, r *http.Request)
}

func (h *TunnelHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	streamer, ok := w.(http3.HTTPStreamer)
	if !ok || r.ProtoMajor != 3 || r.Method != http.MethodPost || r.URL.Path != h.Path ||
		(h.Host != "" && !sameHost(r.Host, h.Host)) {
		h.next(w, r)
		return
	}
	// A request that came as 0-RTT data may be a replay of a recorded
	// first flight: nothing proves the sender holds the keys until the
	// handshake completes, which a replayer cannot do. So a tunnel waits
	// for it before answering or reading the protocol's header (the
	// client's 0-RTT bytes wait in the stream meanwhile); the site's
	// requests are served at once, as every HTTP/3 server does.
	if c, ok := r.Context().Value(quicConnKey{}).(*quicgo.Conn); ok {
		select {
		case <-c.HandshakeComplete():
		case <-r.Context().Done():
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	str, err := streamer.HTTPStream()
	if err != nil {
		return
	}
	c := &serverConn{str: str, local: localAddr(r), remote: remoteAddr(r)}
	defer c.Close()
	h.Serve(c, r)
}

func (h *TunnelHandler) next(w http.ResponseWriter, r *http.Request) {
	if h.Next == nil {
		http.NotFound(w, r)
		return
	}
	h.Next.ServeHTTP(w, r)
}

func sameHost(got, want string) bool {
	if h, _, err := net.SplitHostPort(got); err == nil {
		got = h
	}
	return got == want
}

func localAddr(r *http.Request) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return &net.UDPAddr{}
}

func remoteAddr(r *http.Request) net.Addr {
	if ap, err := net.ResolveUDPAddr("udp", r.RemoteAddr); err == nil {
		return ap
	}
	return &net.UDPAddr{}
}

// serverConn is a tunnel on the server side: the request's stream after
// the 200.
type serverConn struct {
	str           *http3.Stream
	local, remote net.Addr
	closeOnce     sync.Once
}

func (c *serverConn) Read(p []byte) (int, error)  { return c.str.Read(p) }
func (c *serverConn) Write(p []byte) (int, error) { return c.str.Write(p) }

// CloseWrite ends the response body (a QUIC FIN); reading goes on.
func (c *serverConn) CloseWrite() error { return c.str.Close() }

func (c *serverConn) Close() error {
	c.closeOnce.Do(func() {
		c.str.CancelRead(codeNoError)
		c.str.Close()
	})
	return nil
}

func (c *serverConn) LocalAddr() net.Addr                { return c.local }
func (c *serverConn) RemoteAddr() net.Addr               { return c.remote }
func (c *serverConn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *serverConn) SetReadDeadline(t time.Time) error  { return c.str.SetReadDeadline(t) }
func (c *serverConn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// Dialer opens tunnels over shared QUIC connections to Address. Tunnels
// go on one connection until it holds MaxStreams of them; the next opens
// another connection, as v2ray's QUIC client does, so a client with more
// tunnels open than one connection may carry gets a new connection rather
// than waiting for a tunnel to close. A connection that closes is replaced
// by the next tunnel; one left with no tunnels while another is open is
// closed. It implements tunnel.ConnDialer.
type Dialer struct {
	Address string      // host:port (UDP)
	Path    string      // the server's tunnel route
	Host    string      // :authority; default the TLS server name, else Address
	TLS     *tls.Config // ServerName, RootCAs or pin checks; NextProtos is set to h3
	// MaxStreams is how many tunnels one connection carries at once; zero
	// = DefaultMaxStreams, the server's default. Above the server's own
	// limit, tunnels past it wait for a free stream.
	MaxStreams int

	mu      sync.Mutex
	conns   []*sharedConn // live connections, oldest first
	dialing chan struct{} // closed when the dial in progress ends; nil when none is
	tlsCf   *tls.Config
	tr      *http3.Transport
}

// sharedConn is one QUIC connection of a Dialer and how many of its
// tunnels are open (counted from DialConn to the tunnel's Close).
type sharedConn struct {
	conn    *quicgo.Conn
	h3      *http3.ClientConn
	tunnels int
}

// ErrRefused is returned when the server answers the tunnel request with a
// status other than 200 (a wrong path, or no tunnel route at all).
var ErrRefused = errors.New("quic: server refused the tunnel request")

func (d *Dialer) maxStreams() int {
	if d.MaxStreams > 0 {
		return d.MaxStreams
	}
	return DefaultMaxStreams
}

// acquire returns a live connection with room for one more tunnel, counted
// as taken, dialing a new one when every connection is full.
func (d *Dialer) acquire(ctx context.Context) (*sharedConn, error) {
	for {
		d.mu.Lock()
		d.conns = slices.DeleteFunc(d.conns, func(sc *sharedConn) bool { return sc.conn.Context().Err() != nil })
		for _, sc := range d.conns {
			if sc.tunnels < d.maxStreams() {
				sc.tunnels++
				d.mu.Unlock()
				return sc, nil
			}
		}
		if d.dialing == nil {
			break // this call dials, with mu held
		}
		// Another call is dialing: its connection may have room.
		dialing := d.dialing
		d.mu.Unlock()
		select {
		case <-dialing:
		case <-ctx.Done():
			return nil, fmt.Errorf("quic: dial %s: %w", d.Address, ctx.Err())
		}
	}
	if d.tlsCf == nil {
		cfg := d.TLS.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		cfg.NextProtos = []string{http3.NextProtoH3}
		if cfg.ClientSessionCache == nil {
			// Session tickets make the next connection 0-RTT.
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		}
		d.tlsCf = cfg
		d.tr = &http3.Transport{}
	}
	dialing := make(chan struct{})
	d.dialing = dialing
	tlsCf, tr := d.tlsCf, d.tr
	// The handshake runs without mu, so that tunnels closing meanwhile
	// (release) do not wait for it.
	d.mu.Unlock()
	conn, err := quicgo.DialAddrEarly(ctx, d.Address, tlsCf, &quicgo.Config{KeepAlivePeriod: 20 * time.Second, MaxIdleTimeout: 2 * time.Minute})
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dialing = nil
	close(dialing)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", d.Address, err)
	}
	sc := &sharedConn{conn: conn, h3: tr.NewClientConn(conn), tunnels: 1}
	d.conns = append(d.conns, sc)
	return sc, nil
}

// release gives back a tunnel's place on sc. A connection left with no
// tunnels is closed while another is open, so a burst's extra connections
// do not outlive it.
func (d *Dialer) release(sc *sharedConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	sc.tunnels--
	if sc.tunnels > 0 || len(d.conns) < 2 {
		return
	}
	if i := slices.Index(d.conns, sc); i >= 0 {
		d.conns = slices.Delete(d.conns, i, i+1)
		sc.conn.CloseWithError(0, "")
	}
}

// DialConn opens one tunnel. The request header is sent at once (as 0-RTT
// data when possible) and the tunnel's first bytes may follow without
// waiting for the answer; the first Read checks it.
func (d *Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	sc, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	str, err := sc.h3.OpenRequestStream(ctx)
	if err != nil {
		d.release(sc)
		return nil, fmt.Errorf("quic: open stream: %w", err)
	}
	host := d.Host
	if host == "" {
		host = d.tlsCf.ServerName
	}
	if host == "" {
		host = d.Address
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+d.Path, nil)
	if err == nil {
		err = str.SendRequestHeader(req)
	}
	if err != nil {
		str.CancelWrite(codeRequestCancelled)
		str.CancelRead(codeRequestCancelled)
		d.release(sc)
		return nil, fmt.Errorf("quic: send request: %w", err)
	}
	return &clientConn{str: str, conn: sc.conn, release: func() { d.release(sc) }}, nil
}

// Close closes every shared connection; their tunnels end with them.
func (d *Dialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, sc := range d.conns {
		sc.conn.CloseWithError(0, "")
	}
	d.conns = slices.Delete(d.conns, 0, len(d.conns))
	return nil
}

// clientConn is a tunnel on the client side.
type clientConn struct {
	str     *http3.RequestStream
	conn    *quicgo.Conn
	release func() // gives the tunnel's place on conn back to the Dialer

	respOnce  sync.Once
	respErr   error
	closeOnce sync.Once
}

func (c *clientConn) awaitResponse() error {
	c.respOnce.Do(func() {
		resp, err := c.str.ReadResponse()
		switch {
		case err != nil:
			c.respErr = fmt.Errorf("quic: read response: %w", err)
		case resp.StatusCode != http.StatusOK:
			c.respErr = fmt.Errorf("%w (status %d)", ErrRefused, resp.StatusCode)
		}
	})
	return c.respErr
}

func (c *clientConn) Read(p []byte) (int, error) {
	if err := c.awaitResponse(); err != nil {
		return 0, err
	}
	return c.str.Read(p)
}

func (c *clientConn) Write(p []byte) (int, error) { return c.str.Write(p) }

// CloseWrite ends the request body (a QUIC FIN); reading goes on.
func (c *clientConn) CloseWrite() error { return c.str.Close() }

func (c *clientConn) Close() error {
	c.closeOnce.Do(func() {
		c.str.CancelRead(codeNoError)
		c.str.Close()
		c.release()
	})
	return nil
}

func (c *clientConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *clientConn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *clientConn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *clientConn) SetReadDeadline(t time.Time) error  { return c.str.SetReadDeadline(t) }
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }
