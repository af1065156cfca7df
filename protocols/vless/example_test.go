package vless_test

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
)

func ExampleAppendRequest() {
	req := vless.RequestHeader{
		ID:      uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811"),
		Command: vless.CommandTCP,
		Target:  protocols.DomainAddr("example.com", 443),
	}
	// Append the header and the first payload into one buffer: one write.
	b, err := vless.AppendRequest(make([]byte, 0, 64), &req)
	if err != nil {
		panic(err)
	}
	b = append(b, "hello"...)
	fmt.Printf("% x\n", b)
	// Output:
	// 00 b8 31 38 1d 63 24 4d 53 ad 4f 8c da 48 b3 08 11 00 01 01 bb 02 0b 65 78 61 6d 70 6c 65 2e 63 6f 6d 68 65 6c 6c 6f
}

func ExampleParseRequest() {
	wire := []byte{
		0x00,                                                                                           // version
		0xb8, 0x31, 0x38, 0x1d, 0x63, 0x24, 0x4d, 0x53, 0xad, 0x4f, 0x8c, 0xda, 0x48, 0xb3, 0x08, 0x11, // UUID
		0x00,       // no addons
		0x01,       // TCP
		0x01, 0xbb, // port 443
		0x01, 1, 2, 3, 4, // IPv4 1.2.3.4
		'h', 'i', // payload
	}
	// A server reads until the parser stops asking for more.
	if _, _, err := vless.ParseRequest(wire[:10]); err == protocols.ErrNeedMore {
		fmt.Println("10 bytes: need more")
	}
	req, n, err := vless.ParseRequest(wire)
	if err != nil {
		panic(err)
	}
	fmt.Println(uuid.UUID(req.ID), req.Command, req.Target)
	fmt.Printf("payload %q\n", wire[n:])
	// Output:
	// 10 bytes: need more
	// b831381d-6324-4d53-ad4f-8cda48b30811 tcp 1.2.3.4:443
	// payload "hi"
}
