package socks

import (
	"bytes"
	"errors"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// Seeds beyond these live in testdata/fuzz/<FuzzName>/.

// checkPrefixes asserts that every proper prefix of msg needs more bytes.
func checkPrefixes(t *testing.T, msg []byte, parse func([]byte) error) {
	t.Helper()
	for i := range len(msg) {
		if err := parse(msg[:i]); err != protocols.ErrNeedMore {
			t.Fatalf("prefix %d of % x: err = %v, want ErrNeedMore", i, msg, err)
		}
	}
}

func FuzzParseGreeting(f *testing.F) {
	f.Add([]byte{5, 1, 0})
	f.Add([]byte{5, 2, 0, 2})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		methods, n, err := ParseGreeting(b)
		if err != nil {
			if n != 0 || methods != nil {
				t.Fatalf("error %v with n=%d methods=%v", err, n, methods)
			}
			return
		}
		if n > len(b) || len(methods) != n-2 {
			t.Fatalf("n=%d len=%d methods=%d", n, len(b), len(methods))
		}
		if len(methods) == 0 {
			return // AppendGreeting refuses an empty list
		}
		re, err := AppendGreeting(nil, methods...)
		if err != nil || !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded % x, %v; want % x", re, err, b[:n])
		}
		checkPrefixes(t, b[:n], func(p []byte) error { _, _, err := ParseGreeting(p); return err })
	})
}

func FuzzParseUserPass(f *testing.F) {
	f.Add([]byte("\x01\x05alice\x06secret"))
	f.Add([]byte("\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		user, pass, n, err := ParseUserPass(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			return
		}
		if n > len(b) {
			t.Fatalf("n=%d > len=%d", n, len(b))
		}
		re, err := AppendUserPass(nil, user, pass)
		if err != nil || !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded % x, %v; want % x", re, err, b[:n])
		}
		checkPrefixes(t, b[:n], func(p []byte) error { _, _, _, err := ParseUserPass(p); return err })
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, dst := range []protocols.Addr{v4, v6, domain} {
		b, err := AppendRequest(nil, CmdConnect, dst)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, dst, n, err := ParseRequest(b)
		if err != nil {
			if n != 0 || dst != (protocols.Addr{}) {
				t.Fatalf("error %v with n=%d dst=%v", err, n, dst)
			}
			if !errors.Is(err, protocols.ErrNeedMore) && !errors.Is(err, protocols.ErrBadAddr) &&
				!errors.Is(err, protocols.ErrNotProtocol) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n > len(b) || !dst.IsValid() {
			t.Fatalf("n=%d len=%d dst=%v", n, len(b), dst)
		}
		re, err := AppendRequest(nil, cmd, dst)
		if err != nil {
			t.Fatalf("re-encode %v: %v", dst, err)
		}
		cmd2, dst2, n2, err := ParseRequest(re)
		if err != nil || cmd2 != cmd || dst2 != dst || n2 != len(re) {
			t.Fatalf("round trip: %d %v %d %v; want %d %v", cmd2, dst2, n2, err, cmd, dst)
		}
		checkPrefixes(t, b[:n], func(p []byte) error { _, _, _, err := ParseRequest(p); return err })
	})
}

func FuzzParseReply(f *testing.F) {
	f.Add(AppendReply(nil, ReplySucceeded, protocols.Addr{}))
	f.Add(AppendReply(nil, ReplyConnectionRefused, v6))
	f.Add(AppendReply(nil, ReplySucceeded, domain))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, bind, n, err := ParseReply(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			return
		}
		if n > len(b) {
			t.Fatalf("n=%d > len=%d", n, len(b))
		}
		re := AppendReply(nil, rep, bind)
		rep2, bind2, _, err := ParseReply(re)
		if err != nil || rep2 != rep || bind2 != bind {
			t.Fatalf("round trip: %d %v %v; want %d %v", rep2, bind2, err, rep, bind)
		}
		checkPrefixes(t, b[:n], func(p []byte) error { _, _, _, err := ParseReply(p); return err })
	})
}
