package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// tlsRelayMain is `portico-bench tlsrelay -listen ADDR -to ADDR [-client]`:
// the floor. It terminates TLS (a fresh self-signed ECDSA P-256
// certificate, crypto/tls defaults) and copies each connection to -to over
// plain TCP, both ways, passing half-closes on. Nothing else: no protocol,
// no routing. With -client it is the other half: plain TCP in, TLS out to
// -to (certificate not checked, a full handshake per connection): the
// floor row runs the two halves, which is a tunnel's process layout.
func tlsRelayMain(args []string) error {
	fs := flag.NewFlagSet("tlsrelay", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	to := fs.String("to", "", "address to forward to")
	client := fs.Bool("client", false, "accept plain TCP and dial TLS to -to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("-to is required")
	}
	var (
		ln   net.Listener
		dial func() (net.Conn, error)
		err  error
	)
	if *client {
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
		dial = func() (net.Conn, error) { return tls.Dial("tcp", *to, cfg) }
		ln, err = net.Listen("tcp", *listen)
	} else {
		dial = func() (net.Conn, error) { return net.Dial("tcp", *to) }
		var cert tls.Certificate
		if cert, _, _, err = selfSigned(); err != nil {
			return err
		}
		ln, err = tls.Listen("tcp", *listen, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	if err != nil {
		return err
	}
	fmt.Println("listening", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relayOne(c, dial)
	}
}

type closeWriter interface{ CloseWrite() error }

func relayOne(in net.Conn, dial func() (net.Conn, error)) {
	defer in.Close()
	if tc, ok := in.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return
		}
	}
	out, err := dial()
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(out, in)
		out.(closeWriter).CloseWrite()
		close(done)
	}()
	io.Copy(in, out)
	in.(closeWriter).CloseWrite()
	<-done
}

// selfSigned makes a self-signed ECDSA P-256 certificate for localhost and
// 127.0.0.1, as Portico's self-signed default does.
func selfSigned() (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return cert, certPEM, keyPEM, err
}

// writeSelfSigned writes a fresh self-signed certificate and key into dir,
// for v2ray.
func writeSelfSigned(dir string) (certFile, keyFile string, err error) {
	_, certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, keyPEM, 0o600)
}
