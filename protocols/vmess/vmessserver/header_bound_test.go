package vmessserver

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/nettest"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess"
)

// TestReadHeaderFullBuffer: when the read buffer is full and the codec
// still wants more, readHeader refuses (ErrBadHeader, as not VMess)
// instead of reading into no room, which returns nothing and would spin
// until the deadline. The real buffer holds every header (checked at
// compile time beside headerBufSize); a 64-byte buffer here stands for a
// codec whose bound broke.
func TestReadHeaderFullBuffer(t *testing.T) {
	id := uuid.MustParse("b831381d-6324-4d53-ad4f-8cda48b30811")
	now := time.Unix(1700000000, 0)
	s, err := New(Options{Users: []User{{ID: id}}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	r := vmess.Request{Security: vmess.SecurityAES128GCM, Options: vmess.OptionChunkStream, Command: vmess.CommandTCP,
		Target: protocols.DomainAddr("example.com", 443)}
	hello, err := vmess.AppendAEADRequest(nil, vmess.NewUserKey(id), vmess.AEADSeed{Time: now.Unix()}, &r)
	if err != nil {
		t.Fatal(err)
	}
	if len(hello) <= 64 {
		t.Fatalf("the header is %d bytes; the test needs one longer than its buffer", len(hello))
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.readHeader(nettest.NewFake(hello), make([]byte, 64))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errHeaderTooLong) || !errors.Is(err, vmess.ErrBadHeader) || !errors.Is(err, protocols.ErrNotProtocol) {
			t.Fatalf("readHeader: %v; want errHeaderTooLong, ErrBadHeader and ErrNotProtocol", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("readHeader still reading into a full buffer after 5 s")
	}
}
