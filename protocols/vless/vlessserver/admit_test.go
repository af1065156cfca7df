package vlessserver_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vless/internal/vlesstest"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
)

// admitRecorder is an Options.Admit that refuses the labels in refuse and
// records every label it is asked about.
type admitRecorder struct {
	refuse []string
	mu     sync.Mutex
	asked  []string
}

func (a *admitRecorder) admit(user string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, user)
	return !slices.Contains(a.refuse, user)
}

func (a *admitRecorder) reset() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	asked := a.asked
	a.asked = nil
	return asked
}

// outcome is what a client (or the gateway) can observe of one ServeConn.
type outcome struct {
	notProtocol bool
	writes      int
	closed      bool
	calls       int
}

// TestAdmit: with two users and an Admit that refuses one (bob, who has no
// email and so goes by his Label), the admitted user gets a tunnel and the
// refused one is turned away exactly as an unknown id is: ErrNotProtocol,
// nothing written, conn open, no handler; Match says no to both. Admit is
// asked with the label; a nil Admit admits everyone.
func TestAdmit(t *testing.T) {
	bobLabel := vlessserver.Label(bob)
	for _, version := range []int{0, 1} {
		hdr := func(id uuid.UUID) []byte {
			if version == 1 {
				return v1Header(t, v1To(id, "1.2.3.4:443"))
			}
			return header(t, tcpTo(id, "1.2.3.4:443"))
		}
		serve := func(t *testing.T, s *vlessserver.Server, id uuid.UUID) (outcome, error) {
			fc := vlesstest.NewFake(append(hdr(id), "hi"...))
			h := &handlerFunc{}
			err := s.ServeConn(context.Background(), fc, h)
			return outcome{errors.Is(err, protocols.ErrNotProtocol), len(fc.Writes()), fc.Closed() || fc.ClosedWrite(), h.Calls()}, err
		}
		tunnelled := outcome{writes: 1, closed: true, calls: 1} // v0: the response header on Close
		if version == 1 {
			tunnelled.writes = 0 // v1 has no response header
		}
		refused := outcome{notProtocol: true}
		tests := []struct {
			name   string
			admit  bool // set Options.Admit
			id     uuid.UUID
			want   outcome
			cause  error
			asked  []string
			match  bool
			reason error
		}{
			{"admitted", true, alice, tunnelled, nil, []string{"alice@example.com"}, true, nil},
			{"not admitted", true, bob, refused, vlessserver.ErrNotAdmitted, []string{bobLabel}, false, vlessserver.ErrNotAdmitted},
			{"unknown id", true, eve, refused, vlessserver.ErrUnknownUser, nil, false, vlessserver.ErrUnknownUser},
			{"no Admit", false, bob, tunnelled, nil, nil, true, nil},
		}
		results := map[string]outcome{}
		for _, tt := range tests {
			t.Run(tt.name+" v"+string(rune('0'+version)), func(t *testing.T) {
				rec := &admitRecorder{refuse: []string{bobLabel}}
				opts := vlessserver.Options{V1: version == 1, Secure: true}
				if tt.admit {
					opts.Admit = rec.admit
				}
				s := newServer(t, opts)
				got, err := serve(t, s, tt.id)
				if got != tt.want {
					t.Errorf("outcome %+v (err %v); want %+v", got, err, tt.want)
				}
				if tt.cause != nil && !errors.Is(err, tt.cause) {
					t.Errorf("ServeConn = %v; want %v", err, tt.cause)
				}
				if tt.cause == nil && err != nil {
					t.Errorf("ServeConn = %v", err)
				}
				if asked := rec.reset(); !slices.Equal(asked, tt.asked) {
					t.Errorf("ServeConn asked Admit about %q; want %q", asked, tt.asked)
				}
				ok, merr := s.Match(hdr(tt.id))
				if ok != tt.match || merr != tt.reason {
					t.Errorf("Match = %v, %v; want %v, %v", ok, merr, tt.match, tt.reason)
				}
				if asked := rec.reset(); !slices.Equal(asked, tt.asked) {
					t.Errorf("Match asked Admit about %q; want %q", asked, tt.asked)
				}
				results[tt.name] = got
			})
		}
		if results["not admitted"] != results["unknown id"] {
			t.Errorf("v%d: a refused user %+v and an unknown id %+v are told apart", version, results["not admitted"], results["unknown id"])
		}
	}
}

// TestAdmitKeepAlive: the quota runs out during the first stream of a
// kept-alive v1 connection; the next request is refused by closing the
// connection (no fallback after the key was proved), with ErrNotAdmitted.
func TestAdmitKeepAlive(t *testing.T) {
	in := [][]byte{
		unhex("01" + aliceHex + "10 01 0050 01 01020304" + "0004 70696e67 0000"), // first header, chunk "ping", end
		unhex("10 01 01bb 02 01 61" + "0003 74776f 0000"),                        // next request to a:443, chunk "two", end
	}
	var over atomic.Bool
	var asked atomic.Int32
	admit := func(user string) bool {
		asked.Add(1)
		if user != "alice@example.com" {
			t.Errorf("Admit(%q)", user)
		}
		return !over.Load()
	}
	fc := vlesstest.NewFake(in...)
	h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
		io.ReadAll(conn)
		conn.Write([]byte("ok"))
		vlesstest.CloseWrite(conn)
		over.Store(true) // the quota ran out with this stream
		return conn.Close()
	}}
	err := v1Server(t, vlessserver.Options{Admit: admit}).ServeConn(context.Background(), fc, h)
	if !errors.Is(err, vlessserver.ErrNotAdmitted) || errors.Is(err, protocols.ErrNotProtocol) {
		t.Fatalf("ServeConn = %v; want ErrNotAdmitted without ErrNotProtocol", err)
	}
	if h.Calls() != 1 || asked.Load() != 2 {
		t.Errorf("handler calls %d, Admit asked %d times; want 1 and 2", h.Calls(), asked.Load())
	}
	want := [][]byte{unhex("0002 6f6b"), unhex("0000")} // the first stream only
	if w := fc.Writes(); !equalWrites(w, want) {
		t.Errorf("carrier writes %x\nwant %x", w, want)
	}
	if !fc.Closed() {
		t.Error("connection left open after a refused request")
	}
}
