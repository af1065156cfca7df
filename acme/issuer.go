package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// Why Portico has its own certmagic.Issuer instead of certmagic.ACMEIssuer:
// ACMEIssuer builds its HTTP-01 and TLS-ALPN-01 solvers internally, and those
// solvers try to bind the challenge port themselves (ListenHost:80/443 or the
// Alt ports), backing off only when they find the port already taken. No
// field turns that off. For a gateway that must own its single TLS listener
// that is a race at start-up and a stray listener whenever the port happens
// to be free. acmeIssuer keeps certmagic for what it is good at (storage,
// locking, caching, renewal, ARI scheduling) and does the ACME order itself
// with acmez, whose solvers are plain interfaces: ours only record what to
// answer, and the gateway's own listener answers it through the Manager.

// acmeIssuer obtains certificates from one ACME CA. It implements
// certmagic.Issuer and certmagic.RenewalInfoGetter. Safe for concurrent use.
type acmeIssuer struct {
	caURL   string
	email   string
	storage certmagic.Storage
	client  *acmez.Client
	log     *slog.Logger
	// current returns the certificates now cached for a name; it lets a
	// renewal tell the CA which certificate it replaces (ARI, RFC 9773).
	current func(name string) []certmagic.Certificate

	mu      sync.Mutex    // guards account
	account *acme.Account // registered account, once known
}

var (
	_ certmagic.Issuer            = (*acmeIssuer)(nil)
	_ certmagic.RenewalInfoGetter = (*acmeIssuer)(nil)
)

// IssuerKey follows certmagic's own convention (CA host plus path) so the
// storage layout under StorageDir looks like any certmagic user's.
func (i *acmeIssuer) IssuerKey() string {
	u, err := url.Parse(i.caURL)
	if err != nil || u.Host == "" {
		return certmagic.StorageKeys.Safe(i.caURL)
	}
	key := u.Host
	if p := strings.Trim(strings.ReplaceAll(u.Path, "/", "-"), "-"); p != "" {
		key += "-" + p
	}
	return key
}

// Issue implements certmagic.Issuer: it runs one ACME order for csr.
func (i *acmeIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	acct, err := i.getAccount(ctx)
	if err != nil {
		return nil, err
	}
	params, err := acmez.OrderParametersFromCSR(acct, csr)
	if err != nil {
		return nil, fmt.Errorf("order parameters: %w", err)
	}
	params.Replaces = i.replaces(csr)

	certs, err := i.client.ObtainCertificate(ctx, params)
	var prob acme.Problem
	if err != nil && errors.As(err, &prob) {
		switch {
		case prob.Type == acme.ProblemTypeAccountDoesNotExist:
			// The CA forgot us (a reset test CA, a deactivated account):
			// register again with the same key and retry once.
			i.log.Warn("acme: account no longer exists on the CA; registering again", "ca", i.caURL)
			i.forgetAccount()
			if acct, err = i.getAccount(ctx); err != nil {
				return nil, err
			}
			params.Account = acct
			certs, err = i.client.ObtainCertificate(ctx, params)
		case params.Replaces != nil && (prob.Type == acme.ProblemTypeAlreadyReplaced ||
			prob.Type == acme.ProblemTypeMalformed):
			// The CA refused the ARI "replaces" hint (another order used it,
			// or the old certificate came from elsewhere). The hint is an
			// optimisation; the certificate is not.
			i.log.Warn("acme: CA refused the replaces hint; ordering without it", "err", err)
			params.Replaces = nil
			certs, err = i.client.ObtainCertificate(ctx, params)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("order from %s: %w", i.caURL, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("order from %s: the CA returned no certificate chain", i.caURL)
	}
	// The CA lists its default chain first; that is what Let's Encrypt
	// recommends serving. Metadata is the acme.Certificate because that is
	// where certmagic expects to find (and later update) ARI data.
	return &certmagic.IssuedCertificate{Certificate: certs[0].ChainPEM, Metadata: certs[0]}, nil
}

// GetRenewalInfo implements certmagic.RenewalInfoGetter, so certmagic renews
// when the CA suggests (ARI) rather than only by the certificate's age.
func (i *acmeIssuer) GetRenewalInfo(ctx context.Context, cert certmagic.Certificate) (acme.RenewalInfo, error) {
	if cert.Leaf == nil {
		return acme.RenewalInfo{}, errors.New("renewal info: certificate has no parsed leaf")
	}
	return i.client.GetRenewalInfo(ctx, cert.Leaf)
}

// replaces returns the cached certificate that an order for csr's names
// renews, or nil for a first issuance.
func (i *acmeIssuer) replaces(csr *x509.CertificateRequest) *x509.Certificate {
	names := csrNames(csr)
	if len(names) == 0 || i.current == nil {
		return nil
	}
	var best *x509.Certificate
	for _, c := range i.current(names[0]) {
		if c.Leaf == nil || !sameNames(c.Names, names) {
			continue
		}
		if best == nil || c.Leaf.NotAfter.After(best.NotAfter) {
			best = c.Leaf
		}
	}
	return best
}

func csrNames(csr *x509.CertificateRequest) []string {
	names := slices.Clone(csr.DNSNames)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	for k := range a {
		a[k] = strings.ToLower(a[k])
	}
	for k := range b {
		b[k] = strings.ToLower(b[k])
	}
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// getAccount returns the registered account, registering it on first use.
// newAccount with a key the CA already knows returns the existing account
// (RFC 8555 §7.3.1), so one call per process both creates and finds it.
func (i *acmeIssuer) getAccount(ctx context.Context) (acme.Account, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.account != nil {
		return *i.account, nil
	}
	key, err := i.accountKey(ctx)
	if err != nil {
		return acme.Account{}, err
	}
	acct := acme.Account{TermsOfServiceAgreed: true, PrivateKey: key}
	if i.email != "" {
		acct.Contact = []string{"mailto:" + i.email}
	}
	acct, err = i.client.NewAccount(ctx, acct)
	if err != nil {
		return acme.Account{}, fmt.Errorf("register account with %s: %w", i.caURL, err)
	}
	i.account = &acct
	return acct, nil
}

func (i *acmeIssuer) forgetAccount() {
	i.mu.Lock()
	i.account = nil
	i.mu.Unlock()
}

// accountKey loads the account's private key from storage, creating and
// storing one the first time. The key is what identifies the account to the
// CA, so keeping it keeps the account across restarts.
func (i *acmeIssuer) accountKey(ctx context.Context) (crypto.Signer, error) {
	email := i.email
	if email == "" {
		email = "default"
	}
	key := path.Join("acme", i.IssuerKey(), "users", certmagic.StorageKeys.Safe(email), "portico-account.key")
	data, err := i.storage.Load(ctx, key)
	if err == nil {
		signer, err := certmagic.PEMDecodePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("account key %s: %w", key, err)
		}
		return signer, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load account key: %w", err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate account key: %w", err)
	}
	data, err = certmagic.PEMEncodePrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode account key: %w", err)
	}
	if err := i.storage.Store(ctx, key, data); err != nil {
		return nil, fmt.Errorf("store account key: %w", err)
	}
	return priv, nil
}

