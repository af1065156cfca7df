package api

import (
	"encoding/binary"
	"fmt"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess"
)

// VMessSeal are the arguments of vmess.sealHeader. AlterID > 0 seals the
// legacy MD5 header with one of the user's alter ids (AlterIndex, 0-based,
// or one at random); 0 the VMessAEAD header. Time defaults to the Env's
// clock. Every random value may be fixed (hex); the absent ones are drawn
// from the Env. Security "auto" resolves for the machine that runs the
// code: chacha20-poly1305 in WebAssembly.
type VMessSeal struct {
	ID         string `json:"id"`
	AlterID    int    `json:"alterId,omitempty"`
	Security   string `json:"security"`
	Command    string `json:"command"`
	Target     string `json:"target"`
	Time       *int64 `json:"time,omitempty"`
	AuthLen    bool   `json:"authLen,omitempty"` // OptionAuthenticatedLength, for the AEAD securities
	Key        Bytes  `json:"key,omitempty"`     // 16: request body key
	IV         Bytes  `json:"iv,omitempty"`      // 16: request body IV
	V          *int   `json:"responseAuth,omitempty"`
	Padding    *Bytes `json:"padding,omitempty"`  // 0..15 bytes
	AuthRand   Bytes  `json:"authRand,omitempty"` // 4 (AEAD)
	Nonce      Bytes  `json:"nonce,omitempty"`    // 8 (AEAD)
	AlterIndex *int   `json:"alterIndex,omitempty"`
}

// MaxOpenAlterID bounds the alter ids vmess.openHeader tries: each costs
// 241 HMACs (every second of the window).
const MaxOpenAlterID = 1024

// VMessOpen are the arguments of vmess.openHeader. Time defaults to the
// Env's clock; AlterID lets a legacy header signed with an alter id open.
type VMessOpen struct {
	Bytes   Bytes  `json:"bytes"`
	ID      string `json:"id"`
	Time    *int64 `json:"time,omitempty"`
	AlterID int    `json:"alterId,omitempty"`
}

// VMessOpened is the result of vmess.openHeader.
type VMessOpened struct {
	Form         string   `json:"form"` // "aead" or "legacy"
	Time         int64    `json:"time"`
	AuthRand     Bytes    `json:"authRand,omitempty"`
	Nonce        Bytes    `json:"nonce,omitempty"`
	AlterIndex   *int     `json:"alterIndex,omitempty"` // legacy: which alter id signed; absent for the main id
	Key          Bytes    `json:"key"`
	IV           Bytes    `json:"iv"`
	ResponseAuth int      `json:"responseAuth"`
	Options      int      `json:"options"`
	OptionNames  []string `json:"optionNames"`
	Security     string   `json:"security"`
	Command      string   `json:"command"`
	Target       string   `json:"target,omitempty"`
	Padding      Bytes    `json:"padding"`
	Length       int      `json:"length"`
	Fields       []Field  `json:"fields"`
}

func vmessCommand(s string) (vmess.Command, error) {
	switch s {
	case "tcp":
		return vmess.CommandTCP, nil
	case "udp":
		return vmess.CommandUDP, nil
	case "mux":
		return vmess.CommandMux, nil
	}
	return 0, fmt.Errorf("command: %q is not tcp, udp or mux", s)
}

