package vmess

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/portico-gw/portico/protocols"
)

// The fuzz targets, one per decoder. Their seeds are in testdata/fuzz,
// made by fuzzSeeds from the V2Ray captures and from the codec's own
// output (TestFuzzSeeds keeps them in step: -args -update rewrites them).

// fuzzSeeds returns the seed corpus of every target, by name.
func fuzzSeeds(t testing.TB) map[string]map[string][]byte {
	seeds := map[string]map[string][]byte{}
	add := func(target, name string, b []byte) {
		if seeds[target] == nil {
			seeds[target] = map[string][]byte{}
		}
		seeds[target][name] = b
	}
	key := NewUserKey(katID)
	for _, k := range katFiles(t) {
		if _, _, ok := key.OpenAuthID(k.request); ok {
			add("FuzzOpenAEADRequest", k.name, k.request)
		} else {
			// Legacy: the fuzz input is the time, then the bytes after the auth.
			for ts := k.time - 40; ts <= k.time+40; ts++ {
				for _, id := range AlterIDs(katID, k.alterID) {
					if a := LegacyAuth(id, ts); bytes.Equal(a[:], k.request[:16]) {
						add("FuzzOpenLegacyRequest", k.name, append(binary.BigEndian.AppendUint64(nil, uint64(ts)), k.request[16:]...))
					}
				}
			}
		}
		if k.response != nil {
			r, _, legacy, _ := openKATRequestQuiet(key, k)
			add("FuzzOpenResponse", k.name, append(responseFuzzPrefix(&r, legacy), k.response...))
		}
	}
	add("FuzzParseRequest", "vector", withFNV(bytes.Clone(requestVector)))
	r := testRequest()
	r.Command, r.Target, r.Padding = CommandMux, protocols.Addr{}, nil
	mux, _ := AppendRequest(nil, &r)
	add("FuzzParseRequest", "mux", mux)
	r = testRequest()
	wire, _ := AppendAEADRequest(nil, key, testSeed, &r)
	add("FuzzOpenAEADRequest", "codec", wire)
	leg, _ := AppendLegacyRequest(nil, LegacyAuth(katID, testSeed.Time), key.CmdKey, testSeed.Time, &r)
	add("FuzzOpenLegacyRequest", "codec", append(binary.BigEndian.AppendUint64(nil, uint64(testSeed.Time)), leg[16:]...))

	targets := map[Security]string{SecurityAES128GCM: "FuzzChunksAES128GCM", SecurityChaCha20Poly1305: "FuzzChunksChaCha20Poly1305",
		SecurityNone: "FuzzChunksNone", SecurityLegacy: "FuzzChunksAES128CFB"}
	for _, c := range bodyConfigs {
		target := targets[c.sec]
		if c.sec == SecurityNone && c.opts == 0 {
			target = "FuzzChunksZero"
		}
		s := session(c, false)
		sealer, _ := s.RequestSealer(nil)
		stream := sealer.SealEnd(sealer.Seal(sealer.Seal(nil, []byte("hello vmess")), seq(300, 0)))
		add(target, fmt.Sprintf("opts_%02x", byte(c.opts)), append([]byte{byte(c.opts)}, stream...))
	}
	return seeds
}

func openKATRequestQuiet(key *UserKey, k *kat) (Request, int, bool, error) {
	if _, _, ok := key.OpenAuthID(k.request); ok {
		r, n, err := OpenAEADRequest(key, k.request)
		return r, n, false, err
	}
	for ts := k.time - 40; ts <= k.time+40; ts++ {
		for _, id := range AlterIDs(katID, k.alterID) {
			if a := LegacyAuth(id, ts); bytes.Equal(a[:], k.request[:16]) {
				r, n, err := OpenLegacyRequest(key.CmdKey, ts, k.request[16:])
				return r, n + 16, true, err
			}
		}
	}
	return Request{}, 0, false, errors.New("not found")
}

// responseFuzzPrefix: legacy (1) ‖ key (16) ‖ IV (16) ‖ V (1) ‖ security (1) ‖ options (1).
func responseFuzzPrefix(r *Request, legacy bool) []byte {
	b := []byte{0}
	if legacy {
		b[0] = 1
	}
	b = append(b, r.Key[:]...)
	b = append(b, r.IV[:]...)
	return append(b, r.ResponseAuth, byte(r.Security), byte(r.Options))
}

const responseFuzzPrefixLen = 1 + 16 + 16 + 3

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseRequest(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			return
		}
		if n < MinRequestLen || n > MaxRequestLen || n > len(b) {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		wire, err := AppendRequest(nil, &r)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", r, err)
		}
		r2, n2, err := ParseRequest(wire)
		if err != nil || n2 != len(wire) || !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-encoded request parses to %+v, %v", r2, err)
		}
		for i := range wire {
			if _, _, err := ParseRequest(wire[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
	})
}

func FuzzOpenAEADRequest(f *testing.F) {
	key := NewUserKey(katID)
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		r, n, err := OpenAEADRequest(key, b)
		if !bytes.Equal(in, b) {
			t.Fatal("OpenAEADRequest modified its input")
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			return
		}
		if n > len(b) || n > MaxAEADHeaderLen {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		ts, rnd, ok := key.OpenAuthID(b)
		if !ok {
			t.Fatal("opened a header whose AuthID does not open")
		}
		again, err := AppendAEADRequest(nil, key, AEADSeed{Time: ts, AuthRand: rnd, Nonce: [8]byte(b[34:42])}, &r)
		if err != nil || !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded header differs: %x, %v", again, err)
		}
		for i := range n {
			if _, _, err := OpenAEADRequest(key, b[:i]); err != protocols.ErrNeedMore {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
	})
}

