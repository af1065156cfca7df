// Package acme supplies the TLS certificates of Portico's front door.
//
// The gateway terminates TLS itself on one listener, so everything here is
// shaped as a tls.Config.GetCertificate callback (the Source interface).
// Three sources exist, from the simplest to the most automatic:
//
//   - SelfSigned: a long-lived self-signed certificate kept on disk. Clients
//     cannot verify it against a CA, so they pin it: share links carry its
//     SHA-256 (see Static.Pin and PinOf).
//   - Files: a certificate and key managed by someone else (certbot, a
//     secrets mounter), reloaded when the files change.
//   - NewACME: certificates obtained and renewed from an ACME CA such as
//     Let's Encrypt, through certmagic. The gateway keeps ownership of its
//     listeners: the ACME challenges are answered by Manager.GetCertificate
//     (TLS-ALPN-01) and Manager.HTTPChallengeHandler (HTTP-01), and nothing
//     in this package ever opens a socket to listen on.
package acme

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
)

// Source supplies the front door's certificates.
//
// GetCertificate is called by crypto/tls for every handshake, concurrently,
// so implementations must be safe for concurrent use and fast: they answer
// from memory and never block on the network.
type Source interface {
	// GetCertificate is used as tls.Config.GetCertificate.
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Compile-time proof that every source fits the gateway's slot.
var (
	_ Source = (*Static)(nil)
	_ Source = (*FileSource)(nil)
	_ Source = (*Manager)(nil)
)

// PinOf returns the pin of a DER-encoded certificate: the lowercase hex
// SHA-256 of exactly those bytes. It is the value share links carry as `pin`,
// and what a client compares against the leaf the server presents.
func PinOf(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