// challenges holds what the gateway must answer while an order is pending.
// acmez calls the solvers' Present before asking the CA to validate and
// CleanUp afterwards; the Manager's handlers read in between.
type challenges struct {
	mu   sync.RWMutex
	http map[string]httpChallenge    // by token
	tls  map[string]*tls.Certificate // by SNI name, lowercase
}

type httpChallenge struct {
	host    string // identifier the token belongs to
	keyAuth string
}

func newChallenges() *challenges {
	return &challenges{http: make(map[string]httpChallenge), tls: make(map[string]*tls.Certificate)}
}

func (c *challenges) httpKeyAuth(token, host string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ch, ok := c.http[token]
	if !ok || !strings.EqualFold(ch.host, host) {
		return "", false
	}
	return ch.keyAuth, true
}

func (c *challenges) tlsCert(serverName string) *tls.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tls[strings.ToLower(serverName)]
}

// http01Solver records HTTP-01 key authorizations for
// Manager.HTTPChallengeHandler. It implements acmez.Solver.
type http01Solver struct{ c *challenges }

func (s http01Solver) Present(_ context.Context, chal acme.Challenge) error {
	s.c.mu.Lock()
	s.c.http[chal.Token] = httpChallenge{host: chal.Identifier.Value, keyAuth: chal.KeyAuthorization}
	s.c.mu.Unlock()
	return nil
}

func (s http01Solver) CleanUp(_ context.Context, chal acme.Challenge) error {
	s.c.mu.Lock()
	delete(s.c.http, chal.Token)
	s.c.mu.Unlock()
	return nil
}

// tlsALPN01Solver records TLS-ALPN-01 challenge certificates for
// Manager.GetCertificate. It implements acmez.Solver.
type tlsALPN01Solver struct{ c *challenges }

func (s tlsALPN01Solver) Present(_ context.Context, chal acme.Challenge) error {
	cert, err := acmez.TLSALPN01ChallengeCert(chal)
	if err != nil {
		return fmt.Errorf("tls-alpn-01 certificate: %w", err)
	}
	name, err := tlsALPNName(chal)
	if err != nil {
		return err
	}
	s.c.mu.Lock()
	s.c.tls[name] = cert
	s.c.mu.Unlock()
	return nil
}

func (s tlsALPN01Solver) CleanUp(_ context.Context, chal acme.Challenge) error {
	name, err := tlsALPNName(chal)
	if err != nil {
		return err
	}
	s.c.mu.Lock()
	delete(s.c.tls, name)
	s.c.mu.Unlock()
	return nil
}

// tlsALPNName is the SNI the CA sends when validating chal: the domain
// itself, or for an IP identifier its reverse-DNS name (RFC 8738 §6).
func tlsALPNName(chal acme.Challenge) (string, error) {
	if chal.Identifier.Type != "ip" {
		return strings.ToLower(chal.Identifier.Value), nil
	}
	if net.ParseIP(chal.Identifier.Value) == nil {
		return "", fmt.Errorf("tls-alpn-01: bad IP identifier %q", chal.Identifier.Value)
	}
	rev, err := dns.ReverseAddr(chal.Identifier.Value)
	if err != nil {
		return "", fmt.Errorf("tls-alpn-01: %w", err)
	}
	return strings.TrimSuffix(rev, "."), nil
}