func FuzzOpenLegacyRequest(f *testing.F) {
	key := NewUserKey(katID)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 8 {
			return
		}
		ts := int64(binary.BigEndian.Uint64(b))
		body := b[8:]
		in := bytes.Clone(body)
		r, n, err := OpenLegacyRequest(key.CmdKey, ts, body)
		if !bytes.Equal(in, body) {
			t.Fatal("OpenLegacyRequest modified its input")
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			return
		}
		if n > len(body) || n > MaxRequestLen {
			t.Fatalf("n=%d for %d bytes", n, len(body))
		}
		var auth [16]byte
		again, err := AppendLegacyRequest(nil, auth, key.CmdKey, ts, &r)
		if err != nil || !bytes.Equal(again[16:], body[:n]) {
			t.Fatalf("re-encoded header differs: %x, %v", again, err)
		}
	})
}

func FuzzOpenResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < responseFuzzPrefixLen {
			return
		}
		s := Session{Key: [16]byte(b[1:17]), IV: [16]byte(b[17:33]), ResponseAuth: b[33], Security: Security(b[34]), Options: Option(b[35]), Legacy: b[0]&1 == 1}
		if checkRequest(s.Security, s.Options, CommandTCP) != nil {
			return
		}
		wire := b[responseFuzzPrefixLen:]
		in := bytes.Clone(wire)
		h, n, o, err := s.OpenResponse(wire)
		if !bytes.Equal(in, wire) {
			t.Fatal("OpenResponse modified its input")
		}
		if err != nil {
			if n != 0 || o != nil {
				t.Fatalf("error %v with n=%d", err, n)
			}
			return
		}
		if n > len(wire) || h.Auth != s.ResponseAuth {
			t.Fatalf("n=%d of %d, auth %d", n, len(wire), h.Auth)
		}
		fuzzOpen(t, o, bytes.Clone(wire[n:]))
	})
}

// fuzzOpen drives o over stream the way a connection does and checks the
// Opener's promises.
func fuzzOpen(t *testing.T, o *Opener, stream []byte) {
	for step := 0; step < 1000; step++ {
		need := o.Need()
		if need < 1 || need > MaxChunkLen {
			t.Fatalf("Need() = %d", need)
		}
		p, n, err := o.Open(stream)
		switch {
		case err == nil:
			if n <= 0 || n > len(stream) || len(p) > n {
				t.Fatalf("Open used %d of %d bytes for %d payload bytes", n, len(stream), len(p))
			}
			stream = stream[n:]
		case err == protocols.ErrNeedMore:
			if n != 0 || len(stream) >= o.Need() && o.Framed() {
				t.Fatalf("ErrNeedMore with %d bytes, Need %d, n %d", len(stream), o.Need(), n)
			}
			return
		case err == io.EOF, errors.Is(err, ErrChunk), errors.Is(err, ErrChunkSize):
			if _, _, again := o.Open(stream); again != err {
				t.Fatalf("error not sticky: %v then %v", err, again)
			}
			return
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
}

// fuzzChunks fuzzes one security's body decoder; the first input byte is
// the option bits (ignored for zero, which has none).
func fuzzChunks(f *testing.F, sec Security, zero bool) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 1 {
			return
		}
		c := bodyConfig{sec, Option(b[0])}
		if zero {
			c.opts = 0
		}
		s := session(c, false)
		o, err := s.RequestOpener()
		if err != nil {
			return
		}
		fuzzOpen(t, o, bytes.Clone(b[1:]))
		// What the sealer makes of the same bytes opens back.
		sealer, _ := s.RequestSealer(nil)
		o, _ = s.RequestOpener()
		stream := sealer.SealEnd(sealer.Seal(nil, b[1:]))
		got, err := openAll(o, stream, 0)
		if !bytes.Equal(got, b[1:]) || sealer.Framed() && err != io.EOF {
			t.Fatalf("round trip of %d bytes: %d bytes, %v", len(b)-1, len(got), err)
		}
	})
}

func FuzzChunksAES128GCM(f *testing.F)        { fuzzChunks(f, SecurityAES128GCM, false) }
func FuzzChunksChaCha20Poly1305(f *testing.F) { fuzzChunks(f, SecurityChaCha20Poly1305, false) }
func FuzzChunksNone(f *testing.F)             { fuzzChunks(f, SecurityNone, false) }
func FuzzChunksZero(f *testing.F)             { fuzzChunks(f, SecurityNone, true) }
func FuzzChunksAES128CFB(f *testing.F)        { fuzzChunks(f, SecurityLegacy, false) }

// TestFuzzSeeds keeps testdata/fuzz in step with the captures and the
// codec.
func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds(t)
	targets := make([]string, 0, len(seeds))
	for name := range seeds {
		targets = append(targets, name)
	}
	sort.Strings(targets)
	for _, target := range targets {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			os.RemoveAll(dir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, b := range seeds[target] {
			path := filepath.Join(dir, name)
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if *update {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s is stale or missing (err %v); run go test ./protocols/vmess -run TestFuzzSeeds -args -update", path, err)
			}
		}
	}
	if !strings.Contains(strings.Join(targets, " "), "FuzzChunksZero") || len(targets) != 9 {
		t.Errorf("seeded targets: %v", targets)
	}
}
