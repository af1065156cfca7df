package vlessclient

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless"
	"github.com/portico-gw/portico/protocols/vless/internal/v1io"
)

// UDP over VLESS version 1 (docs/protocols/vless-v1.md section 9). An
// association is what DialPacket returns: with UDPClassic one tunnel whose
// frames all carry an address; otherwise (udp_multi) one tunnel per remote,
// opened on the first datagram to it, all carrying the same association id
// so that the server gives them one UDP socket.

// Defaults of the udp_multi association.
const (
	DefaultMaxUDPTunnels = 64
	// UDPQueueLen is how many received datagrams a udp_multi association
	// holds for ReadPacket; more are dropped, as a full UDP socket would.
	UDPQueueLen = 256
	// UDPDialTimeout bounds the dial of every tunnel after an
	// association's first: those dials happen inside WritePacket, which
	// has no context of its own.
	UDPDialTimeout = 15 * time.Second
)

// udpReadBufSize holds one whole frame of either framing, so that the
// codec's parsers can read it in place.
const udpReadBufSize = vless.MaxMultiPacketPrefix + vless.MaxPacketLen

// errAssocClosed is returned by an association's methods after Close.
var errAssocClosed = fmt.Errorf("vless: UDP association closed: %w", net.ErrClosed)

// dialPacketV1 is DialPacket for version 1. Both modes dial their first
// carrier now, with ctx, so that a dial failure is DialPacket's error; the
// request header goes out with the first datagram.
func (c *Client) dialPacketV1(ctx context.Context, dst protocols.Addr) (tunnel.PacketConn, error) {
	if protocols.VAddr.Len(dst) < 0 {
		return nil, fmt.Errorf("vless: udp %v: target: %w: cannot encode it", dst, protocols.ErrBadAddr)
	}
	if c.udpClassic {
		conn, err := c.carrier.DialConn(ctx)
		if err != nil {
			return nil, fmt.Errorf("vless: udp %v: carrier: %w", dst, err)
		}
		c.dialed.Add(1)
		req := vless.RequestV1{ID: c.id, Command: vless.CommandUDP, Target: dst}
		return &classicPC{tunnelWriter: tunnelWriter{conn: conn, req: &req, padTo: c.padTo},
			br: v1io.NewReader(conn, udpReadBufSize)}, nil
	}
	a := &multiAssoc{cl: c, max: c.maxUDPTunnels, tunnels: make(map[protocols.Addr]*multiTunnel),
		queue: make(chan datagram, UDPQueueLen), done: make(chan struct{})}
	if err := c.randRead(a.id[:]); err != nil {
		return nil, fmt.Errorf("vless: udp %v: association id: %w", dst, err)
	}
	t, err := a.dial(ctx, dst)
	if err != nil {
		return nil, err
	}
	a.add(t)
	return a, nil
}

// randRead fills b from PadRand (or crypto/rand); PadRand need not be safe
// for concurrent use.
func (c *Client) randRead(b []byte) error {
	c.randMu.Lock()
	defer c.randMu.Unlock()
	_, err := io.ReadFull(c.rand, b)
	return err
}

// tunnelWriter writes the client side of one UDP tunnel: the first frame
// goes with the request header (padded when padding is on), later ones
// alone. It is safe for concurrent use.
type tunnelWriter struct {
	conn  net.Conn
	padTo int

	mu  sync.Mutex
	req *vless.RequestV1 // the header still to send; nil once sent. Guarded by mu
	buf []byte           // guarded by mu
}

// write sends one frame made by appendFrame, after the header if it is
// still owed.
func (w *tunnelWriter) write(appendFrame func([]byte) ([]byte, error)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.req == nil {
		b, err := appendFrame(w.buf[:0])
		if err != nil {
			return err
		}
		w.buf = b
		if _, err := w.conn.Write(b); err != nil {
			return fmt.Errorf("vless: UDP: %w", err)
		}
		return nil
	}
	frame, err := appendFrame(nil)
	if err != nil {
		return err
	}
	writes, err := firstUDPWrites(w.req, w.padTo, frame)
	if err != nil {
		return err
	}
	w.req = nil
	for _, b := range writes {
		if _, err := w.conn.Write(b); err != nil {
			return fmt.Errorf("vless: UDP: sending request header: %w", err)
		}
	}
	return nil
}

