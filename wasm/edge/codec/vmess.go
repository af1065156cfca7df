//go:build wasip1

package main

// VMess (AEAD header, alterId 0) over protocols/vmess for the edge worker.
// Nothing of VMess is in JavaScript: the worker hands bytes in and gets
// bytes out.
//
//	edge_vmess_users(n)    In[:n] is a comma-separated UUID list for VMess
//	                       (edge_users sets the same list for both
//	                       protocols; this overrides VMess's); returns the
//	                       number of users, or -2 with the error in Out
//	edge_vmess_open(n, now) In[:n] starts a VMessAEAD request; now is Unix
//	                       seconds. Returns the header length (> 0) and
//	                       opens a session (result in Out), 0 when more
//	                       bytes are needed, -1 when the first 16 bytes are
//	                       no user's AuthID (decided at byte 16), -2 for
//	                       anything else (clock skew, replayed AuthID, a
//	                       header that fails authentication or does not
//	                       parse; error in Out)
//	edge_data()            the address of Data (DataSize bytes): stream input
//	edge_dout()            the address of DOut (DOutSize bytes): stream output
//	edge_vmess_body(sid, n) Data[:n] (n <= DataSize) are the next request
//	                       body bytes from the client; decodes every whole
//	                       chunk and writes the payloads to DOut. Returns
//	                       their length, with bit 30 set once the
//	                       end-of-stream chunk was seen; -2 on a chunk that
//	                       fails (error in Out)
//	edge_vmess_seal(sid, n) seals Data[:n] as response chunks into DOut
//	                       (the response header in front, the first time);
//	                       returns the length, or -2
//	edge_vmess_seal_end(sid) the end-of-stream chunk (after the response
//	                       header if none went yet) into DOut; its length
//	edge_vmess_close(sid)  forgets the session
//
// An open result in Out is
//
//	sid(4, BE) command(1) security(1) options(1) user(2, BE) port(2, BE)
//	kind(1: 0 none, 1 IP, 2 domain) hostLen(1) host
//
// Replays: the worker has no memory shared between isolates, so the
// AuthID filter (replayFilter) is per instance of this module, that is per
// isolate: a handshake replayed to another isolate (another colo, or the
// same colo after the isolate was evicted) is not caught there.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"runtime"
	"unsafe"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess"
)

const (
	// DataSize is the most bytes the worker passes per body call.
	DataSize = 64 << 10
	// DOutSize holds the payloads of DataSize bytes plus one incomplete
	// chunk kept from the call before, or DataSize sealed bytes with their
	// chunk overhead and the response header.
	DOutSize = DataSize + vmess.MaxChunkLen + 4<<10
	// MaxAuthIDs bounds the replay filter: at most this many handshakes in
	// 2×120 s per isolate (about 270 a second); beyond it new VMess
	// handshakes are refused until AuthIDs expire, never let through
	// unchecked.
	MaxAuthIDs = 1 << 16
	// eofBit is set in edge_vmess_body's result after the end chunk.
	eofBit = 1 << 30
)

var (
	data     [DataSize]byte
	dout     [DOutSize]byte
	vkeys    []*vmess.UserKey
	sessions = map[uint32]*vmessSession{}
	nextSID  uint32
	replay   = replayFilter{m: map[[16]byte]int64{}}
)

// vmessSession is one tunnel's two chunk streams.
type vmessSession struct {
	open    *vmess.Opener
	seal    *vmess.Sealer
	resp    []byte // the response header until it goes out with the first chunk
	pending []byte // request body bytes short of a whole chunk
	eof     bool
}

//go:wasmexport edge_data
func edgeData() uint32 { return uint32(uintptr(unsafe.Pointer(&data[0]))) }

//go:wasmexport edge_dout
func edgeDOut() uint32 { return uint32(uintptr(unsafe.Pointer(&dout[0]))) }

//go:wasmexport edge_vmess_users
func edgeVMessUsers(n uint32) int32 {
	if n > InSize {
		return fail(errors.New("edge: user list too long"))
	}
	m, err := parseUsers(string(in[:n]))
	if err != nil {
		return fail(err)
	}
	setVMessUsers(m)
	return int32(len(m))
}

// setVMessUsers derives each user's keys (index = the user's number).
func setVMessUsers(m map[[16]byte]uint16) {
	keys := make([]*vmess.UserKey, len(m))
	for id, i := range m {
		keys[i] = vmess.NewUserKey(id)
	}
	vkeys = keys
}

