package vmesstest

import "github.com/portico-gw/portico/internal/prototest"

// The helpers every protocol's tests share live in internal/prototest;
// these names keep this package's tests reading as before.
var (
	Echo         = prototest.Echo
	CloseWrite   = prototest.CloseWrite
	RelayPackets = prototest.RelayPackets
	UDPEcho      = prototest.UDPEcho
	PacketEcho   = prototest.PacketEcho
	FreePort     = prototest.FreePort
	AddrPort     = prototest.AddrPort
	HostPort     = prototest.HostPort
)

// Dialer dials Addr over TCP, with TLS when TLS is set.
type Dialer = prototest.Dialer

type lockedBuffer = prototest.LockedBuffer

// The v2ray runner is shared too.
type V2Ray = prototest.V2Ray

var (
	StartV2Ray = prototest.StartV2Ray
	V2RayPath  = prototest.V2RayPath
)

// Cert is a self-signed certificate for tests (internal/prototest).
type Cert = prototest.Cert

// SelfSigned makes a fresh self-signed certificate for "localhost".
var SelfSigned = prototest.SelfSigned
