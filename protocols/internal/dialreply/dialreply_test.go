package dialreply

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/readwait"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// A relay can wait on the stream without a buffer: bytes replayed from the
// handshake are ready at once, then the client connection is waited on,
// after the success reply went out.
func TestReadWaiter(t *testing.T) {
	client, server := tcpPair(t)
	st := New("test", server, []byte("early"), func(err error) []byte { return []byte("OK") })
	wait := readwait.For(st)
	if wait == nil {
		t.Skip("no bufferless wait on this system")
	}
	if err := wait(); err != nil {
		t.Fatalf("wait with replayed bytes: %v", err)
	}
	reply := make([]byte, 2)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, reply); err != nil || string(reply) != "OK" {
		t.Fatalf("the client heard %q, %v before the first wait returned; want the success reply", reply, err)
	}
	buf := make([]byte, 16)
	if n, _ := st.Read(buf); string(buf[:n]) != "early" {
		t.Fatalf("Read = %q; want the replayed bytes", buf[:n])
	}
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		t.Fatalf("wait returned %v with nothing to read", err)
	case <-time.After(100 * time.Millisecond):
	}
	client.Write([]byte("late"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return when the client sent")
	}
	if n, _ := st.Read(buf); string(buf[:n]) != "late" {
		t.Fatalf("Read = %q; want late", buf[:n])
	}
}

func TestReadWaiterRefusedAfterFailedDial(t *testing.T) {
	_, server := tcpPair(t)
	st := New("test", server, nil, func(err error) []byte { return []byte("NO") })
	st.ReportDial(io.ErrUnexpectedEOF)
	wait := readwait.For(st)
	if wait == nil {
		t.Skip("no bufferless wait on this system")
	}
	if err := wait(); err == nil {
		t.Fatal("wait on a refused stream returned no error")
	}
}