//go:wasmexport edge_vmess_open
func edgeVMessOpen(n uint32, now int64) int32 {
	if n > InSize {
		n = InSize
	}
	b := in[:n]
	if len(b) < 16 {
		return 0
	}
	i, ts, ok := vmess.FindAuthID(vkeys, b[:16])
	if !ok {
		return -1
	}
	if err := vmess.CheckTime(ts, now); err != nil {
		return fail(fmt.Errorf("user #%d: %w", i, err))
	}
	authID := [16]byte(b[:16])
	if replay.contains(authID, now) {
		return fail(fmt.Errorf("vmess: replayed auth id (user #%d): seen in this isolate in the last %d s", i, 2*vmess.MaxTimeSkew))
	}
	req, hl, err := vmess.OpenAEADRequest(vkeys[i], b)
	if err == protocols.ErrNeedMore {
		return 0
	}
	if err != nil {
		return fail(fmt.Errorf("user #%d: %w", i, err))
	}
	if !replay.add(authID, ts+vmess.MaxTimeSkew+1, now) {
		return fail(fmt.Errorf("vmess: replay filter full (%d handshakes in %d s in this isolate)", MaxAuthIDs, 2*vmess.MaxTimeSkew))
	}
	sess := req.Session(false)
	s := &vmessSession{}
	if s.open, err = sess.RequestOpener(); err != nil {
		return fail(err)
	}
	if s.resp, s.seal, err = sess.AppendResponse(nil, &vmess.Response{Auth: req.ResponseAuth}, newPadSource()); err != nil {
		return fail(err)
	}
	nextSID++
	for sessions[nextSID] != nil || nextSID == 0 {
		nextSID++
	}
	sid := nextSID
	sessions[sid] = s

	o := out[:0]
	o = append(o, byte(sid>>24), byte(sid>>16), byte(sid>>8), byte(sid))
	o = append(o, byte(req.Command), byte(req.Security), byte(req.Options), byte(i>>8), byte(i))
	o = append(o, byte(req.Target.Port>>8), byte(req.Target.Port))
	switch {
	case req.Target.IsDomain():
		o = append(o, 2)
	case req.Target.IP.IsValid():
		o = append(o, 1)
	default:
		o = append(o, 0)
	}
	host := req.Target.Host()
	o = append(o, byte(len(host)))
	o = append(o, host...)
	return int32(hl)
}

//go:wasmexport edge_vmess_body
func edgeVMessBody(sid, n uint32) int32 {
	s := sessions[sid]
	if s == nil {
		return fail(errors.New("edge: no such VMess session"))
	}
	if n > DataSize {
		n = DataSize
	}
	if s.eof {
		return eofBit // bytes after the end chunk are ignored
	}
	src := data[:n]
	if len(s.pending) > 0 {
		s.pending = append(s.pending, src...)
		src = s.pending
	}
	o := dout[:0]
	for len(src) > 0 {
		p, used, err := s.open.Open(src)
		if err == protocols.ErrNeedMore {
			break
		}
		if err == io.EOF {
			s.eof = true
			src = nil
			break
		}
		if err != nil {
			return fail(err)
		}
		o = append(o, p...)
		src = src[used:]
	}
	// Keep what is short of a whole chunk (bytes the opener may have
	// looked at already: it wants them again, followed by more).
	s.pending = append(s.pending[:0], src...)
	r := int32(len(o))
	if s.eof {
		r |= eofBit
	}
	return r
}

//go:wasmexport edge_vmess_seal
func edgeVMessSeal(sid, n uint32) int32 {
	s := sessions[sid]
	if s == nil {
		return fail(errors.New("edge: no such VMess session"))
	}
	if n > DataSize {
		n = DataSize
	}
	o := append(dout[:0], s.resp...)
	s.resp = nil
	o = s.seal.Seal(o, data[:n])
	return int32(len(o))
}

//go:wasmexport edge_vmess_seal_end
func edgeVMessSealEnd(sid uint32) int32 {
	s := sessions[sid]
	if s == nil {
		return fail(errors.New("edge: no such VMess session"))
	}
	o := append(dout[:0], s.resp...)
	s.resp = nil
	o = s.seal.SealEnd(o)
	return int32(len(o))
}

//go:wasmexport edge_vmess_close
func edgeVMessClose(sid uint32) { delete(sessions, sid) }

// edge_gc allocates 32 MiB of garbage, which starts background
// collections as VMess sessions do over time, then collects: the self-test
// route proves the runtime can collect inside a Worker (its scheduler
// sleeps through poll_oneoff while a timer is pending).
//
//go:wasmexport edge_gc
func edgeGC() int32 {
	var keep []byte
	for range 512 {
		keep = make([]byte, 64<<10)
		keep[0] = 1
	}
	runtime.GC()
	return int32(keep[0])
}

// newPadSource is where chunk padding comes from: a ChaCha8 stream seeded
// from crypto/rand (crypto.getRandomValues) per session, as vmessserver
// does. Padding hides only lengths; V2Ray fills it from math/rand.
func newPadSource() *mathrand.ChaCha8 {
	var seed [32]byte
	rand.Read(seed[:])
	return mathrand.NewChaCha8(seed)
}

// replayFilter remembers each accepted AuthID until its time leaves the
// ±120 s window (exact: no false positives, unlike V2Ray's cuckoo filter),
// at most MaxAuthIDs of them; full, it refuses new ones rather than forget
// live ones. Only AuthIDs of whole, authenticated headers are added, so
// only a user (or a replay of a user's handshake) can fill it.
type replayFilter struct {
	m     map[[16]byte]int64 // AuthID -> the second it expires
	swept int64
}

func (f *replayFilter) sweep(now int64) {
	if now == f.swept {
		return
	}
	for k, exp := range f.m {
		if exp <= now {
			delete(f.m, k)
		}
	}
	f.swept = now
}

func (f *replayFilter) contains(k [16]byte, now int64) bool {
	exp, ok := f.m[k]
	return ok && exp > now
}

// add records k until expire; false when the filter is full.
func (f *replayFilter) add(k [16]byte, expire, now int64) bool {
	if len(f.m) >= MaxAuthIDs || now-f.swept >= 10 {
		f.sweep(now)
	}
	if len(f.m) >= MaxAuthIDs {
		return false
	}
	f.m[k] = expire
	return true
}
