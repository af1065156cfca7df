package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/miekg/dns"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless/vlessclient"
	"github.com/portico-gw/portico/transports/ws"
)

// dnsAddr is where the test's DNS-over-TCP server listens: a loopback
// address of its own at port 53 (not 127.0.0.53, systemd-resolved's).
const dnsAddr = "127.0.53.1:53"

// recordingListener keeps every byte its connections read and write, in
// order, per direction.
type recordingListener struct {
	net.Listener
	mu       sync.Mutex
	in, out  bytes.Buffer // what the server read, what it wrote
	accepted int
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepted++
	l.mu.Unlock()
	return &recordingConn{Conn: c, l: l}, nil
}

func (l *recordingListener) snapshot() (in, out []byte, accepted int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.in.Bytes()), bytes.Clone(l.out.Bytes()), l.accepted
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.in.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.l.mu.Lock()
	c.l.out.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

// bigTXT is the TXT answer of big.example.: 24 strings of 100 bytes, a
// message well over the 512 bytes of classic DNS over UDP.
func bigTXT() []string {
	var txt []string
	for i := range 24 {
		txt = append(txt, fmt.Sprintf("%02d", i)+strings.Repeat("x", 98))
	}
	return txt
}

// startDNS runs a miekg/dns TCP server on dnsAddr: a.example. A
// 192.0.2.7, v6.example. AAAA 2001:db8::53, big.example. TXT bigTXT(),
// anything else NXDOMAIN.
func startDNS(t *testing.T) *recordingListener {
	t.Helper()
	ln, err := net.Listen("tcp", dnsAddr)
	if err != nil {
		t.Skipf("cannot listen on %s (needs root or CAP_NET_BIND_SERVICE): %v", dnsAddr, err)
	}
	rl := &recordingListener{Listener: ln}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case name == "a.example." && q.Question[0].Qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 7)})
		case name == "v6.example." && q.Question[0].Qtype == dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP("2001:db8::53")})
		case name == "big.example." && q.Question[0].Qtype == dns.TypeTXT:
			hdr.Rrtype = dns.TypeTXT
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: bigTXT()})
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{Listener: rl, Net: "tcp", Handler: mux}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return rl
}