// firstUDPWrites lays out the first carrier writes of a UDP tunnel: the
// header and the first frame in one write; with padding (padTo > 0), that
// write padded to exactly padTo bytes when the frame fits, and otherwise
// header and padding alone make padTo bytes and the frame follows in a
// second write (a frame cannot be split: its length says where it ends).
func firstUDPWrites(req *vless.RequestV1, padTo int, frame []byte) ([][]byte, error) {
	if padTo <= 0 {
		b, err := vless.AppendRequestV1(make([]byte, 0, 64+len(frame)), req)
		if err != nil {
			return nil, fmt.Errorf("vless: UDP request header: %w", err)
		}
		return [][]byte{append(b, frame...)}, nil
	}
	r := *req
	r.Padded, r.PadLen = true, 0
	hdr, err := vless.AppendRequestV1(nil, &r)
	if err != nil {
		return nil, fmt.Errorf("vless: UDP request header: %w", err)
	}
	room := padTo - len(hdr) // ≥ 0: padTo ≥ vless.MinPadTo, the longest header
	if len(frame) <= room {
		r.PadLen = room - len(frame)
	} else {
		r.PadLen = room
	}
	b, _ := vless.AppendRequestV1(make([]byte, 0, padTo+len(frame)), &r) // as above, PadLen aside
	b = vless.AppendPadding(b, r.PadLen)
	if len(frame) <= room {
		return [][]byte{append(b, frame...)}, nil
	}
	return [][]byte{b, frame}, nil
}

// readFrameErr turns the end of a carrier into io.EOF between frames and
// io.ErrUnexpectedEOF inside one.
func readFrameErr(br *v1io.Reader, err error) error {
	if err == io.EOF && len(br.Buffered()) == 0 {
		return io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("vless: UDP frame: %w", err)
}

// classicPC is a classic v1 UDP tunnel: one carrier, every frame with its
// address both ways, so it reaches any number of remotes.
type classicPC struct {
	tunnelWriter
	br *v1io.Reader // ReadPacket's only

	closeOnce sync.Once
}

var _ tunnel.PacketConn = (*classicPC)(nil)

// WritePacket sends b to to; the first datagram carries the request header.
func (p *classicPC) WritePacket(b []byte, to protocols.Addr) error {
	return p.write(func(buf []byte) ([]byte, error) { return vless.AppendPacketV1(buf, b, to) })
}

// ReadPacket returns the next datagram and its source.
func (p *classicPC) ReadPacket(b []byte) (int, protocols.Addr, error) {
	type frame struct {
		payload []byte
		from    protocols.Addr
	}
	f, err := v1io.ReadMsg(p.br, func(b []byte) (frame, int, error) {
		payload, from, n, err := vless.ParsePacketV1(b)
		return frame{payload, from}, n, err
	})
	if err != nil {
		return 0, protocols.Addr{}, readFrameErr(p.br, err)
	}
	return copy(b, f.payload), f.from, nil
}

// Close closes the carrier; a pending ReadPacket returns.
func (p *classicPC) Close() error {
	err := net.ErrClosed
	p.closeOnce.Do(func() { err = p.conn.Close() })
	return err
}

// datagram is one received datagram waiting for ReadPacket.
type datagram struct {
	b    []byte
	from protocols.Addr
}

// multiAssoc is a udp_multi association: one tunnel per remote, each with
// a reader goroutine feeding one bounded queue.
type multiAssoc struct {
	cl  *Client
	id  [vless.AssociationLen]byte
	max int

	mu      sync.Mutex
	tunnels map[protocols.Addr]*multiTunnel // guarded by mu
	tick    uint64                          // use counter for the LRU; guarded by mu
	closed  bool                            // guarded by mu

	queue     chan datagram
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	dropped   atomic.Int64 // datagrams dropped on a full queue
}

// multiTunnel is one udp_multi tunnel, to remote.
type multiTunnel struct {
	tunnelWriter
	remote   protocols.Addr
	lastUsed uint64 // guarded by the association's mu
}

var _ tunnel.PacketConn = (*multiAssoc)(nil)

// dial opens a carrier for a tunnel to remote; the header (udp_multi and
// the association id) goes with the tunnel's first datagram.
func (a *multiAssoc) dial(ctx context.Context, remote protocols.Addr) (*multiTunnel, error) {
	conn, err := a.cl.carrier.DialConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("vless: udp %v: carrier: %w", remote, err)
	}
	a.cl.dialed.Add(1)
	req := &vless.RequestV1{ID: a.cl.id, UDPMulti: true, HasAssociation: true, Association: a.id,
		Command: vless.CommandUDP, Target: remote}
	return &multiTunnel{tunnelWriter: tunnelWriter{conn: conn, req: req, padTo: a.cl.padTo}, remote: remote}, nil
}

