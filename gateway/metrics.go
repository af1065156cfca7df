package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// Handshake failure reasons, the label values of
// portico_handshake_failures_total (docs/api.md).
const (
	failBadKey    = "bad_key"   // the protocol's shape with a key no user has (or a user refused)
	failReplay    = "replay"    // a VMess handshake seen before
	failTimeout   = "timeout"   // the handshake deadline passed
	failMalformed = "malformed" // a user's header or request that does not parse
)

// handshakeFailures counts failures by reason; the zero value is ready.
type handshakeFailures struct {
	badKey, replay, timeout, malformed atomic.Int64
	fallbacks                          atomic.Int64 // connections handed to the site with no protocol's
}

// count files err (a protocol server's or matcher's) under its reason.
// Errors that say nothing of a tunnel attempt (plain HTTP, random bytes)
// count nowhere: those are the site's visitors.
func (h *handshakeFailures) count(err error) {
	if err == nil {
		return
	}
	switch {
	case errors.Is(err, vmessserver.ErrReplay), errors.Is(err, vmessserver.ErrTainted):
		h.replay.Add(1)
	case errors.Is(err, vlessserver.ErrUnknownUser), errors.Is(err, vmessserver.ErrUnknownUser),
		errors.Is(err, anytlsserver.ErrUnknownUser), errors.Is(err, vlessserver.ErrNotAdmitted),
		errors.Is(err, vmessserver.ErrNotAdmitted), errors.Is(err, anytlsserver.ErrNotAdmitted):
		h.badKey.Add(1)
	case errors.Is(err, vless.ErrUnsupportedCommand), errors.Is(err, vless.ErrBadAddons),
		errors.Is(err, vless.ErrUnknownAddon), errors.Is(err, protocols.ErrBadAddr):
		// A known user's header that does not parse (VLESS v0 hands it to
		// the site, wrapped with ErrNotProtocol: still a failed handshake).
		h.malformed.Add(1)
	case errors.Is(err, protocols.ErrNotProtocol):
	default:
		h.malformed.Add(1)
	}
}

// metrics exposes the gateway's own counters to Prometheus: it reads them
// when scraped, so the relay pays nothing for metrics.
type metrics struct {
	g       *Gateway
	version string
	perUser bool

	tunnelsActive, tunnelsTotal, bytes, failures, fallbacks, udp, certExpiry, build, userBytes, userActive *prometheus.Desc
}

// NewMetricsRegistry returns a registry holding the gateway's metrics (and
// Go's runtime and process metrics). perUser adds per-user series.
func (g *Gateway) NewMetricsRegistry(version string, perUser bool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(g.newMetrics(version, perUser))
	return reg
}

func (g *Gateway) newMetrics(version string, perUser bool) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &metrics{g: g, version: version, perUser: perUser,
		tunnelsActive: d("portico_tunnels_active", "Tunnels open now.", "protocol", "transport"),
		tunnelsTotal:  d("portico_tunnels_total", "Tunnels opened.", "protocol", "transport"),
		bytes:         d("portico_bytes_total", "Tunnel payload bytes; up is client to target.", "direction"),
		failures:      d("portico_handshake_failures_total", "Tunnel handshakes that failed, by reason.", "reason"),
		fallbacks:     d("portico_fallback_total", "Connections handed to the decoy site because no protocol took them."),
		udp:           d("portico_udp_associations_active", "UDP associations relayed now."),
		certExpiry:    d("portico_certificate_expiry_seconds", "Seconds until the certificate served for a name expires.", "name"),
		build:         d("portico_build_info", "Always 1; the labels say which build runs.", "version", "goversion"),
		userBytes:     d("portico_user_bytes_total", "A user's payload bytes (admin.perUserMetrics).", "user", "direction"),
		userActive:    d("portico_user_tunnels_active", "A user's tunnels open now (admin.perUserMetrics).", "user"),
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.tunnelsActive, m.tunnelsTotal, m.bytes, m.failures, m.fallbacks, m.udp,
		m.certExpiry, m.build, m.userBytes, m.userActive} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.g.router.stats
	var up, down int64
	st.kinds.Range(func(k, v any) bool {
		kind, c := k.(TunnelKind), v.(*TrafficCounter)
		ch <- prometheus.MustNewConstMetric(m.tunnelsActive, prometheus.GaugeValue, float64(c.active.Load()), kind.Protocol, kind.Transport)
		ch <- prometheus.MustNewConstMetric(m.tunnelsTotal, prometheus.CounterValue, float64(c.total.Load()), kind.Protocol, kind.Transport)
		up += c.up.Load()
		down += c.down.Load()
		return true
	})
	ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(up), "up")
	ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(down), "down")
	f := &m.g.failures
	timeouts := f.timeout.Load()
	if m.g.front != nil {
		timeouts += m.g.front.LimitStats().HandshakeTimeouts
	}
	for _, r := range []struct {
		reason string
		n      int64
	}{{failBadKey, f.badKey.Load()}, {failReplay, f.replay.Load()}, {failTimeout, timeouts}, {failMalformed, f.malformed.Load()}} {
		ch <- prometheus.MustNewConstMetric(m.failures, prometheus.CounterValue, float64(r.n), r.reason)
	}
	ch <- prometheus.MustNewConstMetric(m.fallbacks, prometheus.CounterValue, float64(f.fallbacks.Load()))
	ch <- prometheus.MustNewConstMetric(m.udp, prometheus.GaugeValue, float64(st.UDPAssociations()))
	for name, notAfter := range m.certificates() {
		ch <- prometheus.MustNewConstMetric(m.certExpiry, prometheus.GaugeValue, time.Until(notAfter).Seconds(), name)
	}
	ch <- prometheus.MustNewConstMetric(m.build, prometheus.GaugeValue, 1, m.version, runtime.Version())
	if m.perUser {
		st.users.Range(func(k, v any) bool {
			user, c := k.(string), v.(*TrafficCounter)
			ch <- prometheus.MustNewConstMetric(m.userBytes, prometheus.CounterValue, float64(c.up.Load()), user, "up")
			ch <- prometheus.MustNewConstMetric(m.userBytes, prometheus.CounterValue, float64(c.down.Load()), user, "down")
			ch <- prometheus.MustNewConstMetric(m.userActive, prometheus.GaugeValue, float64(c.active.Load()), user)
			return true
		})
	}
}

// certificates returns the expiry of the certificate served for each name
// the config gives (the default certificate as "" when it names none).
func (m *metrics) certificates() map[string]time.Time {
	g := m.g
	if g.front == nil || g.certNow.Load() == nil {
		return nil
	}
	var names []string
	if sc := g.current.Load().Server; sc != nil {
		switch {
		case sc.TLS.Source == "acme":
			names = sc.TLS.ACME.Domains
		case len(sc.TLS.Hosts) > 0:
			names = sc.TLS.Hosts
		}
	}
	if len(names) == 0 {
		names = []string{""}
	}
	out := map[string]time.Time{}
	for _, name := range names {
		c, err := g.getCertificate(&tls.ClientHelloInfo{ServerName: name})
		if err != nil || c == nil || len(c.Certificate) == 0 {
			continue
		}
		leaf := c.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				continue
			}
		}
		out[name] = leaf.NotAfter
	}
	return out
}
