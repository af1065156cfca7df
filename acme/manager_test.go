package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/goleak"

	"github.com/portico-gw/portico/internal/pebbletest"
)

const testDomain = "portico.test"

// frontDoor stands in for the gateway: one TLS listener using the Manager's
// GetCertificate and NextProtos, one HTTP listener whose handler is wrapped
// by HTTPChallengeHandler. It counts the challenge traffic each receives.
type frontDoor struct {
	tlsLn, httpLn net.Listener
	alpnAnswers   atomic.Int32 // challenge certificates served for acme-tls/1
	httpHits      atomic.Int32 // requests under /.well-known/acme-challenge/
}

func listenFrontDoor(t *testing.T) *frontDoor {
	t.Helper()
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &frontDoor{tlsLn: tlsLn, httpLn: httpLn}
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// serve starts both listeners with m's handlers; cleanup stops them and
// waits for every goroutine they started.
func (fd *frontDoor) serve(t *testing.T, m *Manager) {
	t.Helper()
	var wg sync.WaitGroup

	decoy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "just a website", http.StatusNotFound)
	})
	counted := m.HTTPChallengeHandler(decoy)
	httpSrv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
				fd.httpHits.Add(1)
			}
			counted.ServeHTTP(w, r)
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = httpSrv.Serve(fd.httpLn)
	}()

	tlsLn := tls.NewListener(fd.tlsLn, &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := m.GetCertificate(hello)
			// Counted here, before the certificate is even sent, so the
			// count is complete by the time the validator has its answer.
			if err == nil && slices.Equal(hello.SupportedProtos, []string{acmez.ACMETLS1Protocol}) {
				fd.alpnAnswers.Add(1)
			}
			return cert, err
		},
		NextProtos: append([]string{"h2", "http/1.1"}, m.NextProtos()...),
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				// For acme-tls/1 the handshake is the whole answer; other
				// clients here only want to see the certificate too.
				_ = tc.Handshake()
			}()
		}
	}()

	t.Cleanup(func() {
		_ = httpSrv.Close()
		_ = tlsLn.Close()
		wg.Wait()
	})
}

// verifyNoLeaks checks, after every other cleanup, that the test left no
// goroutine behind. Two known exceptions, neither ours to stop: Pebble's VA
// task loop, which has no way to stop, and certmagic.FileStorage's lock
// keeper, which polls every 5 s and only then notices its lock file is gone.
func verifyNoLeaks(t *testing.T) {
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	}
	t.Cleanup(func() {
		if t.Failed() {
			return // the failure says more than the goroutines it stranded
		}
		goleak.VerifyNone(t, opts...)
	})
}

// pebbleRun is what obtainAgainstPebble leaves for the test to inspect.
type pebbleRun struct {
	fd     *frontDoor
	m      *Manager
	opts   ACMEOptions
	pebble pebbletest.CA
	leaf   *x509.Certificate // served after Manage, verified
	logs   *recordingHandler // the Manager's log records
}

