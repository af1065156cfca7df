package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
)

// ACMEOptions configure NewACME. The zero value of every field means its
// default; only Domains is required.
//
// Using NewACME means agreeing to the CA's subscriber agreement (Let's
// Encrypt's by default): the account is registered with
// termsOfServiceAgreed set.
type ACMEOptions struct {
	// Domains are the names to obtain certificates for, one certificate
	// each. The first is also served to clients that send no SNI or an
	// unknown one, as an ordinary single-site HTTPS server would. Wildcards
	// are refused: they need DNS-01, which Portico does not do.
	Domains []string

	// CA is the ACME directory URL; "" means Let's Encrypt production.
	// It must be https, except on a loopback address.
	CA string

	// Email is the account's contact address; "" registers without one.
	Email string

	// StorageDir is where certificates, keys and the ACME account are
	// kept (a certmagic.FileStorage). "" means $XDG_DATA_HOME/portico/acme,
	// or ~/.local/share/portico/acme.
	StorageDir string

	// TrustedRoots, if set, are the only roots trusted when talking to
	// the CA, e.g. to reach a test CA like Pebble; nil means the system
	// roots.
	TrustedRoots *x509.CertPool

	// DisableHTTP01 and DisableTLSALPN01 switch off one challenge type
	// each; at least one must stay on. With HTTP-01 on, the gateway must
	// wrap its port-80 handler with HTTPChallengeHandler; with TLS-ALPN-01
	// on, its TLS listener must use GetCertificate and offer NextProtos.
	DisableHTTP01, DisableTLSALPN01 bool

	// AltHTTPPort and AltTLSALPNPort name the local ports on which the
	// gateway's HTTP and TLS listeners answer challenges when the CA-facing
	// ports 80 and 443 are forwarded elsewhere (0 means 80 and 443). They
	// open nothing: unlike certmagic.ACMEIssuer, whose fields of the same
	// name they mirror, the Manager never listens; they are checked and
	// logged so a wrong forwarding shows up next to the failure it causes.
	AltHTTPPort, AltTLSALPNPort int

	// Log receives the Manager's and certmagic's logs; nil means
	// slog.Default().
	Log *slog.Logger
}

// Manager obtains and renews certificates for ACMEOptions.Domains with
// certmagic, using its own certmagic.Config and Cache (never
// certmagic.Default), and serves them through GetCertificate.
//
// The gateway owns every socket. It answers the CA's challenges by routing
// them to the Manager: TLS-ALPN-01 through GetCertificate on its one TLS
// listener (with NextProtos offered), HTTP-01 through HTTPChallengeHandler on
// its HTTP listener. Nothing here listens.
//
// All methods are safe for concurrent use. Call Stop when done, whether or
// not Manage was called: NewACME already starts certmagic's maintenance.
type Manager struct {
	domains           []string
	caURL             string
	httpOn, tlsOn     bool
	httpPort, tlsPort int
	log               *slog.Logger
	chal              *challenges
	transport         *http.Transport
	cache             *certmagic.Cache
	cfg               *certmagic.Config

	stopCtx  context.Context // cancelled by Stop, aborting Manage calls
	stopFunc context.CancelFunc
	mu       sync.Mutex // guards stopped and running.Add
	stopped  bool
	running  sync.WaitGroup // Manage calls in flight
	stopOnce sync.Once
}

// NewACME checks opts and prepares a Manager. It does not contact the CA;
// Manage does.
func NewACME(opts ACMEOptions) (*Manager, error) {
	domains, err := normalizeDomains(opts.Domains)
	if err != nil {
		return nil, err
	}
	if opts.DisableHTTP01 && opts.DisableTLSALPN01 {
		return nil, errors.New("acme: both HTTP-01 and TLS-ALPN-01 are disabled; no way left to prove control of the domains")
	}
	caURL := opts.CA
	if caURL == "" {
		caURL = certmagic.LetsEncryptProductionCA
	}
	if err := checkCAURL(caURL); err != nil {
		return nil, err
	}
	for _, p := range []int{opts.AltHTTPPort, opts.AltTLSALPNPort} {
		if p < 0 || p > 65535 {
			return nil, fmt.Errorf("acme: port %d out of range", p)
		}
	}
	storageDir := opts.StorageDir
	if storageDir == "" {
		if storageDir, err = defaultStorageDir(); err != nil {
			return nil, err
		}
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}

	m := &Manager{
		domains:  domains,
		caURL:    caURL,
		httpOn:   !opts.DisableHTTP01,
		tlsOn:    !opts.DisableTLSALPN01,
		httpPort: orDefault(opts.AltHTTPPort, 80),
		tlsPort:  orDefault(opts.AltTLSALPNPort, 443),
		log:      log,
		chal:     newChallenges(),
	}
	m.stopCtx, m.stopFunc = context.WithCancel(context.Background())

	// Our own transport, so Stop can close its idle connections and the
	// CA's roots can be replaced without touching http.DefaultTransport.
	// (Built from scratch: http.DefaultTransport may have been replaced by
	// something that is not an *http.Transport.)
	m.transport = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          10,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		TLSClientConfig:       &tls.Config{RootCAs: opts.TrustedRoots, MinVersion: tls.VersionTLS12},
	}
	solvers := make(map[string]acmez.Solver, 2)
	if m.httpOn {
		solvers[acme.ChallengeTypeHTTP01] = http01Solver{m.chal}
	}
	if m.tlsOn {
		solvers[acme.ChallengeTypeTLSALPN01] = tlsALPN01Solver{m.chal}
	}
	client := &acmez.Client{
		Client: &acme.Client{
			Directory:  caURL,
			HTTPClient: &http.Client{Transport: m.transport, Timeout: 30 * time.Second},
			UserAgent:  "portico",
			Logger:     log,
		},
		ChallengeSolvers: solvers,
	}
	storage := &certmagic.FileStorage{Path: storageDir}
	zl := zapToSlog(log)

	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		// One Config manages every certificate in this cache.
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		Logger:           zl,
	})
	iss := &acmeIssuer{
		caURL:   caURL,
		email:   opts.Email,
		storage: storage,
		client:  client,
		log:     log,
		current: m.cache.AllMatchingCertificates,
	}
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage: storage,
		Issuers: []certmagic.Issuer{iss},
		Logger:  zl,
		// A plain HTTPS site answers a handshake without SNI, or for a name
		// it does not host, with its main certificate rather than an alert;
		// the front door should look the same.
		DefaultServerName:  domains[0],
		FallbackServerName: domains[0],
	})
	return m, nil
}

