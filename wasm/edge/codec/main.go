//go:build wasip1

// Command codec is the WebAssembly reactor the edge worker (wasm/edge)
// loads: Portico's VLESS v0 codec (protocols/vless) and VMess AEAD codec
// (protocols/vmess, see vmess.go) behind a few //go:wasmexport functions,
// built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags="-s -w" -o wasm/edge/codec.wasm ./wasm/edge/codec
//
// The host calls _initialize once, then exchanges bytes through two fixed
// buffers in linear memory: In (edge_in returns its address, InSize bytes)
// carries arguments, Out (edge_out, OutSize bytes) carries results. Every
// call is synchronous and allocation-light; nothing is retained between
// calls but the user list and, for VMess, the open sessions and the
// replay filter (vmess.go).
//
//	edge_users(n)     In[:n] is a comma-separated UUID list (for VLESS and,
//	                  unless edge_vmess_users overrides it, VMess); returns
//	                  the number of users, or -2 with the error in Out
//	edge_parse(n)     In[:n] starts a VLESS v0 request; returns the header
//	                  length (> 0, result in Out), 0 when more bytes are
//	                  needed, -1 for a well-formed version 0 prefix whose
//	                  UUID is no user's (decided at byte 17), -2 for anything
//	                  else that is not a VLESS v0 request (error in Out)
//	edge_response()   writes the v0 response header into Out; returns its length
//
// A parse result in Out is
//
//	command(1) user(2, BE, index in the list) id(16) port(2, BE)
//	kind(1: 0 none, 1 IP, 2 domain) hostLen(1) host flowLen(1) flow
//
// and an error is len(2, BE) then the Go error's message.
package main

import (
	"encoding/hex"
	"errors"
	"strings"
	"unsafe"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
)

// The buffer sizes: In holds the longest request header and a generous
// first payload (early data is at most a few KiB); Out the longest result.
const (
	InSize  = 16 << 10
	OutSize = 1 << 10
)

var (
	in    [InSize]byte
	out   [OutSize]byte
	users map[[16]byte]uint16
)

func main() {}

//go:wasmexport edge_in
func edgeIn() uint32 { return uint32(uintptr(unsafe.Pointer(&in[0]))) }

//go:wasmexport edge_out
func edgeOut() uint32 { return uint32(uintptr(unsafe.Pointer(&out[0]))) }

//go:wasmexport edge_users
func edgeUsers(n uint32) int32 {
	if n > InSize {
		return fail(errors.New("edge: user list too long"))
	}
	m, err := parseUsers(string(in[:n]))
	if err != nil {
		return fail(err)
	}
	users = m
	setVMessUsers(m) // the same users for VMess, unless edge_vmess_users follows
	return int32(len(m))
}

//go:wasmexport edge_parse
func edgeParse(n uint32) int32 {
	if n > InSize {
		n = InSize
	}
	b := in[:n]
	ok, err := vless.Match(b, func(id [16]byte) bool { _, ok := users[id]; return ok })
	switch {
	case err == protocols.ErrNeedMore:
		return 0
	case err != nil:
		return fail(err)
	case !ok:
		if len(b) > 0 && b[0] == vless.Version {
			return -1
		}
		_, _, err := vless.ParseRequest(b)
		return fail(err)
	}
	r, hl, err := vless.ParseRequest(b)
	if err == protocols.ErrNeedMore {
		return 0
	}
	if err != nil {
		return fail(err)
	}
	o := out[:0]
	u := users[r.ID]
	o = append(o, byte(r.Command), byte(u>>8), byte(u))
	o = append(o, r.ID[:]...)
	o = append(o, byte(r.Target.Port>>8), byte(r.Target.Port))
	switch {
	case r.Target.IsDomain():
		o = append(o, 2)
	case r.Target.IP.IsValid():
		o = append(o, 1)
	default:
		o = append(o, 0)
	}
	host := r.Target.Host()
	o = append(o, byte(len(host)))
	o = append(o, host...)
	o = append(o, byte(len(r.Addons.Flow)))
	o = append(o, r.Addons.Flow...)
	return int32(hl)
}

//go:wasmexport edge_response
func edgeResponse() int32 {
	o, err := vless.AppendResponse(out[:0], &vless.ResponseHeader{})
	if err != nil {
		return fail(err)
	}
	return int32(len(o))
}

// fail writes err's message into Out and returns -2.
func fail(err error) int32 {
	msg := err.Error()
	if len(msg) > OutSize-2 {
		msg = msg[:OutSize-2]
	}
	out[0], out[1] = byte(len(msg)>>8), byte(len(msg))
	copy(out[2:], msg)
	return -2
}

// parseUsers reads a comma-separated list of UUIDs (spaces allowed).
func parseUsers(s string) (map[[16]byte]uint16, error) {
	m := map[[16]byte]uint16{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, err := parseUUID(f)
		if err != nil {
			return nil, err
		}
		if _, dup := m[id]; dup {
			return nil, errors.New("edge: duplicate UUID in the user list")
		}
		if len(m) >= 1<<16-1 {
			return nil, errors.New("edge: too many users")
		}
		m[id] = uint16(len(m))
	}
	if len(m) == 0 {
		return nil, errors.New("edge: the user list is empty")
	}
	return m, nil
}

// parseUUID reads a UUID in its 36-character text form or as 32 hex digits
// (as wasm/api does: github.com/google/uuid would pull in net).
func parseUUID(s string) ([16]byte, error) {
	var id [16]byte
	h := s
	if len(s) == 36 {
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return id, errors.New("edge: bad UUID in the user list")
		}
		h = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	}
	if len(h) != 32 {
		return id, errors.New("edge: bad UUID in the user list: want 36 characters")
	}
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, errors.New("edge: bad UUID in the user list")
	}
	return id, nil
}
