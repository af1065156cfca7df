// Package rawtls is the simplest transport: a TLS connection to the front
// door, with the protocol's bytes straight inside. Its Dialer verifies the
// server by the usual chain, by an exact certificate pin, or (when told to)
// not at all.
package rawtls

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/portico-gw/portico/internal/tlsbatch"
)

// Dialer opens TLS (or, with TLS nil, plain TCP) connections to Address. It
// implements tunnel.ConnDialer.
type Dialer struct {
	Address string      // host:port of the server
	TLS     *tls.Config // nil = plain TCP
	Timeout time.Duration
}

// ErrPinMismatch is returned when the server's certificate is not the pinned one.
var ErrPinMismatch = errors.New("rawtls: server certificate does not match the pin")

// DialConn implements tunnel.ConnDialer.
func (d *Dialer) DialConn(ctx context.Context) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.Timeout, KeepAlive: 30 * time.Second}
	if nd.Timeout == 0 {
		nd.Timeout = 10 * time.Second
	}
	if d.TLS == nil {
		c, err := nd.DialContext(ctx, "tcp", d.Address)
		if err != nil {
			return nil, fmt.Errorf("rawtls: %w", err)
		}
		return c, nil
	}
	c, err := tlsbatch.Dial(ctx, &nd, d.Address, d.TLS)
	if err != nil {
		return nil, fmt.Errorf("rawtls: %w", err)
	}
	return c, nil
}

// ClientConfig builds the client TLS config: with pin set (hex SHA-256 of the
// leaf certificate's DER), exactly that certificate is accepted and names and
// chains are not checked; with insecure, anything is accepted; otherwise the
// system roots verify serverName.
func ClientConfig(serverName, pin string, insecure bool, alpn []string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, NextProtos: alpn, MinVersion: tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	switch {
	case pin != "":
		want, err := hex.DecodeString(strings.ToLower(pin))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("rawtls: pin %q is not 64 hex digits", pin)
		}
		cfg.InsecureSkipVerify = true // replaced by the exact pin check below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrPinMismatch
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("%w (got %x)", ErrPinMismatch, got)
			}
			return nil
		}
	case insecure:
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// Pin returns the pin of a certificate: hex SHA-256 of its DER bytes.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}
