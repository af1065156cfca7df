package vmessserver

import (
	"net"

	"github.com/portico-gw/portico/internal/bufpool"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmessconn"
)

// conn is the tunnel stream handed to the Handler: Read decodes the
// request body (starting with the chunks that came with the header), Write
// encodes the response body, the response header going out with the first
// Write in the same carrier write, and CloseWrite sends the end-of-stream
// chunk (and, for security zero, which has none, half-closes the carrier).
// Close closes the carrier without an end chunk, which the client reads as
// a broken tunnel; it never waits for a Write in progress.
type conn struct {
	net.Conn
	r          *vmessconn.Reader
	w          *vmessconn.Writer
	maxPayload int // the most payload one response chunk carries
}

// newConn makes the tunnel stream; bp is a pooled buffer holding
// (*bp)[used:n], body bytes read with the header, which the stream's reader
// takes over (it is given back on an error).
func newConn(carrier net.Conn, sess *vmess.Session, bp *[]byte, used, n int) (*conn, error) {
	opener, err := sess.RequestOpener()
	if err != nil {
		bufpool.Put(bp)
		return nil, err
	}
	header, sealer, err := sess.AppendResponse(nil, &vmess.Response{Auth: sess.ResponseAuth}, newPadSource())
	if err != nil {
		bufpool.Put(bp)
		return nil, err
	}
	return &conn{
		Conn: carrier,
		r:    vmessconn.NewReader(carrier, "request body", bp, used, n, opener),
		w:    vmessconn.NewWriter(carrier, "response body", sealer, header),

		maxPayload: sealer.MaxPayload(),
	}, nil
}

func (c *conn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *conn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite ends the response: the header if no Write sent it, then the
// end-of-stream chunk.
func (c *conn) CloseWrite() error { return vmessconn.CloseWrite(c.w, c.Conn) }