// frame is a VLESS v0 UDP frame, which is also a DNS-over-TCP message:
// 2-byte big-endian length, then the bytes.
func frame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// TestDNSOverTCPForUDP53: a VLESS UDP tunnel (command 2) to port 53 from
// Portico's VLESS client (vlessclient over transports/ws) is served by the
// worker as DNS over TCP to the same address: queries for A, AAAA, a TXT
// answer of over 2 KiB (more than 512 bytes) and a missing name, one by
// one and then three pipelined, get the right answers. The bytes the DNS
// server read are exactly the VLESS frames the client wrote, and the bytes
// it wrote are exactly the frames the client read (RFC 7766 framing is
// VLESS v0 UDP framing). UDP to any other port is still refused.
func TestDNSOverTCPForUDP53(t *testing.T) {
	rl := startDNS(t)
	w := edgeWorker(t, directBindings())
	client, err := vlessclient.New(vlessclient.Options{ID: uuid.MustParse(testUUID),
		Carrier: &ws.Dialer{URL: "ws://" + w.Addr + wsPath}})
	if err != nil {
		t.Fatal(err)
	}
	dst := protocols.AddrFromAddrPort(netip.MustParseAddrPort(dnsAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := client.DialPacket(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	deadline := time.Now().Add(10 * time.Second)
	go func() { <-ctx.Done(); pc.Close() }()

	var sent, got [][]byte
	query := func(id uint16, name string, qtype uint16) []byte {
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		q.Id = id
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if err := pc.WritePacket(b, dst); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, b)
		return b
	}
	buf := make([]byte, 64<<10)
	read := func() *dns.Msg {
		if time.Now().After(deadline) {
			t.Fatal("timeout")
		}
		n, from, err := pc.ReadPacket(buf)
		if err != nil {
			t.Fatalf("read: %v\nworkerd log:\n%s", err, w.Log())
		}
		if from != dst {
			t.Fatalf("reply from %v", from)
		}
		got = append(got, bytes.Clone(buf[:n]))
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		return m
	}
	check := func(m *dns.Msg, id uint16) {
		t.Helper()
		if m.Id != id {
			t.Fatalf("reply id %d, want %d", m.Id, id)
		}
		name := m.Question[0].Name
		switch name {
		case "a.example.":
			if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
				t.Fatalf("%s: %v", name, m.Answer)
			}
		case "v6.example.":
			if len(m.Answer) != 1 || m.Answer[0].(*dns.AAAA).AAAA.String() != "2001:db8::53" {
				t.Fatalf("%s: %v", name, m.Answer)
			}
		case "big.example.":
			if len(m.Answer) != 1 || strings.Join(m.Answer[0].(*dns.TXT).Txt, "") != strings.Join(bigTXT(), "") {
				t.Fatalf("%s: %v", name, m.Answer)
			}
		default:
			if m.Rcode != dns.RcodeNameError {
				t.Fatalf("%s: rcode %d", name, m.Rcode)
			}
		}
	}
	for i, q := range []struct {
		name  string
		qtype uint16
	}{{"a.example.", dns.TypeA}, {"big.example.", dns.TypeTXT}, {"v6.example.", dns.TypeAAAA}, {"missing.example.", dns.TypeA}} {
		id := uint16(100 + i)
		query(id, q.name, q.qtype)
		check(read(), id)
	}
	if n := len(got[1]); n <= 512 {
		t.Fatalf("the TXT reply is %d bytes, want > 512", n)
	}
	// Pipelined: three queries before any reply (RFC 7766 section 6.2.1.1).
	query(200, "a.example.", dns.TypeA)
	query(201, "big.example.", dns.TypeTXT)
	query(202, "missing.example.", dns.TypeA)
	for id := uint16(200); id <= 202; id++ {
		check(read(), id) // miekg answers one connection's queries in order
	}

	var wantIn, wantOut []byte
	for _, b := range sent {
		wantIn = append(wantIn, frame(b)...)
	}
	for _, b := range got {
		wantOut = append(wantOut, frame(b)...)
	}
	// The server's side records a write once it returns, which can be
	// after the client has read the reply: wait for the record to catch up.
	in, out, accepted := rl.snapshot()
	for deadline := time.Now().Add(5 * time.Second); len(out) < len(wantOut) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		in, out, accepted = rl.snapshot()
	}
	if accepted != 1 {
		t.Errorf("the DNS server saw %d connections, want 1 (one tunnel, one TCP connection)", accepted)
	}
	if !bytes.Equal(in, wantIn) {
		t.Errorf("the DNS server read %d bytes, not the %d bytes of the client's VLESS UDP frames", len(in), len(wantIn))
	}
	if !bytes.Equal(out, wantOut) {
		t.Errorf("the DNS server wrote %d bytes, not the %d bytes of frames the client read", len(out), len(wantOut))
	}
	t.Logf("%d queries, %d bytes up and %d down, identical on both sides; largest reply %d bytes", len(sent), len(in), len(out), len(got[1]))

	// UDP to another port is refused: the tunnel closes without a reply.
	t.Run("other port refused", func(t *testing.T) {
		other := protocols.AddrFromAddrPort(netip.MustParseAddrPort("127.0.53.1:5353"))
		pc2, err := client.DialPacket(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		defer pc2.Close()
		if err := pc2.WritePacket(sent[0], other); err != nil {
			t.Fatal(err)
		}
		if n, _, err := pc2.ReadPacket(buf); err == nil {
			t.Fatalf("UDP to port 5353: a %d-byte reply, want the tunnel refused", n)
		}
		if !logShows(w, "to port 5353") {
			t.Errorf("workerd log does not show the refusal:\n%s", w.Log())
		}
	})
}

// logShows waits up to 3 s for workerd to print s (its log reaches us
// through a pipe, a little after the WebSocket closes).
func logShows(w *Workerd, s string) bool {
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(w.Log(), s) {
			return true
		}
	}
	return false
}
