package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
)

// FuzzServeConn feeds arbitrary bytes to a Server whose handler is an
// in-memory origin: whatever the client sends, ServeConn must not panic and
// must return once the client is done. Seeds live in testdata/fuzz.
func FuzzServeConn(f *testing.F) {
	f.Add([]byte("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Add([]byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nhello"))
	f.Add([]byte("POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := &Server{}
		if len(in)%2 == 1 { // half the inputs meet a server with users
			srv.Users = map[string]string{"alice": "secret"}
		}
		client, server := halfPipe()
		defer client.Close()
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), server, memOrigin{}) }()
		go func() {
			_, _ = client.Write(in)
			_ = client.CloseWrite()
		}()
		go io.Copy(io.Discard, client)
		select {
		case err := <-done:
			if errors.Is(err, protocols.ErrNotProtocol) {
				server.Close()
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ServeConn still running on %q", in)
		}
	})
}

// FuzzLooksLikeRequestLine checks the request-line sniffer never panics and
// accepts whatever http.ReadRequest parses.
func FuzzLooksLikeRequestLine(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte("\x16\x03\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ok := looksLikeRequestLine(b)
		if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b))); err == nil && !ok {
			t.Fatalf("ReadRequest parsed %q (%s %s) but the sniffer refused it", b, req.Method, req.RequestURI)
		}
	})
}