// SealVMessHeader is vmess.sealHeader: vmess.AppendAEADRequest or
// vmess.AppendLegacyRequest.
func SealVMessHeader(e Env, a *VMessSeal) (Bytes, error) {
	const name = "vmess.sealHeader"
	id, err := parseUUID(a.ID)
	if err != nil {
		return nil, fmt.Errorf("%s: id: %w", name, err)
	}
	sec, err := vmess.ParseSecurity(a.Security)
	if err != nil {
		return nil, err
	}
	cmd, err := vmessCommand(a.Command)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var target protocols.Addr
	if cmd != vmess.CommandMux || a.Target != "" {
		if target, err = protocols.ParseAddr(a.Target); err != nil {
			return nil, fmt.Errorf("%s: target: %w", name, err)
		}
	}
	ts := int64(0)
	if a.Time != nil {
		ts = *a.Time
	} else if ts, err = e.now(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := vmess.Request{Command: cmd, Target: target}
	r.Security, r.Options = vmess.ClientOptions(sec.Resolve(), a.AuthLen)
	if err := fixed(e, r.Key[:], a.Key, "key"); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := fixed(e, r.IV[:], a.IV, "iv"); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if a.V != nil {
		if *a.V < 0 || *a.V > 255 {
			return nil, fmt.Errorf("%s: responseAuth: %d is not a byte", name, *a.V)
		}
		r.ResponseAuth = byte(*a.V)
	} else {
		var v [1]byte
		if err := e.read(v[:]); err != nil {
			return nil, fmt.Errorf("%s: responseAuth: %w", name, err)
		}
		r.ResponseAuth = v[0]
	}
	if a.Padding != nil {
		r.Padding = *a.Padding // AppendRequest refuses more than 15
	} else {
		var p [16]byte
		if err := e.read(p[:]); err != nil {
			return nil, fmt.Errorf("%s: padding: %w", name, err)
		}
		r.Padding = p[1 : 1+p[0]%16]
	}
	if a.AlterID > 0 {
		ids := vmess.AlterIDs(id, a.AlterID)
		var i int
		if a.AlterIndex != nil {
			i = *a.AlterIndex
		} else {
			var p [4]byte
			if err := e.read(p[:]); err != nil {
				return nil, fmt.Errorf("%s: alterIndex: %w", name, err)
			}
			i = int(binary.BigEndian.Uint32(p[:]) % uint32(len(ids)))
		}
		if i < 0 || i >= len(ids) {
			return nil, fmt.Errorf("%s: alterIndex: %d is not in 0..%d", name, i, len(ids)-1)
		}
		return vmess.AppendLegacyRequest(nil, vmess.LegacyAuth(ids[i], ts), vmess.CmdKey(id), ts, &r)
	}
	seed := vmess.AEADSeed{Time: ts}
	if err := fixed(e, seed.AuthRand[:], a.AuthRand, "authRand"); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := fixed(e, seed.Nonce[:], a.Nonce, "nonce"); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return vmess.AppendAEADRequest(nil, vmess.NewUserKey(id), seed, &r)
}

// OpenVMessHeader is vmess.openHeader: it tries the AuthID of the AEAD form
// (vmess.UserKey.OpenAuthID, vmess.CheckTime, vmess.OpenAEADRequest), then
// the legacy auth of the main id and its AlterID alter ids at every second
// within vmess.MaxTimeSkew (vmess.OpenLegacyRequest). The error says why a
// header does not open.
func OpenVMessHeader(e Env, a *VMessOpen) (*VMessOpened, error) {
	const name = "vmess.openHeader"
	id, err := parseUUID(a.ID)
	if err != nil {
		return nil, fmt.Errorf("%s: id: %w", name, err)
	}
	now := int64(0)
	if a.Time != nil {
		now = *a.Time
	} else if now, err = e.now(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if a.AlterID < 0 || a.AlterID > MaxOpenAlterID {
		return nil, fmt.Errorf("%s: alterId: %d is not in 0..%d", name, a.AlterID, MaxOpenAlterID)
	}
	b := a.Bytes
	if len(b) < 16 {
		return nil, protocols.ErrNeedMore
	}
	key := vmess.NewUserKey(id)
	if ts, rnd, ok := key.OpenAuthID(b[:16]); ok {
		if err := vmess.CheckTime(ts, now); err != nil {
			return nil, err
		}
		r, n, err := vmess.OpenAEADRequest(key, b)
		if err != nil {
			return nil, err
		}
		o := opened(&r, n, "aead", ts)
		o.AuthRand = rnd[:]
		o.Nonce = Bytes(b[34:42])
		o.Fields = []Field{{"auth id", 0, 16}, {"sealed length", 16, 18}, {"nonce", 34, 8}, {"sealed command", 42, n - 42}}
		return o, nil
	}
	ids := append([][16]byte{id}, vmess.AlterIDs(id, a.AlterID)...)
	for ts := now - vmess.MaxTimeSkew; ts <= now+vmess.MaxTimeSkew; ts++ {
		for i, x := range ids {
			if vmess.LegacyAuth(x, ts) != [16]byte(b[:16]) {
				continue
			}
			r, n, err := vmess.OpenLegacyRequest(vmess.CmdKey(id), ts, b[16:])
			if err != nil {
				return nil, err
			}
			o := opened(&r, 16+n, "legacy", ts)
			if i > 0 {
				i--
				o.AlterIndex = &i
			}
			o.Fields = []Field{{"auth", 0, 16}, {"encrypted command", 16, n}}
			return o, nil
		}
	}
	return nil, fmt.Errorf("%w: neither the AuthID of this id nor a legacy auth of it (alterId %d) within %d s of %d",
		vmess.ErrAuth, a.AlterID, vmess.MaxTimeSkew, now)
}

func opened(r *vmess.Request, n int, form string, ts int64) *VMessOpened {
	o := &VMessOpened{
		Form: form, Time: ts, Key: r.Key[:], IV: r.IV[:], ResponseAuth: int(r.ResponseAuth),
		Options: int(r.Options), OptionNames: []string{}, Security: r.Security.String(), Command: r.Command.String(),
		Padding: Bytes(append([]byte{}, r.Padding...)), Length: n,
	}
	if r.Command != vmess.CommandMux {
		o.Target = r.Target.String()
	}
	for _, opt := range []struct {
		bit  vmess.Option
		name string
	}{
		{vmess.OptionChunkStream, "chunkStream"},
		{vmess.OptionConnectionReuse, "connectionReuse"},
		{vmess.OptionChunkMasking, "chunkMasking"},
		{vmess.OptionGlobalPadding, "globalPadding"},
		{vmess.OptionAuthenticatedLength, "authenticatedLength"},
	} {
		if r.Options.Has(opt.bit) {
			o.OptionNames = append(o.OptionNames, opt.name)
		}
	}
	return o
}