// Manage obtains the certificates (loading them from storage when already
// there) and blocks until all are ready, ctx is done, Stop is called or one
// fails. Afterwards certmagic keeps renewing them in the background until
// Stop. Calling Manage again is harmless.
func (m *Manager) Manage(ctx context.Context) error {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("acme: manage: manager is stopped")
	}
	m.running.Add(1)
	m.mu.Unlock()
	defer m.running.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.stopCtx, cancel)()

	m.log.Info("acme: managing certificates", "domains", m.domains, "ca", m.caURL,
		"http01", m.httpOn, "http01_port", m.httpPort, "tlsalpn01", m.tlsOn, "tlsalpn01_port", m.tlsPort)
	if err := m.cfg.ManageSync(ctx, m.domains); err != nil {
		// certmagic's error already names the domain that failed.
		return fmt.Errorf("acme: manage: %w", err)
	}
	return nil
}

// Stop aborts any Manage in progress, waits for it to return, and stops
// certmagic's maintenance (renewals). Certificates already obtained are
// still served by GetCertificate. Stop may be called more than once.
func (m *Manager) Stop() {
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		m.stopFunc()
		m.running.Wait()
		m.cache.Stop()
		m.transport.CloseIdleConnections()
	})
}

// GetCertificate is used as tls.Config.GetCertificate. It serves the managed
// certificates, and during a TLS-ALPN-01 validation (a ClientHello offering
// only "acme-tls/1", RFC 8737 §3) the challenge certificate instead. When
// the negotiated protocol is acme-tls/1 the handshake itself was the answer:
// the gateway should close that connection without reading from it. Until
// Manage has a certificate (from storage or the CA), other handshakes fail.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		// Never fall through to the real certificate here: a client that
		// asks for acme-tls/1 only is a validator, and the answer is either
		// the challenge certificate or nothing.
		if m.tlsOn {
			if cert := m.chal.tlsCert(hello.ServerName); cert != nil {
				return cert, nil
			}
		}
		return nil, fmt.Errorf("acme: no pending tls-alpn-01 challenge for %q", hello.ServerName)
	}
	return m.cfg.GetCertificate(hello)
}

// NextProtos returns the ALPN values the front door must offer in addition
// to h2/http/1.1: "acme-tls/1" when TLS-ALPN-01 is on, else nothing. Put them
// after h2 and http/1.1, so that ordinary clients never negotiate them.
func (m *Manager) NextProtos() []string {
	if m.tlsOn {
		return []string{acmez.ACMETLS1Protocol}
	}
	return nil
}

// httpChallengePrefix is the path of HTTP-01 requests (RFC 8555 §8.3).
const httpChallengePrefix = "/.well-known/acme-challenge/"

// HTTPChallengeHandler wraps next: it answers the HTTP-01 requests of pending
// challenges (GET /.well-known/acme-challenge/TOKEN for the right Host) and
// passes everything else, including unknown tokens, to next. A nil next
// means http.NotFoundHandler().
func (m *Manager) HTTPChallengeHandler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	if !m.httpOn {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, httpChallengePrefix) {
			token := strings.TrimPrefix(r.URL.Path, httpChallengePrefix)
			if keyAuth, ok := m.chal.httpKeyAuth(token, requestHost(r)); ok {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write([]byte(keyAuth))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// NotAfter reports the expiry of the managed certificate for name, the
// latest one if several match; ok is false if there is none.
func (m *Manager) NotAfter(name string) (t time.Time, ok bool) {
	for _, c := range m.cache.AllMatchingCertificates(strings.ToLower(name)) {
		if c.Leaf != nil && c.Leaf.NotAfter.After(t) {
			t, ok = c.Leaf.NotAfter, true
		}
	}
	return t, ok
}

// requestHost is r.Host without port or IPv6 brackets.
func requestHost(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

func normalizeDomains(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errors.New("acme: no domains to manage")
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, d := range in {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		switch {
		case d == "":
			return nil, errors.New("acme: empty domain name")
		case strings.Contains(d, "*"):
			return nil, fmt.Errorf("acme: wildcard %q needs the DNS-01 challenge, which is not supported", d)
		case strings.ContainsAny(d, " /") || (strings.Contains(d, ":") && net.ParseIP(d) == nil):
			return nil, fmt.Errorf("acme: invalid domain %q", d)
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out, nil
}

func checkCAURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("acme: CA URL: %w", err)
	}
	if u.Scheme == "https" && u.Host != "" {
		return nil
	}
	if u.Scheme == "http" {
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("acme: CA URL %q: must be https (plain http only on loopback)", raw)
}

func defaultStorageDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "portico", "acme"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("acme: no StorageDir given and no home directory for the default: %w", err)
	}
	return filepath.Join(home, ".local", "share", "portico", "acme"), nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
