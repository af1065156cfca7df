package vmesstest

import "github.com/portico-gw/portico/internal/nettest"

// FakeConn is the scripted conn of internal/nettest, under the name this
// package's tests use.
type FakeConn = nettest.FakeConn

// NewFake returns a FakeConn that reads segs, then EOF.
var NewFake = nettest.NewFake
