package api

import (
	"fmt"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vless"
)

// VLESSRequest are the arguments of vless.encodeRequest. UDPMulti,
// KeepAlive, Resolve and PadLen are version 1's; Flow and Seed version 0's.
// A PadLen (even 0) adds the padding addon; the padding bytes themselves
// are not part of the header and are not returned.
type VLESSRequest struct {
	Version   int    `json:"version"`
	ID        string `json:"id"`
	Command   string `json:"command"` // "tcp", "udp" or "mux"
	Target    string `json:"target"`  // "host:port"; may be empty for a version 0 mux
	Flow      string `json:"flow,omitempty"`
	Seed      Bytes  `json:"seed,omitempty"`
	UDPMulti  bool   `json:"udpMulti,omitempty"`
	KeepAlive bool   `json:"keepAlive,omitempty"`
	Resolve   bool   `json:"resolve,omitempty"`
	PadLen    *int   `json:"padLen,omitempty"`
}

// VLESSDecoded is the result of vless.decodeRequest: the header's fields,
// the bytes it used (Length; for version 1 the PadLen padding bytes follow)
// and where each field lies.
type VLESSDecoded struct {
	Version   int     `json:"version"`
	ID        string  `json:"id"`
	Command   string  `json:"command"`
	Target    string  `json:"target,omitempty"`
	Flow      string  `json:"flow,omitempty"`
	Seed      Bytes   `json:"seed,omitempty"`
	UDPMulti  bool    `json:"udpMulti,omitempty"`
	KeepAlive bool    `json:"keepAlive,omitempty"`
	Resolve   bool    `json:"resolve,omitempty"`
	Padded    bool    `json:"padded,omitempty"`
	PadLen    int     `json:"padLen,omitempty"`
	Length    int     `json:"length"`
	Fields    []Field `json:"fields"`
}

func vlessCommand(s string) (vless.Command, error) {
	switch s {
	case "tcp":
		return vless.CommandTCP, nil
	case "udp":
		return vless.CommandUDP, nil
	case "mux":
		return vless.CommandMux, nil
	}
	return 0, fmt.Errorf("command: %q is not tcp, udp or mux", s)
}

// EncodeVLESSRequest is vless.encodeRequest: vless.AppendRequest or
// vless.AppendRequestV1.
func EncodeVLESSRequest(a *VLESSRequest) (Bytes, error) {
	const name = "vless.encodeRequest"
	id, err := parseUUID(a.ID)
	if err != nil {
		return nil, fmt.Errorf("%s: id: %w", name, err)
	}
	cmd, err := vlessCommand(a.Command)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var target protocols.Addr
	if a.Target != "" || cmd != vless.CommandMux || a.Version != 0 {
		if target, err = protocols.ParseAddr(a.Target); err != nil {
			return nil, fmt.Errorf("%s: target: %w", name, err)
		}
	}
	switch a.Version {
	case 0:
		if a.UDPMulti || a.KeepAlive || a.Resolve || a.PadLen != nil {
			return nil, fmt.Errorf("%s: udpMulti, keepAlive, resolve and padLen need version 1", name)
		}
		return vless.AppendRequest(nil, &vless.RequestHeader{
			ID: id, Addons: vless.Addons{Flow: a.Flow, Seed: a.Seed}, Command: cmd, Target: target,
		})
	case 1:
		if a.Flow != "" || a.Seed != nil {
			return nil, fmt.Errorf("%s: flow and seed are version 0's", name)
		}
		r := vless.RequestV1{ID: id, UDPMulti: a.UDPMulti, KeepAlive: a.KeepAlive, Resolve: a.Resolve, Command: cmd, Target: target}
		if a.PadLen != nil {
			r.Padded, r.PadLen = true, *a.PadLen
		}
		return vless.AppendRequestV1(nil, &r)
	}
	return nil, fmt.Errorf("%s: version: %d is not 0 or 1", name, a.Version)
}

// DecodeVLESSRequest is vless.decodeRequest: the version byte chooses
// vless.ParseRequest or vless.ParseRequestV1.
func DecodeVLESSRequest(b []byte) (*VLESSDecoded, error) {
	if len(b) == 0 {
		return nil, protocols.ErrNeedMore
	}
	var d VLESSDecoded
	var addrLen int // port, atyp and address, at the end of the header
	if b[0] == vless.Version1 {
		r, n, err := vless.ParseRequestV1(b)
		if err != nil {
			return nil, err
		}
		d = VLESSDecoded{
			Version: 1, ID: formatUUID(r.ID), Command: r.Command.String(), Target: r.Target.String(),
			UDPMulti: r.UDPMulti, KeepAlive: r.KeepAlive, Resolve: r.Resolve, Padded: r.Padded, PadLen: r.PadLen,
			Length: n,
		}
		addrLen = protocols.VAddr.Len(r.Target)
		d.Fields = []Field{{"version", 0, 1}, {"uuid", 1, 16}, {"addon type", 17, 1}}
		if body := n - 18 - 1 - addrLen; body > 0 {
			d.Fields = append(d.Fields, Field{"addon body", 18, body})
		}
	} else {
		r, n, err := vless.ParseRequest(b)
		if err != nil {
			return nil, err
		}
		d = VLESSDecoded{
			Version: 0, ID: formatUUID(r.ID), Command: r.Command.String(),
			Flow: r.Addons.Flow, Seed: r.Addons.Seed, Length: n,
		}
		if r.Command != vless.CommandMux {
			d.Target = r.Target.String()
			addrLen = protocols.VAddr.Len(r.Target)
		}
		d.Fields = []Field{{"version", 0, 1}, {"uuid", 1, 16}, {"addons length", 17, 1}}
		if l := int(b[17]); l > 0 {
			d.Fields = append(d.Fields, Field{"addons", 18, l})
		}
	}
	cmdAt := d.Length - addrLen - 1
	d.Fields = append(d.Fields, Field{"command", cmdAt, 1})
	if addrLen > 0 {
		d.Fields = append(d.Fields, Field{"port", cmdAt + 1, 2}, Field{"address type", cmdAt + 3, 1}, Field{"address", cmdAt + 4, addrLen - 3})
	}
	return &d, nil
}
