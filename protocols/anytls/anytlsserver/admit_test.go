package anytlsserver_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/anytls/internal/anytlstest"
	"github.com/portico-gw/portico/protocols/tunnel"
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
	wrote       bool
	closed      bool
	users       string // the Request.User of each stream the handler got
}

// TestAdmit: with two users and an Admit that refuses one (bob, who has no
// email and so goes by his Label), the admitted user gets a session and a
// stream, and the refused one is turned away exactly as a wrong password
// is: ErrNotProtocol, nothing written, conn open, no handler; Match says no
// to both. Admit is asked with the label; a nil Admit admits everyone.
func TestAdmit(t *testing.T) {
	const bobPassword = "bob's password"
	bobLabel := anytlsserver.Label(bobPassword)
	users := []anytlsserver.User{alice, {Password: bobPassword}}
	hello := func(password string) []byte {
		var b []byte
		b = append(b, authBytes(password, 30)...)
		b = append(b, settings("2", defaultMD5)...)
		b = append(b, anytlstest.Frame(cmdSYN, 1, "")...)
		return append(b, anytlstest.Frame(cmdPSH, 1, domainTarget("example.com", 443))...)
	}
	refused := outcome{notProtocol: true}
	tests := []struct {
		name     string
		admit    bool // set Options.Admit
		password string
		want     outcome
		cause    error
		asked    []string
		match    bool
		reason   error
	}{
		{"admitted", true, alicePassword, outcome{wrote: true, closed: true, users: "alice@example.com"}, nil, []string{"alice@example.com"}, true, nil},
		{"not admitted", true, bobPassword, refused, anytlsserver.ErrNotAdmitted, []string{bobLabel}, false, anytlsserver.ErrNotAdmitted},
		{"wrong password", true, "wrong", refused, anytlsserver.ErrUnknownUser, nil, false, anytlsserver.ErrUnknownUser},
		{"no Admit", false, bobPassword, outcome{wrote: true, closed: true, users: bobLabel}, nil, nil, true, nil},
	}
	results := map[string]outcome{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &admitRecorder{refuse: []string{bobLabel}}
			opts := anytlsserver.Options{Users: users}
			if tt.admit {
				opts.Admit = rec.admit
			}
			srv, err := anytlsserver.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			b := hello(tt.password)
			ok, merr := srv.Match(b)
			if ok != tt.match || !errors.Is(merr, tt.reason) || (tt.reason == nil) != (merr == nil) {
				t.Errorf("Match = %v, %v; want %v, %v", ok, merr, tt.match, tt.reason)
			}
			if asked := rec.reset(); !slices.Equal(asked, tt.asked) {
				t.Errorf("Match asked Admit about %q; want %q", asked, tt.asked)
			}
			var mu sync.Mutex
			var streams []string
			h := handlerFunc(func(ctx context.Context, c net.Conn, req tunnel.Request) error {
				mu.Lock()
				streams = append(streams, req.User)
				mu.Unlock()
				c.(tunnel.DialReporter).ReportDial(nil)
				return c.Close()
			})
			c := newFake(b)
			err = srv.ServeConn(context.Background(), c, h)
			mu.Lock()
			got := outcome{errors.Is(err, protocols.ErrNotProtocol), c.wrote() > 0, c.isClosed(), strings.Join(streams, ",")}
			mu.Unlock()
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
	if results["not admitted"] != results["wrong password"] {
		t.Errorf("a refused user %+v and a wrong password %+v are told apart", results["not admitted"], results["wrong password"])
	}
}
