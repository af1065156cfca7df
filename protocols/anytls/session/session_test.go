package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls"
	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var target = protocols.Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return client, server
}

// noShaping is a scheme that shapes nothing past the authentication.
func noShaping(t testing.TB) *atomic.Pointer[anytls.Scheme] {
	s, err := anytls.ParseScheme([]byte("stop=1"))
	if err != nil {
		t.Fatal(err)
	}
	p := new(atomic.Pointer[anytls.Scheme])
	p.Store(s)
	return p
}

// sessions is a client and a server session over loopback TCP.
type sessions struct {
	c, s       *Session
	cerr, serr chan error
}

// pair starts both; cleanup closes them and waits for Run (and so every
// Accept) to return.
func pair(t testing.TB, scfg ServerConfig, ccfg ClientConfig) *sessions {
	t.Helper()
	cc, sc := tcpPair(t)
	p := &sessions{c: NewClient(cc, ccfg), s: NewServer(sc, nil, scfg), cerr: make(chan error, 1), serr: make(chan error, 1)}
	go func() { p.serr <- p.s.Run() }()
	go func() { p.cerr <- p.c.Run() }()
	t.Cleanup(func() {
		p.c.Close()
		p.s.Close()
		<-p.cerr
		<-p.serr
	})
	return p
}

// serve reads the stream's target, then runs f.
func serve(f func(*Stream)) func(*Stream) {
	return func(st *Stream) {
		if a, err := st.ReadTarget(); err != nil || a != target {
			st.Finish(errors.Join(err, errors.New("wrong target")))
			return
		}
		f(st)
	}
}

// echoBody echoes until the client's cmdFIN.
func echoBody(st *Stream) {
	st.ReportDial(nil)
	_, err := io.Copy(st, st)
	st.Finish(err)
}

var echo = serve(echoBody)

