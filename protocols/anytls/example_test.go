package anytls_test

import (
	"fmt"
	"math/rand/v2"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
)

// A client's first session write ("packet 1"): settings, SYN and the first
// PSH with the target address, shaped by the default scheme's 1=100-400.
func ExampleScheme_Plan() {
	var pkt []byte
	settings, _ := anytls.AppendSettings(nil, anytls.ClientSettings("portico", anytls.DefaultSchemeMD5))
	pkt, _ = anytls.AppendFrame(pkt, anytls.Frame{Cmd: anytls.CmdSettings, Data: settings})
	pkt, _ = anytls.AppendFrame(pkt, anytls.Frame{Cmd: anytls.CmdSYN, Stream: 1})
	target, _ := protocols.SOCKSAddr.Append(nil, protocols.DomainAddr("example.com", 443))
	pkt, _ = anytls.AppendFrame(pkt, anytls.Frame{Cmd: anytls.CmdPSH, Stream: 1, Data: target})

	r := rand.New(rand.NewPCG(1, 2)) // any source; a client uses crypto/rand
	for _, rec := range anytls.DefaultScheme().Plan(nil, 1, len(pkt), r) {
		fmt.Printf("record of %d bytes: %d of payload, waste %d\n", rec.Len(), rec.Payload, rec.Waste)
	}
	// Packet 3 ("9-9,500-1000"), a 9-byte write: then pure padding.
	for _, rec := range anytls.DefaultScheme().Plan(nil, 3, 9, r) {
		fmt.Printf("record of %d bytes: %d of payload, waste %d\n", rec.Len(), rec.Payload, rec.Waste)
	}
	// Output:
	// record of 330 bytes: 99 of payload, waste 224
	// record of 9 bytes: 9 of payload, waste -1
	// record of 815 bytes: 0 of payload, waste 808
}

func ExampleParseFrame() {
	wire := []byte{
		0x02,                   // cmdPSH
		0x00, 0x00, 0x00, 0x01, // stream 1
		0x00, 0x02, // 2 bytes of data
		'h', 'i',
		0x03, 0x00, 0x00, 0x00, // cmdFIN, cut short
	}
	for len(wire) > 0 {
		f, n, err := anytls.ParseFrame(wire)
		if err == protocols.ErrNeedMore {
			fmt.Printf("%d bytes: need more\n", len(wire))
			break
		}
		fmt.Printf("%v stream %d %q\n", f.Cmd, f.Stream, f.Data)
		wire = wire[n:]
	}
	// Output:
	// cmdPSH stream 1 "hi"
	// 4 bytes: need more
}
