package rawtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "server.test"},
		DNSNames: []string{"server.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// server answers "hi" over TLS (or plain TCP with cert nil).
func server(t *testing.T, cert *tls.Certificate) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestDialVerification(t *testing.T) {
	cert := selfSigned(t)
	other := selfSigned(t)
	addr := server(t, &cert)
	tests := []struct {
		name     string
		pin      string
		insecure bool
		wantErr  error
		errText  string
	}{
		{name: "exact pin", pin: Pin(cert.Leaf)},
		{name: "pin in upper case", pin: strings.ToUpper(Pin(cert.Leaf))},
		{name: "other certificate's pin", pin: Pin(other.Leaf), wantErr: ErrPinMismatch},
		{name: "insecure", insecure: true},
		{name: "system roots refuse a self-signed certificate", errText: "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ClientConfig("server.test", tt.pin, tt.insecure, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := (&Dialer{Address: addr, TLS: cfg}).DialConn(context.Background())
			if tt.wantErr != nil || tt.errText != "" {
				if err == nil {
					c.Close()
					t.Fatal("dial succeeded")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if b, _ := io.ReadAll(c); string(b) != "hi" {
				t.Fatalf("read %q", b)
			}
		})
	}
	if _, err := ClientConfig("", "abc", false, nil); err == nil {
		t.Error("short pin accepted")
	}
}

func TestDialPlain(t *testing.T) {
	addr := server(t, nil)
	c, err := (&Dialer{Address: addr}).DialConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := io.ReadAll(c); string(b) != "hi" {
		t.Fatalf("read %q", b)
	}
}
