package httpproxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/portico-gw/portico/protocols/httpproxy"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// origin stands in for the gateway's router and the web server behind it:
// it reports a successful dial, reads the forwarded request and answers it.
type origin struct{}

func (origin) HandleStream(ctx context.Context, conn net.Conn, req tunnel.Request) error {
	defer conn.Close()
	conn.(tunnel.DialReporter).ReportDial(nil)
	r, err := http.ReadRequest(bufio.NewReader(conn))
	if err != nil {
		return err
	}
	fmt.Printf("tunnel to %v (%s) carries %s %s, Host %s\n", req.Target, req.Transport, r.Method, r.RequestURI, r.Host)
	_, err = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
	return err
}

func (origin) HandlePacket(context.Context, tunnel.PacketConn, tunnel.Request) error {
	return errors.New("no UDP")
}

func ExampleServer() {
	srv := &httpproxy.Server{Inbound: "local-http"}

	// In the client this is a connection accepted on 127.0.0.1:1080.
	client, server := net.Pipe()
	go srv.ServeConn(context.Background(), server, origin{})

	// What a browser sends to its HTTP proxy for a plain http:// page.
	go io.WriteString(client, "GET http://example.com/hello HTTP/1.1\r\nHost: example.com\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s: %s", resp.Status, body)
	client.Close()
	// Output:
	// tunnel to example.com:80 (http) carries GET /hello, Host example.com
	// 200 OK: hello
}
