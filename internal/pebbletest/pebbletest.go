// Package pebbletest runs a real ACME CA (Let's Encrypt's Pebble) and a tiny
// DNS server inside a test process, so that certificate issuance is tested
// end to end with real validation: Pebble's VA resolves the test domain
// through the DNS server and fetches HTTP-01 tokens or makes TLS-ALPN-01
// handshakes against the ports the test names.
package pebbletest

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// CA is a Pebble ACME server running in this process.
type CA struct {
	Directory string         // ACME directory URL
	APIRoots  *x509.CertPool // trusts the directory's own HTTPS certificate
	APIRoot   []byte         // the same certificate, PEM
	Roots     *x509.CertPool // trusts certificates Pebble issues
}

// Start wires Pebble's pieces the way its cmd/pebble/main.go does, with the
// WFE on an httptest TLS server. Its VA validates for real: HTTP-01 against
// 127.0.0.1:httpPort, TLS-ALPN-01 against 127.0.0.1:tlsPort, names resolved
// through the DNS server at dnsAddr. logw receives Pebble's log.
func Start(t testing.TB, httpPort, tlsPort int, dnsAddr string, logw io.Writer) CA {
	t.Helper()
	// No random 0-15 s sleep before each validation; validation still runs.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")

	logger := log.New(logw, "pebble ", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "The default profile"},
	})
	validator := va.New(logger, httpPort, tlsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, nil, false, false, 0, 0)

	srv := httptest.NewUnstartedServer(front.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS noise from closed test clients
	srv.StartTLS()
	t.Cleanup(srv.Close)

	apiRoots := x509.NewCertPool()
	apiRoots.AddCert(srv.Certificate())
	roots := x509.NewCertPool()
	roots.AddCert(authority.GetRootCert(0).Cert)
	return CA{
		Directory: srv.URL + wfe.DirectoryPath,
		APIRoots:  apiRoots,
		APIRoot:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
		Roots:     roots,
	}
}

// StartDNS serves A 127.0.0.1 for domain over TCP (what Pebble's VA uses
// with a custom resolver) and an empty answer for anything else. queries,
// when not nil, counts the questions asked, to prove the VA really resolved
// through it.
func StartDNS(t testing.TB, domain string, queries *atomic.Int32) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if queries != nil {
				queries.Add(1)
			}
			if q.Qtype == dns.TypeA && strings.EqualFold(q.Name, dns.Fqdn(domain)) {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &dns.Server{Listener: ln, Handler: handler, NotifyStartedFunc: func() { close(started) }}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-served
	})
	return ln.Addr().String()
}
