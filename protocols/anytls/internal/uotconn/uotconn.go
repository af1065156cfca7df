// Package uotconn carries sing-box udp-over-tcp v2 datagrams on an AnyTLS
// stream (the layouts are in the codec, protocols/anytls/uot.go): it turns
// the stream into a tunnel.PacketConn for either side.
package uotconn

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/tunnel"
)

// maxPacket bounds one encoded packet: a 65535-byte payload, its length and
// the longest address.
const maxPacket = 2 + 0xffff + 1 + 1 + protocols.MaxDomainLen + 2

// Conn is a udp-over-tcp stream. In connect mode every packet goes to, and
// comes from, Target, and carries no address; otherwise each packet names
// its address (destination from the client, source from the server).
type Conn struct {
	stream  net.Conn
	connect bool
	target  protocols.Addr
	client  bool

	rmu  sync.Mutex
	rbuf []byte
	rlen int

	wmu  sync.Mutex
	wbuf []byte
}

// Server wraps the stream of an accepted request, after its UoTRequest.
// pending holds bytes already read past the request.
func Server(stream net.Conn, req anytls.UoTRequest, pending []byte) *Conn {
	c := &Conn{stream: stream, connect: req.Connect, target: req.Target, rbuf: make([]byte, maxPacket)}
	c.rlen = copy(c.rbuf, pending)
	return c
}

// Client wraps a stream on which the client has sent a request for target,
// in connect mode or not.
func Client(stream net.Conn, target protocols.Addr, connect bool) *Conn {
	return &Conn{stream: stream, connect: connect, target: target, client: true, rbuf: make([]byte, maxPacket)}
}

// ReadRequest reads the UoTRequest at the start of a server-side stream and
// returns it with any bytes read past it.
func ReadRequest(stream net.Conn) (anytls.UoTRequest, []byte, error) {
	buf := make([]byte, 0, 300)
	for {
		req, n, err := anytls.ParseUoTRequest(buf)
		if err == nil {
			return req, buf[n:], nil
		}
		if !errors.Is(err, protocols.ErrNeedMore) || len(buf) == cap(buf) {
			return req, nil, fmt.Errorf("anytls: udp-over-tcp request: %w", err)
		}
		m, rerr := stream.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if rerr != nil && m == 0 {
			return req, nil, fmt.Errorf("anytls: udp-over-tcp request: %w", rerr)
		}
	}
}

// ReadPacket implements tunnel.PacketConn.
func (c *Conn) ReadPacket(b []byte) (int, protocols.Addr, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		p, n, err := anytls.ParseUoTPacket(c.rbuf[:c.rlen], c.connect)
		if err == nil {
			from := c.target
			if !c.connect {
				from = p.Addr
			}
			k := copy(b, p.Payload) // a longer datagram is cut, as a UDP socket does
			c.rlen = copy(c.rbuf, c.rbuf[n:c.rlen])
			return k, from, nil
		}
		if !errors.Is(err, protocols.ErrNeedMore) {
			return 0, protocols.Addr{}, fmt.Errorf("anytls: udp-over-tcp: %w", err)
		}
		m, rerr := c.stream.Read(c.rbuf[c.rlen:])
		c.rlen += m
		if rerr != nil && m == 0 {
			if rerr == io.EOF && c.rlen > 0 {
				rerr = io.ErrUnexpectedEOF
			}
			return 0, protocols.Addr{}, rerr
		}
	}
}

// WritePacket implements tunnel.PacketConn. A client in connect mode sends
// only to its target.
func (c *Conn) WritePacket(b []byte, addr protocols.Addr) error {
	if c.client && c.connect && addr != c.target {
		return fmt.Errorf("anytls: udp-over-tcp to %v carries packets for %v only: %w", c.target, addr, tunnel.ErrOtherDestination)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	c.wbuf, err = anytls.AppendUoTPacket(c.wbuf[:0], c.connect, anytls.UoTPacket{Addr: addr, Payload: b})
	if err != nil {
		return err
	}
	_, err = c.stream.Write(c.wbuf)
	return err
}

// Close closes the stream.
func (c *Conn) Close() error { return c.stream.Close() }

// MultiSource implements tunnel.MultiSource: in per-packet-address mode
// every datagram carries its source; in connect mode none does.
func (c *Conn) MultiSource() bool { return !c.connect }
