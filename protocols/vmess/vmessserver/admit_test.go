package vmessserver_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/tunnel"
	"github.com/portico-gw/portico/protocols/vmess"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmesstest"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// admitRecorder is an Options.Admit that refuses the labels in refuse
// (while refusing is on) and records every label it is asked about.
type admitRecorder struct {
	refuse []string
	off    atomic.Bool // admit everyone
	mu     sync.Mutex
	asked  []string
}

func (a *admitRecorder) admit(user string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, user)
	return a.off.Load() || !slices.Contains(a.refuse, user)
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
	bobLabel := vmessserver.Label(bob)
	aead := func(id [16]byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return aeadHello(t, id, t0, request(vmess.SecurityAES128GCM)) }
	}
	legacyBob := func(t *testing.T) []byte {
		return legacyHello(t, bob, alter(bob, 1), t0, request(vmess.SecurityAES128GCM))
	}
	tunnelled := outcome{writes: 1, closed: true, calls: 1} // the response header with "ok"
	refused := outcome{notProtocol: true}
	tests := []struct {
		name   string
		admit  bool // set Options.Admit
		hello  func(t *testing.T) []byte
		want   outcome
		cause  error
		asked  []string
		match  bool
		reason error
	}{
		{"admitted", true, aead(alice), tunnelled, nil, []string{"alice@example.com"}, true, nil},
		{"not admitted", true, aead(bob), refused, vmessserver.ErrNotAdmitted, []string{bobLabel}, false, vmessserver.ErrNotAdmitted},
		{"not admitted, legacy", true, legacyBob, refused, vmessserver.ErrNotAdmitted, []string{bobLabel}, false, vmessserver.ErrNotAdmitted},
		{"unknown id", true, aead(eve), refused, vmessserver.ErrUnknownUser, nil, false, vmessserver.ErrUnknownUser},
		{"no Admit", false, aead(bob), tunnelled, nil, nil, true, nil},
	}
	results := map[string]outcome{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &admitRecorder{refuse: []string{bobLabel}}
			opts := vmessserver.Options{AllowLegacy: true}
			if tt.admit {
				opts.Admit = rec.admit
			}
			f := newFixture(t, opts)
			hello := tt.hello(t)
			ok, merr := f.srv.Match(hello)
			if ok != tt.match || !errors.Is(merr, tt.reason) || (tt.reason == nil) != (merr == nil) {
				t.Errorf("Match = %v, %v; want %v, %v", ok, merr, tt.match, tt.reason)
			}
			if asked := rec.reset(); !slices.Equal(asked, tt.asked) {
				t.Errorf("Match asked Admit about %q; want %q", asked, tt.asked)
			}
			fc := vmesstest.NewFake(hello)
			h := &handlerFunc{f: func(ctx context.Context, conn net.Conn, req tunnel.Request) error {
				conn.Write([]byte("ok"))
				return conn.Close()
			}}
			err := f.srv.ServeConn(context.Background(), fc.Half(), h)
			got := outcome{errors.Is(err, protocols.ErrNotProtocol), len(fc.Writes()), fc.Closed() || fc.ClosedWrite(), h.Calls()}
			if got != tt.want {
				t.Errorf("outcome %+v (err %v); want %+v", got, err, tt.want)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) || tt.cause == nil && err != nil {
				t.Errorf("ServeConn = %v; want %v", err, tt.cause)
			}
			if asked := rec.reset(); !slices.Equal(asked, tt.asked) {
				t.Errorf("ServeConn asked Admit about %q; want %q", asked, tt.asked)
			}
			results[tt.name] = got
		})
	}
	if results["not admitted"] != results["unknown id"] {
		t.Errorf("a refused user %+v and an unknown id %+v are told apart", results["not admitted"], results["unknown id"])
	}
}

// TestAdmitReplayFilter: a refused handshake does not consume its AuthID,
// as an unknown id consumes nothing; once admitted, the same bytes get in
// (once: then the AuthID is recorded as usual).
func TestAdmitReplayFilter(t *testing.T) {
	rec := &admitRecorder{refuse: []string{"alice@example.com"}}
	f := newFixture(t, vmessserver.Options{Admit: rec.admit})
	hello := aeadHello(t, alice, t0, request(vmess.SecurityAES128GCM))
	if _, err := f.serve(t, nil, hello); !errors.Is(err, vmessserver.ErrNotAdmitted) || !errors.Is(err, protocols.ErrNotProtocol) {
		t.Fatalf("refused: %v", err)
	}
	rec.off.Store(true)
	if _, err := f.serve(t, nil, hello); err != nil {
		t.Fatalf("admitted after a refusal: %v", err)
	}
	if _, err := f.serve(t, nil, hello); !errors.Is(err, vmessserver.ErrReplay) {
		t.Fatalf("replayed: %v; want ErrReplay", err)
	}
}