// obtainAgainstPebble runs the whole story for one challenge type: a real
// Pebble validates through the front door, Manage returns, and a client that
// trusts only Pebble's root verifies the served certificate for the domain.
func obtainAgainstPebble(t *testing.T, disableHTTP, disableTLSALPN bool) *pebbleRun {
	verifyNoLeaks(t)
	var queries atomic.Int32
	dnsAddr := pebbletest.StartDNS(t, testDomain, &queries)
	fd := listenFrontDoor(t)
	pebble := pebbletest.Start(t, port(fd.httpLn), port(fd.tlsLn), dnsAddr, newTestWriter(t))

	logs := &recordingHandler{}
	opts := ACMEOptions{
		Domains:          []string{testDomain},
		CA:               pebble.Directory,
		Email:            "ops@portico.test",
		StorageDir:       t.TempDir(),
		TrustedRoots:     pebble.APIRoots,
		DisableHTTP01:    disableHTTP,
		DisableTLSALPN01: disableTLSALPN,
		Log:              slog.New(teeHandler{testLogger(t).Handler(), logs}),
	}
	m, err := NewACME(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	fd.serve(t, m)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	if err := m.Manage(ctx); err != nil {
		t.Fatalf("Manage: %v", err)
	}
	t.Logf("certificate obtained in %v", time.Since(start))

	if queries.Load() == 0 {
		t.Error("Pebble's VA never asked the test DNS server")
	}
	leaf := verifyServed(t, fd.tlsLn.Addr().String(), pebble.Roots)
	notAfter, ok := m.NotAfter(testDomain)
	if !ok || !notAfter.Equal(leaf.NotAfter) {
		t.Errorf("NotAfter(%q) = %v, %v; want %v, true", testDomain, notAfter, ok, leaf.NotAfter)
	}
	if _, ok := m.NotAfter("other.test"); ok {
		t.Error("NotAfter reports a certificate for a name never managed")
	}
	return &pebbleRun{fd: fd, m: m, opts: opts, pebble: pebble, leaf: leaf, logs: logs}
}

// verifyServed connects to addr as an ordinary browser would, trusting only
// roots, and returns the verified leaf.
func verifyServed(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		ServerName: testDomain,
		RootCAs:    roots,
		NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		t.Fatalf("verifying client: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if !slices.Equal(leaf.DNSNames, []string{testDomain}) {
		t.Errorf("served certificate for %v, want [%s]", leaf.DNSNames, testDomain)
	}
	return leaf
}

func TestACMEPebbleHTTP01(t *testing.T) {
	run := obtainAgainstPebble(t, false, true)
	hits := run.fd.httpHits.Load()
	if hits == 0 {
		t.Error("Pebble never fetched the HTTP-01 token from the front door")
	}
	if run.fd.alpnAnswers.Load() != 0 {
		t.Error("a TLS-ALPN-01 challenge was answered although it is disabled")
	}

	// A restart finds the certificate in StorageDir: no new order, same
	// certificate served.
	run.m.Stop()
	again, err := NewACME(run.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Stop)
	if err := again.Manage(context.Background()); err != nil {
		t.Fatalf("Manage after restart: %v", err)
	}
	if run.fd.httpHits.Load() != hits {
		t.Error("restart ran a new order instead of using the stored certificate")
	}
	leaf, err := handshake(t, &tls.Config{GetCertificate: again.GetCertificate},
		&tls.Config{ServerName: testDomain, RootCAs: run.pebble.Roots})
	if err != nil {
		t.Fatalf("handshake after restart: %v", err)
	}
	if !leaf.Equal(run.leaf) {
		t.Error("restart serves a different certificate")
	}
}

func TestACMEPebbleTLSALPN01(t *testing.T) {
	run := obtainAgainstPebble(t, true, false)
	if run.fd.alpnAnswers.Load() == 0 {
		t.Error("Pebble never completed an acme-tls/1 handshake with the front door")
	}
	if run.fd.httpHits.Load() != 0 {
		t.Error("an HTTP-01 challenge was fetched although it is disabled")
	}
	if !slices.Equal(run.m.NextProtos(), []string{"acme-tls/1"}) {
		t.Errorf("NextProtos() = %v, want [acme-tls/1]", run.m.NextProtos())
	}

	// A renewal names the certificate it replaces (ARI), and the CA takes it.
	iss := run.m.cfg.Issuers[0].(*acmeIssuer)
	if old := iss.replaces(&x509.CertificateRequest{DNSNames: []string{testDomain}}); old == nil || !old.Equal(run.leaf) {
		t.Fatalf("replaces() = %v, want the served certificate", old)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := run.m.cfg.RenewCertSync(ctx, testDomain, true); err != nil {
		t.Fatalf("forced renewal: %v", err)
	}
	// (Whether the renewal validated again is Pebble's call: it reuses the
	// authorization validated a moment ago, as Let's Encrypt would.)
	if n := run.logs.countMessage("refused the replaces hint"); n != 0 {
		t.Error("the CA refused the ARI replaces hint")
	}
	stored, err := run.m.cfg.Storage.Load(ctx, certmagic.StorageKeys.SiteCert(iss.IssuerKey(), testDomain))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(stored)
	if block == nil {
		t.Fatal("stored certificate is not PEM")
	}
	if renewed, err := x509.ParseCertificate(block.Bytes); err != nil || renewed.Equal(run.leaf) {
		t.Errorf("storage still holds the old certificate (%v)", err)
	}
}

// The proof that the VA really validates: a front door that does not route
// challenges to the Manager gets no certificate.
func TestACMEPebbleFailsWithoutChallengeRouting(t *testing.T) {
	verifyNoLeaks(t)
	var queries atomic.Int32
	dnsAddr := pebbletest.StartDNS(t, testDomain, &queries)
	fd := listenFrontDoor(t)
	pebble := pebbletest.Start(t, port(fd.httpLn), port(fd.tlsLn), dnsAddr, newTestWriter(t))
	m, err := NewACME(ACMEOptions{
		Domains:          []string{testDomain},
		CA:               pebble.Directory,
		StorageDir:       t.TempDir(),
		TrustedRoots:     pebble.APIRoots,
		DisableTLSALPN01: true,
		Log:              testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	// The HTTP listener serves only the decoy: tokens are never answered.
	srv := &http.Server{Handler: http.NotFoundHandler(), ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(fd.httpLn) }()
	t.Cleanup(func() { _ = srv.Close(); <-done; _ = fd.tlsLn.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	err = m.Manage(ctx)
	if err == nil {
		t.Fatal("Manage succeeded although no challenge could be answered")
	}
	t.Logf("Manage error: %v", err)
	if !strings.HasPrefix(err.Error(), "acme: manage: ") || !strings.Contains(err.Error(), "404") {
		t.Errorf("error %q lacks context", err)
	}
	if _, ok := m.NotAfter(testDomain); ok {
		t.Error("NotAfter reports a certificate that was never obtained")
	}
}

func TestManageRespectsContextAndStop(t *testing.T) {
	verifyNoLeaks(t)
	// A CA that never answers: Manage must give up when told to.
	hang := make(chan struct{})
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	t.Cleanup(ca.Close)
	t.Cleanup(func() { close(hang) })
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())

	m, err := NewACME(ACMEOptions{Domains: []string{testDomain}, CA: ca.URL + "/dir", StorageDir: t.TempDir(), TrustedRoots: roots, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := m.Manage(ctx); err == nil {
		t.Fatal("Manage returned nil although the CA never answered")
	}

	errc := make(chan error, 1)
	go func() { errc <- m.Manage(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	m.Stop()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Manage interrupted by Stop returned nil")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not interrupt Manage")
	}
	if err := m.Manage(context.Background()); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Manage after Stop: %v, want a 'stopped' error", err)
	}
	m.Stop() // twice is fine
}

func newTestManager(t *testing.T, opts ACMEOptions) *Manager {
	t.Helper()
	if opts.Domains == nil {
		opts.Domains = []string{testDomain}
	}
	opts.CA = "https://127.0.0.1:1/dir" // never contacted
	opts.StorageDir = t.TempDir()
	opts.Log = slog.New(slog.DiscardHandler)
	m, err := NewACME(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

func TestHTTPChallengeHandler(t *testing.T) {
	m := newTestManager(t, ACMEOptions{})
	chal := acme.Challenge{
		Type:             acme.ChallengeTypeHTTP01,
		Identifier:       acme.Identifier{Type: "dns", Value: testDomain},
		Token:            "tok3n",
		KeyAuthorization: "tok3n.thumbprint",
	}
	solver := http01Solver{m.chal}
	if err := solver.Present(context.Background(), chal); err != nil {
		t.Fatal(err)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "decoy")
	})
	h := m.HTTPChallengeHandler(next)

	get := func(method, host, path string) (int, string) {
		r := httptest.NewRequest(method, "http://"+host+path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	if code, body := get("GET", testDomain+":80", "/.well-known/acme-challenge/tok3n"); code != 200 || body != "tok3n.thumbprint" {
		t.Errorf("pending token: %d %q, want 200 with the key authorization", code, body)
	}
	for _, c := range []struct{ method, host, path string }{
		{"GET", testDomain, "/"},                                  // ordinary page
		{"GET", testDomain, "/.well-known/acme-challenge/other"},  // unknown token
		{"GET", "evil.test", "/.well-known/acme-challenge/tok3n"}, // token for another host
		{"POST", testDomain, "/.well-known/acme-challenge/tok3n"}, // not a validation request
	} {
		if code, body := get(c.method, c.host, c.path); code != http.StatusTeapot || body != "decoy" {
			t.Errorf("%s %s%s: %d %q, want it passed to next", c.method, c.host, c.path, code, body)
		}
	}
	if err := solver.CleanUp(context.Background(), chal); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("GET", testDomain, "/.well-known/acme-challenge/tok3n"); code != http.StatusTeapot {
		t.Error("token still answered after CleanUp")
	}

	// With HTTP-01 off the wrapper is next itself.
	off := newTestManager(t, ACMEOptions{DisableHTTP01: true})
	if code, _ := func() (int, string) {
		w := httptest.NewRecorder()
		off.HTTPChallengeHandler(next).ServeHTTP(w, httptest.NewRequest("GET", "http://"+testDomain+"/.well-known/acme-challenge/tok3n", nil))
		return w.Code, ""
	}(); code != http.StatusTeapot {
		t.Error("HTTP-01 disabled, but the handler did not pass to next")
	}
}

func TestGetCertificateTLSALPNChallenge(t *testing.T) {
	m := newTestManager(t, ACMEOptions{})
	hello := &tls.ClientHelloInfo{ServerName: testDomain, SupportedProtos: []string{"acme-tls/1"}}
	if cert, err := m.GetCertificate(hello); err == nil || cert != nil {
		t.Fatalf("acme-tls/1 with no pending challenge: %v, %v; want an error and no certificate", cert, err)
	}

	chal := acme.Challenge{
		Type:             acme.ChallengeTypeTLSALPN01,
		Identifier:       acme.Identifier{Type: "dns", Value: testDomain},
		Token:            "tok3n",
		KeyAuthorization: "tok3n.thumbprint",
	}
	solver := tlsALPN01Solver{m.chal}
	if err := solver.Present(context.Background(), chal); err != nil {
		t.Fatal(err)
	}
	cert, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "PORTICO.test", SupportedProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(leaf.DNSNames, []string{testDomain}) {
		t.Errorf("challenge certificate names %v", leaf.DNSNames)
	}
	// RFC 8737 §3: id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical.
	found := false
	for _, ext := range leaf.Extensions {
		if ext.Id.String() == "1.3.6.1.5.5.7.1.31" && ext.Critical {
			found = true
		}
	}
	if !found {
		t.Error("challenge certificate lacks the critical acmeIdentifier extension")
	}
	if c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.test", SupportedProtos: []string{"acme-tls/1"}}); err == nil {
		t.Errorf("challenge certificate served for another name: %v", c)
	}
	if err := solver.CleanUp(context.Background(), chal); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetCertificate(hello); err == nil {
		t.Error("challenge certificate still served after CleanUp")
	}

	if got := newTestManager(t, ACMEOptions{DisableTLSALPN01: true}).NextProtos(); len(got) != 0 {
		t.Errorf("NextProtos() with TLS-ALPN-01 off = %v, want none", got)
	}
}

func TestNewACMERejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		opts ACMEOptions
	}{
		{"no domains", ACMEOptions{StorageDir: dir}},
		{"empty domain", ACMEOptions{Domains: []string{" "}, StorageDir: dir}},
		{"wildcard", ACMEOptions{Domains: []string{"*.portico.test"}, StorageDir: dir}},
		{"both challenges off", ACMEOptions{Domains: []string{testDomain}, StorageDir: dir, DisableHTTP01: true, DisableTLSALPN01: true}},
		{"plain http CA", ACMEOptions{Domains: []string{testDomain}, StorageDir: dir, CA: "http://ca.example/dir"}},
		{"port out of range", ACMEOptions{Domains: []string{testDomain}, StorageDir: dir, AltHTTPPort: 70000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewACME(tc.opts)
			if m != nil {
				m.Stop()
			}
			assertOneLineError(t, err, "acme: ")
		})
	}
}