// add registers t (or closes it if the association is closed), closes the
// least recently used tunnel beyond the bound, and starts t's reader. A
// tunnel to the same remote opened meanwhile by another writer is
// replaced; the replaced one ends.
func (a *multiAssoc) add(t *multiTunnel) {
	var drop []*multiTunnel
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		t.conn.Close()
		return
	}
	if old := a.tunnels[t.remote]; old != nil {
		drop = append(drop, old)
	}
	a.tick++
	t.lastUsed = a.tick
	a.tunnels[t.remote] = t
	for len(a.tunnels) > a.max {
		var lru *multiTunnel
		for _, x := range a.tunnels {
			if x != t && (lru == nil || x.lastUsed < lru.lastUsed) {
				lru = x
			}
		}
		delete(a.tunnels, lru.remote)
		drop = append(drop, lru)
	}
	a.mu.Unlock()
	for _, x := range drop {
		x.conn.Close()
	}
	go a.read(t)
}

// remove forgets t if it is still the tunnel to its remote, and closes it.
func (a *multiAssoc) remove(t *multiTunnel) {
	a.mu.Lock()
	if a.tunnels[t.remote] == t {
		delete(a.tunnels, t.remote)
	}
	a.mu.Unlock()
	t.conn.Close()
}

// read delivers t's datagrams until its carrier fails, then removes t: a
// later datagram to its remote opens a new tunnel.
func (a *multiAssoc) read(t *multiTunnel) {
	defer a.remove(t)
	br := v1io.NewReader(t.conn, udpReadBufSize)
	type frame struct {
		payload []byte
		from    protocols.Addr
		other   bool
	}
	parse := func(b []byte) (frame, int, error) {
		payload, from, other, n, err := vless.ParseMultiPacket(b)
		return frame{payload, from, other}, n, err
	}
	for {
		f, err := v1io.ReadMsg(br, parse)
		if err != nil {
			return
		}
		from := t.remote
		if f.other {
			from = f.from
		}
		a.mu.Lock()
		a.tick++
		t.lastUsed = a.tick
		a.mu.Unlock()
		d := datagram{b: append([]byte(nil), f.payload...), from: from}
		select {
		case a.queue <- d:
		case <-a.done:
			return
		default:
			a.dropped.Add(1)
		}
	}
}

// WritePacket sends b to to over the tunnel to to, opening one (with a
// dial bounded by UDPDialTimeout) if there is none.
func (a *multiAssoc) WritePacket(b []byte, to protocols.Addr) error {
	if len(b) > vless.MaxPacketLen {
		return fmt.Errorf("%w: %d bytes", vless.ErrPacketTooLong, len(b))
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return errAssocClosed
	}
	t := a.tunnels[to]
	if t != nil {
		a.tick++
		t.lastUsed = a.tick
	}
	a.mu.Unlock()
	if t == nil {
		if protocols.VAddr.Len(to) < 0 {
			return fmt.Errorf("vless: udp %v: %w: cannot encode it", to, protocols.ErrBadAddr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), UDPDialTimeout)
		nt, err := a.dial(ctx, to)
		cancel()
		if err != nil {
			return err
		}
		a.add(nt)
		t = nt
	}
	if err := t.write(func(buf []byte) ([]byte, error) { return vless.AppendPacket(buf, b) }); err != nil {
		a.remove(t)
		return fmt.Errorf("vless: udp %v: %w", to, err)
	}
	return nil
}

// ReadPacket returns the next datagram from any of the association's
// tunnels, and its source. A datagram longer than b is cut.
func (a *multiAssoc) ReadPacket(b []byte) (int, protocols.Addr, error) {
	select {
	case d := <-a.queue:
		return copy(b, d.b), d.from, nil
	case <-a.done:
		return 0, protocols.Addr{}, errAssocClosed
	}
}

// Close closes every tunnel; a blocked ReadPacket returns.
func (a *multiAssoc) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		ts := a.tunnels
		a.tunnels = nil
		a.mu.Unlock()
		close(a.done)
		for _, t := range ts {
			t.conn.Close()
		}
	})
	return nil
}

// tunnelCount is how many tunnels the association has open (tests read it
// through export_test.go).
func (a *multiAssoc) tunnelCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.tunnels)
}
