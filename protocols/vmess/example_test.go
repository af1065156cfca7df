package vmess_test

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess"
)

// A client seals a VMessAEAD request and its first chunk into one buffer;
// a server that knows the user finds it by the AuthID, opens the header
// and decodes the chunk. Time and randomness are parameters.
func Example() {
	id := uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811")
	key := vmess.NewUserKey(id)
	sec, opts := vmess.ClientOptions(vmess.SecurityAES128GCM, false)
	req := vmess.Request{
		Key: [16]byte{1}, IV: [16]byte{2}, ResponseAuth: 0x42,
		Security: sec, Options: opts, Command: vmess.CommandTCP,
		Target: protocols.DomainAddr("example.com", 443),
	}
	seed := vmess.AEADSeed{Time: 1700000000, AuthRand: [4]byte{1, 2, 3, 4}, Nonce: [8]byte{5}}
	wire, err := vmess.AppendAEADRequest(nil, key, seed, &req)
	if err != nil {
		panic(err)
	}
	client := req.Session(false)
	sealer, _ := client.RequestSealer(nil)
	wire = sealer.Seal(wire, []byte("GET / HTTP/1.1\r\n"))

	// The server.
	i, ts, ok := vmess.FindAuthID([]*vmess.UserKey{key}, wire)
	fmt.Println("user", i, ok, vmess.CheckTime(ts, 1700000030))
	got, n, err := vmess.OpenAEADRequest(key, wire)
	if err != nil {
		panic(err)
	}
	fmt.Println(got.Target, got.Security, n)
	server := got.Session(false)
	opener, _ := server.RequestOpener()
	payload, _, err := opener.Open(wire[n:])
	fmt.Printf("%q %v\n", payload, err)
	// Output:
	// user 0 true <nil>
	// example.com:443 aes-128-gcm 115
	// "GET / HTTP/1.1\r\n" <nil>
}
