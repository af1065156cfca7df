package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
)

func TestDirect(t *testing.T) {
	echo := protocols.AddrFromAddrPort(nettest.Echo(t).AddrPort())
	// Bind to a loopback address other than the default one: the target
	// sees the connection come from there.
	d := &Direct{Bind: netip.MustParseAddr("127.0.0.2")}
	c, err := d.DialStream(context.Background(), echo)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Errorf("dialled from %s, want 127.0.0.2", got)
	}
	c.Close()

	// A name resolves (localhost), and a refused port is an error naming it.
	c, err = (&Direct{}).DialStream(context.Background(), protocols.DomainAddr("localhost", echo.Port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := protocols.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	ln.Close()
	if _, err := (&Direct{}).DialStream(context.Background(), closed); err == nil {
		t.Error("dial to a closed port succeeded")
	}
}

func TestBlock(t *testing.T) {
	_, err := Block{}.DialStream(context.Background(), protocols.DomainAddr("a.test", 1))
	if !errors.Is(err, protocols.ErrBlocked) {
		t.Fatalf("err = %v", err)
	}
}
