package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Names of the files SelfSigned keeps in its directory.
const (
	selfSignedCertFile = "cert.pem"
	selfSignedKeyFile  = "key.pem"
)

// selfSignedValidity is long on purpose: clients trust the certificate by pin,
// not by a CA, so every regeneration breaks the share links already handed
// out. Ten years means "until the operator decides otherwise".
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// defaultSelfSignedHosts are used when SelfSigned is given no hosts: enough
// for a gateway reached on the same machine, by name or by either loopback.
var defaultSelfSignedHosts = []string{"localhost", "127.0.0.1", "::1"}

// Static serves one certificate for every handshake. It is what SelfSigned
// returns; it never changes after construction, so it is safe for concurrent
// use without locking.
type Static struct {
	cert *tls.Certificate // Leaf always set
	pin  string
}

// GetCertificate returns the certificate whatever the ClientHello says: a
// pinned certificate is the same for every name the gateway answers to.
func (s *Static) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert, nil
}

// Leaf returns the parsed certificate. Callers must not modify it.
func (s *Static) Leaf() *x509.Certificate { return s.cert.Leaf }

// Pin is the lowercase hex SHA-256 of the leaf certificate's DER bytes (what
// share links carry as `pin`). See PinOf.
func (s *Static) Pin() string { return s.pin }

// SelfSigned loads, or creates once and keeps, an ECDSA P-256 self-signed
// certificate in dir: files cert.pem and key.pem, the key written 0600, dir
// created 0700 if missing.
//
// hosts are DNS names and/or IP literals (brackets allowed for IPv6) for the
// certificate's SANs; when empty they default to "localhost", 127.0.0.1 and
// ::1. The certificate is valid for 10 years.
//
// The certificate is kept, and so is its pin, as long as it covers every one
// of hosts and has not expired; otherwise a new one is generated for hosts,
// replacing the files. Shrinking hosts therefore keeps the old certificate:
// a wider certificate does no harm, a new pin does.
//
// Errors are single lines prefixed "acme: self-signed:" and wrap the
// underlying error: a directory that cannot be created or written, files that
// cannot be read, or files that are corrupt or do not match each other. A
// corrupt pair is reported, never silently replaced, because replacing it
// would change the pin behind the operator's back.
func SelfSigned(dir string, hosts []string) (*Static, error) {
	if dir == "" {
		return nil, errors.New("acme: self-signed: no directory given")
	}
	if len(hosts) == 0 {
		hosts = defaultSelfSignedHosts
	}
	hosts, err := normalizeHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: self-signed: create directory: %w", err)
	}
	certPath := filepath.Join(dir, selfSignedCertFile)
	keyPath := filepath.Join(dir, selfSignedKeyFile)

	existing, err := loadSelfSigned(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	if existing != nil && covers(existing.Leaf(), hosts) && time.Now().Before(existing.Leaf().NotAfter) {
		return existing, nil
	}
	return createSelfSigned(certPath, keyPath, hosts)
}

// normalizeHosts trims, lowercases and de-duplicates hosts, and strips the
// brackets from IPv6 literals, so the SAN check compares like with like.
func normalizeHosts(hosts []string) ([]string, error) {
	out := make([]string, 0, len(hosts))
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if h == "" {
			return nil, errors.New("empty host name")
		}
		if strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			return nil, fmt.Errorf("invalid host %q", h)
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out, nil
}

// covers reports whether leaf is valid for every host: listed literally (so
// a wildcard host is covered by the same wildcard SAN), or matched by the
// rules a verifying client uses.
func covers(leaf *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if !slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return strings.EqualFold(n, h) }) &&
			leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// loadSelfSigned returns (nil, nil) when neither file exists, meaning "create
// one". One file without the other is an error rather than a reason to
// regenerate: it usually means a botched copy, and a silent new pin would
// lock out every client.
func loadSelfSigned(certPath, keyPath string) (*Static, error) {
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	certMissing := errors.Is(certErr, fs.ErrNotExist)
	keyMissing := errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		return nil, nil
	case certErr != nil && !certMissing:
		return nil, fmt.Errorf("acme: self-signed: read certificate: %w", certErr)
	case keyErr != nil && !keyMissing:
		return nil, fmt.Errorf("acme: self-signed: read key: %w", keyErr)
	case certMissing:
		return nil, fmt.Errorf("acme: self-signed: %s exists but %s is missing; remove both to generate a new certificate", keyPath, certPath)
	case keyMissing:
		return nil, fmt.Errorf("acme: self-signed: %s exists but %s is missing; remove both to generate a new certificate", certPath, keyPath)
	}
	cert, err := parsePair(certPath, keyPath, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: %w", err)
	}
	return &Static{cert: cert, pin: PinOf(cert.Leaf.Raw)}, nil
}

// parsePair turns PEM bytes into a tls.Certificate with Leaf set, naming the
// file at fault in its error.
func parsePair(certPath, keyPath string, certPEM, keyPEM []byte) (*tls.Certificate, error) {
	var certDER []byte
	for rest := certPEM; certDER == nil; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			certDER = b.Bytes
		}
	}
	if certDER == nil {
		return nil, fmt.Errorf("%s: no PEM certificate found", certPath)
	}
	if _, err := x509.ParseCertificate(certDER); err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if b, _ := pem.Decode(keyPEM); b == nil {
		return nil, fmt.Errorf("%s: no PEM private key found", keyPath)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key %s with certificate %s: %w", keyPath, certPath, err)
	}
	if pair.Leaf == nil { // set by crypto/tls since Go 1.23; parse for safety
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
	}
	return &pair, nil
}

// createSelfSigned generates a key and certificate for hosts and writes both
// files, each replaced atomically so a crash never leaves half a file.
func createSelfSigned(certPath, keyPath string, hosts []string) (*Static, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: generate key: %w", err)
	}
	// RFC 5280 §4.1.2.2: a positive serial of at most 20 octets; 128 random
	// bits keeps regenerated certificates distinct.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		// Backdated an hour so a client whose clock is a little behind
		// does not see a certificate "from the future".
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	// Key first: if the cert write then fails, the next start finds a pair
	// that does not match and says so, instead of serving a cert whose key
	// is gone.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("acme: self-signed: write key: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("acme: self-signed: write certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed: parse new certificate: %w", err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return &Static{cert: cert, pin: PinOf(der)}, nil
}

// writeFileAtomic writes data to a temporary file beside path with mode perm
// and renames it over path. The temporary file gets perm before any byte of
// data is written, so a key is never readable by others, even briefly.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
