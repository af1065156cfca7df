package socks_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/socks"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// greeter stands in for the gateway's router: instead of dialing through
// the tunnel it reports a successful dial and greets the client.
type greeter struct{}

func (greeter) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	defer conn.Close()
	conn.(tunnel.DialReporter).ReportDial(nil) // writes the SOCKS success reply
	_, err := fmt.Fprintf(conn, "hello %s, this is %v via %s", req.User, req.Target, req.Transport)
	return err
}

func (greeter) HandlePacket(context.Context, tunnel.PacketConn, tunnel.Request) error {
	return errors.New("no UDP")
}

func ExampleServer() {
	srv := &socks.Server{Users: map[string]string{"alice": "secret"}, Inbound: "local-socks"}

	// In the client this is a connection accepted on 127.0.0.1:1080.
	client, server := net.Pipe()
	go srv.ServeConn(context.Background(), server, greeter{})

	// The client side, as an application would speak it.
	dst := protocols.Addr{Domain: "example.com", Port: 443}
	if err := socks.Dial(context.Background(), client, dst, "alice", "secret"); err != nil {
		fmt.Println("dial:", err)
		return
	}
	b, _ := io.ReadAll(client)
	fmt.Println(string(b))
	// Output: hello alice, this is example.com:443 via socks
}
