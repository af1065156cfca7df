package vlesstest

import (
	"testing"

	"github.com/portico-gw/portico/internal/prototest"
)

// The helpers every protocol's tests share live in internal/prototest;
// these names keep this package's tests reading as before.
var (
	Echo         = prototest.Echo
	Exchange     = prototest.Exchange
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

// The v2ray runner is shared too.
type V2Ray = prototest.V2Ray

// V2RayPath finds v2ray, skipping (or failing under PORTICO_REQUIRE_PEERS=1)
// when it is missing.
var V2RayPath = prototest.V2RayPath

// StartV2Ray runs v2ray with config and waits for the addresses in waitFor.
func StartV2Ray(t testing.TB, config any, waitFor ...string) *V2Ray {
	t.Helper()
	return prototest.StartV2Ray(t, config, nil, waitFor...)
}

// Cert is a self-signed certificate for tests (internal/prototest).
type Cert = prototest.Cert

// SelfSigned makes a fresh self-signed certificate for "localhost".
var SelfSigned = prototest.SelfSigned