func open(t testing.TB, s *Session) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.OpenStream(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestFirstPacket: the client's cmdSettings waits for the first stream,
// so write #1 (the session's first write) is cmdSettings + cmdSYN +
// cmdPSH(target), byte for byte as the spec lays them out.
func TestFirstPacket(t *testing.T) {
	cc, sc := tcpPair(t)
	defer sc.Close()
	rc := &anytlstest.RecordingConn{Conn: cc}
	pad := noShaping(t)
	c := NewClient(rc, ClientConfig{Padding: pad, ClientName: "test/1"})
	done := make(chan error, 1)
	go func() { done <- c.Run() }()
	defer func() { c.Close(); <-done }()
	if len(rc.Writes()) != 0 {
		t.Fatal("the client wrote before opening a stream")
	}
	open(t, c)
	settings := "v=2\nclient=test/1\npadding-md5=" + pad.Load().MD5()
	want := anytlstest.Frame(4, 0, settings)
	want = append(want, anytlstest.Frame(1, 1, "")...)
	want = append(want, anytlstest.Frame(2, 1, "\x01\x01\x02\x03\x04\x00\x50")...)
	if w := rc.Writes(); len(w) != 1 || !bytes.Equal(w[0], want) {
		t.Fatalf("writes = %x\nwant one write %x", w, want)
	}
	// The second stream's open is its own write: SYN + PSH only.
	open(t, c)
	want2 := append(anytlstest.Frame(1, 2, ""), anytlstest.Frame(2, 2, "\x01\x01\x02\x03\x04\x00\x50")...)
	if w := rc.Writes(); len(w) != 2 || !bytes.Equal(w[1], want2) {
		t.Fatalf("second open wrote %x, want %x", w[1:], want2)
	}
	got := make([]byte, len(want)+len(want2))
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(sc, got); err != nil || !bytes.Equal(got, append(want, want2...)) {
		t.Fatalf("peer read %x, %v", got, err)
	}
}

// TestMultiplex moves 1 MiB each way over 8 concurrent streams of one
// session and checks them by SHA-256.
func TestMultiplex(t *testing.T) {
	p := pair(t, ServerConfig{Accept: echo}, ClientConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		st := open(t, p.c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			st.SetDeadline(time.Now().Add(30 * time.Second))
			if err := anytlstest.Exchange(st, 1<<20, uint64(i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p.c.PeerVersion() != 2 || p.s.PeerVersion() != 2 {
		t.Errorf("peer versions %d, %d", p.c.PeerVersion(), p.s.PeerVersion())
	}
	anytlstest.Eventually(t, 5*time.Second, "streams released", func() bool { return p.c.NumStreams() == 0 && p.s.NumStreams() == 0 })
}

// TestStalledStream: a stream whose reader never reads fills its buffer
// and stops the session reader; after StallTimeout it is reset, and the
// other stream on the session carries on. Memory held by the stalled
// stream stays within its bound.
func TestStalledStream(t *testing.T) {
	const bound = 64 << 10
	stalled := make(chan *Stream, 1)
	release := make(chan struct{})
	accept := serve(func(st *Stream) {
		st.ReportDial(nil)
		if st.ID() == 1 {
			stalled <- st
			<-release // never reads
			st.Finish(nil)
			return
		}
		echoBody(st)
	})
	p := pair(t, ServerConfig{Accept: accept, Limits: Limits{RecvBuffer: bound, StallTimeout: 300 * time.Millisecond}}, ClientConfig{})
	defer close(release)

	a := open(t, p.c)
	b := open(t, p.c)
	defer a.Close()
	defer b.Close()
	// Fill a: far more than its bound.
	aErr := make(chan error, 1)
	go func() {
		// Until the server's cmdFIN arrives: writes then fail.
		buf := make([]byte, 256<<10)
		for range 1024 {
			if _, err := a.Write(buf); err != nil {
				aErr <- err
				return
			}
		}
		aErr <- errors.New("256 MiB written to a reset stream")
	}()
	sa := <-stalled
	anytlstest.Eventually(t, 5*time.Second, "stalled stream buffer full", func() bool {
		n, _ := sa.held()
		return n >= bound
	})
	maxHeld := 0
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for !isClosed(stop) {
			_, mem := sa.held()
			maxHeld = max(maxHeld, mem)
			time.Sleep(time.Millisecond)
		}
	}()
	// b still works, within a few stall timeouts.
	start := time.Now()
	b.SetDeadline(time.Now().Add(10 * time.Second))
	if err := anytlstest.Exchange(b, 256<<10, 9); err != nil {
		t.Fatalf("the other stream: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the other stream took %v", d)
	}
	close(stop)
	<-sampled
	if maxHeld > bound+2*chunkSize {
		t.Errorf("stalled stream held %d bytes, bound %d (+2 chunks)", maxHeld, bound)
	}
	// a was reset: the server's reads fail, and the client heard cmdFIN.
	if _, err := sa.Read(make([]byte, 1)); !errors.Is(err, ErrStalled) {
		t.Errorf("stalled stream Read: %v, want ErrStalled", err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client side of the reset stream: Read = %v, want EOF", err)
	}
	if err := <-aErr; !errors.Is(err, ErrPeerClosed) {
		t.Errorf("client write to the reset stream: %v, want ErrPeerClosed", err)
	}
}

// TestSlowStreamAlone: a stream alone on its session is slowed, never
// reset: back-pressure only.
func TestSlowStreamAlone(t *testing.T) {
	const bound = 32 << 10
	got := make(chan []byte, 1)
	accept := serve(func(st *Stream) {
		st.ReportDial(nil)
		time.Sleep(600 * time.Millisecond) // 6 stall timeouts
		b, err := io.ReadAll(st)
		if err != nil {
			t.Errorf("slow reader: %v", err)
		}
		got <- b
		st.Finish(nil)
	})
	p := pair(t, ServerConfig{Accept: accept, Limits: Limits{RecvBuffer: bound, StallTimeout: 100 * time.Millisecond}}, ClientConfig{})
	st := open(t, p.c)
	want := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if _, err := st.Write(want); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("slow reader got %d bytes, want %d", len(b), len(want))
	}
}

// TestFIN: cmdFIN closes a stream both ways at the receiver (as in
// anytls-go); the data before it arrives first.
func TestFIN(t *testing.T) {
	type result struct {
		data []byte
		werr error
	}
	results := make(chan result, 1)
	accept := serve(func(st *Stream) {
		st.ReportDial(nil)
		b, _ := io.ReadAll(st) // ends at the client's cmdFIN
		time.Sleep(50 * time.Millisecond)
		_, werr := st.Write([]byte("late"))
		results <- result{b, werr}
		st.Finish(nil)
	})
	p := pair(t, ServerConfig{Accept: accept}, ClientConfig{})
	st := open(t, p.c)
	st.Write([]byte("hello"))
	st.CloseWrite()
	r := <-results
	if string(r.data) != "hello" || !errors.Is(r.werr, ErrPeerClosed) || !errors.Is(r.werr, net.ErrClosed) {
		t.Fatalf("server read %q, write after FIN: %v", r.data, r.werr)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrWriteClosed) {
		t.Errorf("Write after CloseWrite: %v", err)
	}
	st.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := st.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read after CloseWrite = %d, %v; want EOF (the server's late write is dropped)", n, err)
	}
	st.Close()
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

// TestServerFINKeepsData: data sent before cmdFIN is read before EOF.
func TestServerFINKeepsData(t *testing.T) {
	accept := serve(func(st *Stream) {
		st.Write(bytes.Repeat([]byte("x"), 200<<10))
		st.Finish(nil) // cmdFIN right behind the data
	})
	p := pair(t, ServerConfig{Accept: accept}, ClientConfig{})
	st := open(t, p.c)
	defer st.Close()
	time.Sleep(100 * time.Millisecond) // let everything arrive first
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(st)
	if err != nil || len(b) != 200<<10 {
		t.Fatalf("ReadAll = %d bytes, %v", len(b), err)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
		t.Errorf("Write after the peer's FIN: %v", err)
	}
}

func TestHeartbeat(t *testing.T) {
	p := pair(t, ServerConfig{Accept: echo}, ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	open(t, p.c) // cmdSettings first
	if err := p.c.Ping(ctx); err != nil {
		t.Errorf("client ping: %v", err)
	}
	if err := p.s.Ping(ctx); err != nil {
		t.Errorf("server ping: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	p.c.Close()
	if err := p.c.Ping(short); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ping on a closed session: %v", err)
	}
}

// TestSynAckError: the server's dial error reaches the client's stream.
func TestSynAckError(t *testing.T) {
	accept := func(st *Stream) {
		st.Finish(errors.New("dial tcp 1.2.3.4:80: connect: connection refused"))
	}
	p := pair(t, ServerConfig{Accept: accept}, ClientConfig{})
	st := open(t, p.c)
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := st.Read(make([]byte, 1))
	var de *DialError
	if !errors.As(err, &de) || de.Text != "dial tcp 1.2.3.4:80: connect: connection refused" {
		t.Fatalf("Read = %v, want the server's dial error", err)
	}
	if _, err := st.Write([]byte("x")); !errors.As(err, &de) {
		t.Errorf("Write after the dial error: %v", err)
	}
	if p.c.IsClosed() {
		t.Error("a dial error closed the session")
	}
}

// TestSynAckTimeout: a v2 server that does not answer stream 2's cmdSYN in
// time gets the session closed as stuck; stream 1 never arms the watchdog.
func TestSynAckTimeout(t *testing.T) {
	block := make(chan struct{})
	accept := serve(func(st *Stream) {
		if st.ID() >= 2 {
			<-block // dial "hangs": no SYNACK
		}
		st.ReportDial(nil)
		io.Copy(io.Discard, st)
		st.Finish(nil)
	})
	p := pair(t, ServerConfig{Accept: accept}, ClientConfig{SynAckTimeout: 200 * time.Millisecond})
	defer close(block)
	s1 := open(t, p.c)
	anytlstest.Eventually(t, 5*time.Second, "server settings", func() bool { return p.c.PeerVersion() == 2 })
	time.Sleep(300 * time.Millisecond)
	if p.c.IsClosed() {
		t.Fatal("stream 1 armed the watchdog")
	}
	s1.Close()
	s2 := open(t, p.c)
	select {
	case <-p.c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session not closed without SYNACK")
	}
	if err := <-p.cerr; !errors.Is(err, ErrSynAckTimeout) {
		t.Errorf("Run = %v", err)
	}
	p.cerr <- nil // for cleanup
	if _, err := s2.Read(make([]byte, 1)); !errors.Is(err, ErrSynAckTimeout) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("stream Read = %v", err)
	}
}

// TestSynAckTimeoutV1: without cmdServerSettings (a v1 server) there is
// no watchdog.
func TestSynAckTimeoutV1(t *testing.T) {
	cc, sc := tcpPair(t)
	defer sc.Close()
	c := NewClient(cc, ClientConfig{SynAckTimeout: 50 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- c.Run() }()
	defer func() { c.Close(); <-done }()
	go io.Copy(io.Discard, sc)
	open(t, c)
	open(t, c)
	time.Sleep(200 * time.Millisecond)
	if c.IsClosed() || c.PeerVersion() != 0 {
		t.Fatalf("closed %v, peer version %d", c.IsClosed(), c.PeerVersion())
	}
}

// TestUpdatePaddingScheme: a server with another scheme pushes it, and the
// client's shared scheme becomes it.
func TestUpdatePaddingScheme(t *testing.T) {
	custom, err := anytls.ParseScheme([]byte("stop=3\n0=9-9\n1=200-200\n2=20-20,40-40"))
	if err != nil {
		t.Fatal(err)
	}
	shared := new(atomic.Pointer[anytls.Scheme])
	shared.Store(anytls.DefaultScheme())
	p := pair(t, ServerConfig{Accept: echo, Scheme: custom}, ClientConfig{Padding: shared})
	open(t, p.c)
	anytlstest.Eventually(t, 5*time.Second, "scheme pushed", func() bool { return shared.Load().MD5() == custom.MD5() })

	// A bad scheme pushed by a server is ignored.
	bad := new(atomic.Pointer[anytls.Scheme])
	bad.Store(anytls.DefaultScheme())
	cc, sc := tcpPair(t)
	c := NewClient(cc, ClientConfig{Padding: bad})
	done := make(chan error, 1)
	go func() { done <- c.Run() }()
	sc.Write(anytlstest.Frame(6, 0, "stop=x"))
	sc.Write(anytlstest.Frame(10, 0, "v=2"))
	anytlstest.Eventually(t, 5*time.Second, "server settings", func() bool { return c.PeerVersion() == 2 })
	if bad.Load() != anytls.DefaultScheme() {
		t.Error("a bad scheme replaced the default")
	}
	c.Close()
	sc.Close()
	<-done
}

// TestMaxStreams: a stream past the limit is refused with cmdSYNACK and
// cmdFIN; the others go on.
func TestMaxStreams(t *testing.T) {
	hold := make(chan struct{})
	accept := serve(func(st *Stream) {
		st.ReportDial(nil)
		<-hold
		st.Finish(nil)
	})
	p := pair(t, ServerConfig{Accept: accept, MaxStreams: 2}, ClientConfig{})
	defer close(hold)
	a, b := open(t, p.c), open(t, p.c)
	defer a.Close()
	defer b.Close()
	anytlstest.Eventually(t, 5*time.Second, "two server streams", func() bool { return p.s.NumStreams() == 2 })
	c := open(t, p.c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var de *DialError
	if !errors.As(err, &de) || !strings.Contains(de.Text, "too many streams") {
		t.Fatalf("third stream Read = %v", err)
	}
}

func TestDeadlines(t *testing.T) {
	p := pair(t, ServerConfig{Accept: echo}, ClientConfig{})
	st := open(t, p.c)
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("deadline fired after %v", d)
	}
	// Moving the deadline into the past wakes a blocked Read.
	st.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := st.Read(make([]byte, 1)); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	st.SetReadDeadline(time.Now().Add(-time.Second))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("woken Read = %v", err)
	}
	// Cleared, it reads again.
	st.SetDeadline(time.Time{})
	st.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after clearing: %q, %v", buf, err)
	}
	st.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := st.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Write past its deadline: %v", err)
	}
}

func TestSessionClose(t *testing.T) {
	p := pair(t, ServerConfig{Accept: echo}, ClientConfig{})
	st := open(t, p.c)
	readErr := make(chan error, 1)
	go func() { _, err := st.Read(make([]byte, 1)); readErr <- err }()
	p.s.Close()
	err := <-readErr
	var ce *ClosedError
	if !errors.As(err, &ce) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after the server closed = %v", err)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write = %v", err)
	}
	if _, err := p.c.OpenStream(context.Background(), target); !errors.Is(err, net.ErrClosed) {
		t.Errorf("OpenStream = %v", err)
	}
	<-p.c.Done()
	<-p.serr
	p.serr <- nil // for cleanup
	if p.s.Err() != nil {
		t.Errorf("server Err after Close = %v", p.s.Err())
	}
}

// TestWriteSplitsFrames: a Write larger than a frame goes out as cmdPSH
// frames of at most 65535 bytes, as anytls-go splits them.
func TestWriteSplitsFrames(t *testing.T) {
	cc, sc := tcpPair(t)
	defer sc.Close()
	c := NewClient(cc, ClientConfig{Padding: noShaping(t)})
	done := make(chan error, 1)
	go func() { done <- c.Run() }()
	defer func() { c.Close(); <-done }()
	st := open(t, c)
	go st.Write(make([]byte, 150000))
	var sizes []int
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	total := 0
	for total < 7+150000 {
		f, err := anytlstest.ReadRawFrame(sc)
		if err != nil {
			t.Fatal(err)
		}
		if f.Cmd == 2 {
			sizes = append(sizes, len(f.Data))
			total += len(f.Data)
		}
	}
	if want := []int{7, 65535, 65535, 18930}; !equalInts(sizes, want) {
		t.Errorf("PSH sizes %v, want %v", sizes, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAlertEndsClientSession: cmdAlert from the server ends the session
// with its text.
func TestAlertEndsClientSession(t *testing.T) {
	cc, sc := tcpPair(t)
	defer sc.Close()
	c := NewClient(cc, ClientConfig{})
	done := make(chan error, 1)
	go func() { done <- c.Run() }()
	sc.Write(anytlstest.Frame(5, 0, "go away"))
	err := <-done
	var ae *AlertError
	if !errors.As(err, &ae) || ae.Text != "go away" || ae.Sent {
		t.Fatalf("Run = %v", err)
	}
}

func TestReaderRand(t *testing.T) {
	r := ReaderRand(bytes.NewReader(bytes.Repeat([]byte{0xff, 1, 2, 3, 4, 5, 6, 7}, 100)))
	for range 50 {
		if v := r.IntN(10); v < 0 || v >= 10 {
			t.Fatalf("IntN(10) = %d", v)
		}
	}
	if v := ReaderRand(bytes.NewReader(nil)).IntN(10); v != 0 {
		t.Errorf("on a dry reader IntN = %d", v)
	}
	if v := r.IntN(1); v != 0 {
		t.Errorf("IntN(1) = %d", v)
	}
}

// TestReadTarget reads each SOCKS address type exactly, leaving the payload.
func TestReadTarget(t *testing.T) {
	tests := []struct {
		wire string
		want protocols.Addr
		err  string
	}{
		{"\x01\x7f\x00\x00\x01\x00\x50", protocols.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 80}, ""},
		{"\x04" + strings.Repeat("\x00", 15) + "\x01\x01\xbb", protocols.Addr{IP: netip.MustParseAddr("::1"), Port: 443}, ""},
		{"\x03\x0bexample.com\x00\x35", protocols.Addr{Domain: "example.com", Port: 53}, ""},
		{"\x02\x00", protocols.Addr{}, "unknown address type 2"},
		{"\x03\x00\x00\x35", protocols.Addr{}, "empty domain"},
		{"\x01\x7f\x00", protocols.Addr{}, "EOF"},
	}
	for _, tt := range tests {
		got := make(chan error, 1)
		accept := func(st *Stream) {
			a, err := st.ReadTarget()
			if err == nil && a != tt.want {
				err = errors.New("wrong address " + a.String())
			}
			if err == nil {
				rest := make([]byte, 4)
				if _, err = io.ReadFull(st, rest); err == nil && string(rest) != "rest" {
					err = errors.New("payload lost: " + string(rest))
				}
			}
			got <- err
			st.Finish(err)
		}
		cc, sc := tcpPair(t)
		s := NewServer(sc, nil, ServerConfig{Accept: accept})
		done := make(chan error, 1)
		go func() { done <- s.Run() }()
		cc.Write(anytlstest.Frame(4, 0, "v=2"))
		cc.Write(anytlstest.Frame(1, 1, ""))
		if tt.err == "EOF" {
			cc.Write(anytlstest.Frame(2, 1, tt.wire))
			cc.Write(anytlstest.Frame(3, 1, ""))
		} else {
			cc.Write(anytlstest.Frame(2, 1, tt.wire+"rest"))
		}
		err := <-got
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%x: %v, want %q", tt.wire, err, tt.err)
		}
		cc.Close()
		<-done
	}
}

// TestIdleStreamMemory measures what an idle stream costs on one session,
// client and server side together (both run in this process): 500 streams
// are opened and left idle, and the live heap grows by far less than the
// per-stream receive bound — chunks are taken from the pool only while
// data waits. The figure is logged (run with -v); the bound keeps a change
// that held buffers while idle from passing unseen.
func TestIdleStreamMemory(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("the race detector's shadow memory makes heap figures meaningless")
	}
	var accepted atomic.Int32
	hold := func(st *Stream) {
		st.ReportDial(nil)
		accepted.Add(1)
		var one [1]byte
		st.Read(one[:])
		st.Finish(nil)
	}
	p := pair(t, ServerConfig{Accept: serve(hold), MaxStreams: 1000}, ClientConfig{})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	first := open(t, p.c) // the session's own cost is not counted
	defer first.Close()
	anytlstest.Eventually(t, 5*time.Second, "first stream accepted", func() bool { return accepted.Load() == 1 })
	const n = 500
	before := heap()
	streams := make([]*Stream, 0, n)
	for range n {
		streams = append(streams, open(t, p.c))
	}
	anytlstest.Eventually(t, 10*time.Second, "streams accepted", func() bool { return accepted.Load() == n+1 })
	per := float64(heap()-before) / n
	t.Logf("idle stream on one session: %.0f bytes of heap (client and server side, goroutine stacks not included)", per)
	for _, st := range streams {
		st.Close()
	}
	if per > 8<<10 {
		t.Fatalf("an idle stream holds %.0f bytes; receive buffers must not be held while idle", per)
	}
}

// TestStreamZeroAllocs: a 32 KiB chunk written on a client stream and read
// back from the server's echo costs no allocation, either side, once the
// pools are warm. (Over TLS, crypto/tls adds one small one per record.)
func TestStreamZeroAllocs(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	p := pair(t, ServerConfig{Accept: echo}, ClientConfig{Padding: noShaping(t)})
	st := open(t, p.c)
	defer st.Close()
	msg := make([]byte, 32<<10)
	back := make([]byte, len(msg))
	round := func() {
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, back); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		round()
	}
	if n := testing.AllocsPerRun(200, round); n > 0.05 {
		t.Fatalf("%.2f allocations per 32 KiB echoed through a session", n)
	}
}
