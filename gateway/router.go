package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/internal/offstack"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// Rule sends matching tunnels to one outbound. Every non-empty condition
// must hold; a rule with none matches everything.
type Rule struct {
	Inbounds []string       // inbound tags
	Domains  []string       // domain suffixes: "example.com" matches it and its subdomains
	IPs      []netip.Prefix // destination IP ranges
	Ports    []PortRange
	Network  protocols.Network // 0 = any
	Outbound string
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r *Rule) match(req *tunnel.Request) bool {
	if len(r.Inbounds) > 0 && !contains(r.Inbounds, req.Inbound) {
		return false
	}
	if r.Network != 0 && r.Network != req.Network {
		return false
	}
	if len(r.Ports) > 0 {
		ok := false
		for _, p := range r.Ports {
			ok = ok || (req.Target.Port >= p.Lo && req.Target.Port <= p.Hi)
		}
		if !ok {
			return false
		}
	}
	if len(r.Domains) > 0 {
		d := strings.ToLower(req.Target.Domain)
		ok := false
		for _, suffix := range r.Domains {
			ok = ok || d == suffix || strings.HasSuffix(d, "."+suffix)
		}
		if !ok {
			return false
		}
	}
	if len(r.IPs) > 0 {
		ok := false
		for _, p := range r.IPs {
			ok = ok || (req.Target.IP.IsValid() && p.Contains(req.Target.IP.Unmap()))
		}
		if !ok {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Router is the gateway's tunnel.Handler: it picks an outbound for each
// authenticated tunnel, dials it and relays, counting bytes per user.
type Router struct {
	table       atomic.Pointer[routeTable] // outbounds and rules; a reload swaps it
	log         *slog.Logger
	idle        time.Duration
	dialTimeout time.Duration
	stats       *Stats

	assocs   *associations // UDP associations, bounded
	fullCone bool

	// Open tunnels, and who waits for there to be none. Not a WaitGroup:
	// tunnels may start while Shutdown waits, which WaitGroup forbids.
	mu       sync.Mutex
	open     int64
	drained  chan struct{} // closed when open reaches zero; made by Wait
	draining bool          // set by Wait: new tunnels are refused

	// Open tunnels by inbound and user, to end a removed user's.
	tunnelsMu sync.Mutex
	tunnels   map[userKey]map[*context.CancelFunc]struct{}
	retired   []tunnel.Dialer // outbounds a reload replaced, closed at shutdown
}

// routeTable is where tunnels go: outbounds by tag, the rules, the default.
type routeTable struct {
	outbounds  map[string]tunnel.Dialer
	defaultOut string
	rules      []Rule
}

type userKey struct{ inbound, user string }

// ErrDraining is why a tunnel that starts once the gateway is shutting down
// (Router.Wait has been called) is refused: a new stream on a multiplexed
// carrier (an AnyTLS session, an HTTP/2 or HTTP/3 connection) that was
// accepted before the listeners closed.
var ErrDraining = errors.New("gateway: shutting down: new tunnels are refused")

// RouterOptions configures a Router.
type RouterOptions struct {
	Outbounds   map[string]tunnel.Dialer // by tag; must hold Default
	Default     string                   // the outbound when no rule matches
	Rules       []Rule
	Idle        time.Duration // relay idle timeout; zero = 5 min
	DialTimeout time.Duration // zero = 10 s
	Log         *slog.Logger
	Stats       *Stats // nil = a fresh one
	// MaxAssociations and MaxAssociationsPerClient bound the UDP
	// associations relayed at once (zero: the defaults, 4096 and 256); at a
	// bound the oldest is ended.
	MaxAssociations, MaxAssociationsPerClient int
	// NAT is the UDP behaviour: NATFullCone (the default, "") or
	// NATSymmetric.
	NAT string
}

// NewRouter checks that every rule names a known outbound.
func NewRouter(o RouterOptions) (*Router, error) {
	t, err := newRouteTable(o)
	if err != nil {
		return nil, err
	}
	if o.NAT != "" && o.NAT != NATFullCone && o.NAT != NATSymmetric {
		return nil, fmt.Errorf("router: udp nat %q: want %q or %q", o.NAT, NATFullCone, NATSymmetric)
	}
	rt := &Router{assocs: newAssociations(o.MaxAssociations, o.MaxAssociationsPerClient), fullCone: o.NAT != NATSymmetric,
		tunnels: map[userKey]map[*context.CancelFunc]struct{}{},
		log:     o.Log, idle: o.Idle, dialTimeout: o.DialTimeout, stats: o.Stats}
	if rt.log == nil {
		rt.log = slog.Default()
	}
	if rt.idle == 0 {
		rt.idle = 5 * time.Minute
	}
	if rt.dialTimeout == 0 {
		rt.dialTimeout = 10 * time.Second
	}
	if rt.stats == nil {
		rt.stats = NewStats()
	}
	rt.table.Store(t)
	return rt, nil
}

func newRouteTable(o RouterOptions) (*routeTable, error) {
	if _, ok := o.Outbounds[o.Default]; !ok {
		return nil, fmt.Errorf("router: default outbound %q does not exist", o.Default)
	}
	for i, r := range o.Rules {
		if _, ok := o.Outbounds[r.Outbound]; !ok {
			return nil, fmt.Errorf("router: rule %d: outbound %q does not exist", i, r.Outbound)
		}
	}
	return &routeTable{outbounds: o.Outbounds, defaultOut: o.Default, rules: o.Rules}, nil
}

// setTable routes tunnels that start from now on by other's outbounds and
// rules (a reload). Tunnels under way keep their outbound; outbounds that
// other no longer has are closed at shutdown, not now, for them.
func (rt *Router) setTable(other *Router) {
	next := other.table.Load()
	old := rt.table.Swap(next)
	rt.tunnelsMu.Lock()
	for tag, d := range old.outbounds {
		if next.outbounds[tag] != d {
			rt.retired = append(rt.retired, d)
		}
	}
	rt.tunnelsMu.Unlock()
}

// track registers a tunnel of user on inbound that cancel ends; the
// returned function unregisters it.
func (rt *Router) track(req *tunnel.Request, cancel context.CancelFunc) func() {
	k := userKey{req.Inbound, req.User}
	p := &cancel
	rt.tunnelsMu.Lock()
	m := rt.tunnels[k]
	if m == nil {
		m = map[*context.CancelFunc]struct{}{}
		rt.tunnels[k] = m
	}
	m[p] = struct{}{}
	rt.tunnelsMu.Unlock()
	return func() {
		rt.tunnelsMu.Lock()
		delete(m, p)
		if len(m) == 0 {
			delete(rt.tunnels, k)
		}
		rt.tunnelsMu.Unlock()
	}
}

// CloseUser ends the open tunnels of user on inbound and reports how many.
func (rt *Router) CloseUser(inbound, user string) int {
	rt.tunnelsMu.Lock()
	var cancels []context.CancelFunc
	for p := range rt.tunnels[userKey{inbound, user}] {
		cancels = append(cancels, *p)
	}
	rt.tunnelsMu.Unlock()
	for _, c := range cancels {
		c()
	}
	return len(cancels)
}

// closeOutbounds stops what outbounds run in the background (session
// pools, idle checks).
func (rt *Router) closeOutbounds() {
	rt.tunnelsMu.Lock()
	all := append([]tunnel.Dialer(nil), rt.retired...)
	rt.tunnelsMu.Unlock()
	for _, d := range rt.table.Load().outbounds {
		all = append(all, d)
	}
	for _, d := range all {
		if c, ok := d.(interface{ Close() error }); ok {
			c.Close()
		}
	}
}

// Stats returns the per-user counters.
func (rt *Router) Stats() *Stats { return rt.stats }

// Active is the number of tunnels being relayed now.
func (rt *Router) Active() int64 {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.open
}

// enter and leave bracket every tunnel; enter refuses once Wait was called.
func (rt *Router) enter() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.draining {
		return false
	}
	rt.open++
	return true
}

func (rt *Router) leave() {
	rt.mu.Lock()
	rt.open--
	if rt.open == 0 && rt.drained != nil {
		close(rt.drained)
		rt.drained = nil
	}
	rt.mu.Unlock()
}

// Wait refuses every tunnel that starts from now on (with ErrDraining: the
// gateway is draining) and blocks until every tunnel has ended or ctx is
// done.
func (rt *Router) Wait(ctx context.Context) error {
	rt.mu.Lock()
	rt.draining = true
	if rt.open == 0 {
		rt.mu.Unlock()
		return nil
	}
	if rt.drained == nil {
		rt.drained = make(chan struct{})
	}
	drained := rt.drained
	rt.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pick returns the outbound for req from table t.
func (t *routeTable) pick(req *tunnel.Request) (string, tunnel.Dialer) {
	for i := range t.rules {
		if t.rules[i].match(req) {
			return t.rules[i].Outbound, t.outbounds[t.rules[i].Outbound]
		}
	}
	return t.defaultOut, t.outbounds[t.defaultOut]
}

// HandleStream implements tunnel.Handler.
func (rt *Router) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	start := time.Now()
	outTag, out := rt.table.Load().pick(&req)
	if !rt.enter() {
		if dr, ok := conn.(tunnel.DialReporter); ok {
			dr.ReportDial(ErrDraining)
		}
		conn.Close()
		rt.log.Info("tunnel refused", append(tunnelAttrs(&req, outTag), "err", ErrDraining)...)
		return ErrDraining
	}
	defer rt.leave()

	dctx, cancel := context.WithTimeout(ctx, rt.dialTimeout)
	target, err := offstack.Do(func() (net.Conn, error) { return out.DialStream(dctx, req.Target) })
	cancel()
	if rr, ok := conn.(tunnel.RemoteReporter); ok && err == nil {
		// Only a direct dial knows the address it reached; through another
		// proxy the protocol reports "unknown" by itself.
		if _, direct := out.(*Direct); direct {
			if a, ok := target.RemoteAddr().(*net.TCPAddr); ok {
				ap := a.AddrPort()
				rr.ReportRemote(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			}
		}
	}
	if dr, ok := conn.(tunnel.DialReporter); ok {
		dr.ReportDial(err)
	}
	if err != nil {
		conn.Close()
		level := slog.LevelWarn
		if errors.Is(err, protocols.ErrBlocked) {
			level = slog.LevelInfo
		}
		rt.log.Log(ctx, level, "tunnel dial failed", append(tunnelAttrs(&req, outTag),
			"duration", time.Since(start).Round(time.Millisecond), "err", err)...)
		return err
	}
	tctx, end := context.WithCancel(ctx) // ended early only for a removed user
	defer end()
	untrack := rt.track(&req, end)
	tc := rt.stats.open(&req)
	res := Relay(tctx, conn, target, RelayOptions{Idle: rt.idle, Counter: tc})
	untrack()
	tc.close()
	attrs := append(tunnelAttrs(&req, outTag),
		"up", res.Up, "down", res.Down, "duration", time.Since(start).Round(time.Millisecond))
	if res.IdledOut {
		attrs = append(attrs, "idle_timeout", true)
	}
	if res.Err != nil {
		attrs = append(attrs, "err", res.Err)
	}
	rt.log.Info("tunnel", attrs...)
	return res.Err
}

// HandlePacket implements tunnel.Handler: it picks the outbound for the
// association's first destination (req.Target) as HandleStream does, opens
// its packet conn, and relays with RelayPackets (idle timeout 60 s, 30 s
// while every destination is port 53), counting payload bytes per user.
// Each later destination is routed by the same rules: one that routes
// elsewhere, or that the first conn cannot carry (a VLESS or VMess tunnel
// has one destination), gets its own outbound conn (16 per association at
// most); a blocked one has its packets dropped. It logs one line per
// association.
func (rt *Router) HandlePacket(ctx context.Context, pc tunnel.PacketConn, req tunnel.Request) error {
	start := time.Now()
	table := rt.table.Load() // one table for the whole association
	outTag, _ := table.pick(&req)
	if !rt.enter() {
		pc.Close()
		rt.log.Info("udp association refused", append(tunnelAttrs(&req, outTag), "err", ErrDraining)...)
		return ErrDraining
	}
	defer rt.leave()
	ctx = withPacketPolicy(ctx, rt.packetPolicy(pc, &req))
	// Every later destination is routed too, so that a rule (a blocked
	// range, say) holds for all packets of the association, not only the
	// first.
	route := func(dst protocols.Addr) (string, tunnel.Dialer) {
		r := req
		r.Target = dst
		return table.pick(&r)
	}
	dial := func(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
		dctx, cancel := context.WithTimeout(ctx, rt.dialTimeout)
		defer cancel()
		_, out := route(dst)
		return out.DialPacket(dctx, dst)
	}
	same := func(dst protocols.Addr) bool { tag, _ := route(dst); return tag == outTag }
	target, err := dial(ctx, req.Target)
	if err != nil {
		pc.Close()
		level := slog.LevelWarn
		if errors.Is(err, protocols.ErrBlocked) {
			level = slog.LevelInfo
		}
		rt.log.Log(ctx, level, "udp association dial failed", append(tunnelAttrs(&req, outTag),
			"duration", time.Since(start).Round(time.Millisecond), "err", err)...)
		return err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	remove, ended := rt.assocs.add(req.Source.Addr(), cancel)
	defer remove()
	if ended > 0 && rt.assocs.warnNow(10*time.Second) {
		rt.log.Warn("udp association limit reached: oldest associations ended", "client", req.Source.Addr().String(),
			"per_client", rt.assocs.perClient, "max", rt.assocs.max, "ended_so_far", rt.assocs.evicted.Load())
	}
	untrack := rt.track(&req, cancel)
	tc := rt.stats.open(&req)
	res := RelayPackets(actx, pc, target, req.Target, PacketRelayOptions{Counter: tc, Dial: dial, Same: same})
	tc.close()
	untrack()
	attrs := append(tunnelAttrs(&req, outTag),
		"up_packets", res.UpPackets, "down_packets", res.DownPackets, "up", res.Up, "down", res.Down,
		"duration", time.Since(start).Round(time.Millisecond))
	if res.Dropped > 0 {
		attrs = append(attrs, "dropped", res.Dropped)
	}
	if res.IdledOut {
		attrs = append(attrs, "idle_timeout", true)
	}
	if res.Err != nil {
		attrs = append(attrs, "err", res.Err)
	}
	rt.log.Info("udp association", attrs...)
	return res.Err
}

// packetPolicy says how Direct treats this tunnel's datagrams: on a
// full-cone gateway, a tunnel that can name each datagram's source gets
// datagrams from anyone, and the tunnels of one association share a socket.
func (rt *Router) packetPolicy(pc tunnel.PacketConn, req *tunnel.Request) packetPolicy {
	if !rt.fullCone {
		return packetPolicy{}
	}
	ms, ok := pc.(tunnel.MultiSource)
	if !ok || !ms.MultiSource() {
		return packetPolicy{}
	}
	p := packetPolicy{anySource: true}
	if req.Association != "" {
		p.mapping = req.Inbound + "\x00" + req.Association
	}
	return p
}

func tunnelAttrs(req *tunnel.Request, out string) []any {
	return []any{"user", req.User, "inbound", req.Inbound, "transport", req.Transport,
		"network", req.Network.String(), "target", req.Target.String(), "source", req.Source.String(), "outbound", out}
}
