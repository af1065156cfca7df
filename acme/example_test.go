package acme_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/portico-gw/portico/acme"
)

// A gateway without a domain name runs on a self-signed certificate; clients
// trust it through the pin that share links carry.
func ExampleSelfSigned() {
	dir, err := os.MkdirTemp("", "portico-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	src, err := acme.SelfSigned(filepath.Join(dir, "tls"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	// The front door's TLS configuration takes the Source as is.
	_ = &tls.Config{GetCertificate: src.GetCertificate}

	fmt.Println("names:", src.Leaf().DNSNames, src.Leaf().IPAddresses)
	fmt.Println("pin is", len(src.Pin()), "hex digits")
	fmt.Println("pin matches leaf:", src.Pin() == acme.PinOf(src.Leaf().Raw))

	// Started again, it finds the same certificate, so links keep working.
	again, err := acme.SelfSigned(filepath.Join(dir, "tls"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("same pin after restart:", again.Pin() == src.Pin())
	// Output:
	// names: [localhost] [127.0.0.1 ::1]
	// pin is 64 hex digits
	// pin matches leaf: true
	// same pin after restart: true
}
