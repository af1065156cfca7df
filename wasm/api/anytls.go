package api

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/portico-gw/portico/protocols/anytls"
)

// PlanArgs are the arguments of anytls.planWrites. An empty Scheme is the
// default scheme. With a Seed the sizes are drawn from a PCG seeded with
// (Seed, 0), so a plan is reproducible; without one, from the Env.
type PlanArgs struct {
	Scheme string  `json:"scheme"`
	Packet uint32  `json:"packet"`
	Size   int     `json:"size"`
	Seed   *uint64 `json:"seed,omitempty"`
}

// Record is one planned TLS write: Payload bytes of the packet, then, when
// Waste is present, a cmdWaste frame of Waste data bytes; Len in all.
type Record struct {
	Payload int  `json:"payload"`
	Waste   *int `json:"waste,omitempty"`
	Len     int  `json:"len"`
}

// SchemeInfo is the result of anytls.parseScheme.
type SchemeInfo struct {
	MD5     string         `json:"md5"`
	Stop    uint32         `json:"stop"`
	Raw     string         `json:"raw"`
	Packets []SchemePacket `json:"packets"`
}

// SchemePacket is one packet's list of steps: "min-max" ranges and "c".
type SchemePacket struct {
	Packet uint32   `json:"packet"`
	Steps  []string `json:"steps"`
}

func scheme(text string) (*anytls.Scheme, error) {
	if text == "" {
		return anytls.DefaultScheme(), nil
	}
	return anytls.ParseScheme([]byte(text))
}

// PlanWrites is anytls.planWrites: anytls.Scheme.Plan.
func PlanWrites(e Env, a *PlanArgs) ([]Record, error) {
	s, err := scheme(a.Scheme)
	if err != nil {
		return nil, err
	}
	if a.Size < 0 {
		return nil, fmt.Errorf("anytls.planWrites: size: %d is negative", a.Size)
	}
	var r anytls.Rand
	if a.Seed != nil {
		r = rand.New(rand.NewPCG(*a.Seed, 0))
	} else {
		var seed [32]byte
		if err := e.read(seed[:]); err != nil {
			return nil, fmt.Errorf("anytls.planWrites: seed: %w", err)
		}
		r = rand.New(rand.NewPCG(binary.BigEndian.Uint64(seed[:8]), binary.BigEndian.Uint64(seed[8:16])))
	}
	plan := s.Plan(nil, a.Packet, a.Size, r)
	out := make([]Record, len(plan))
	for i, p := range plan {
		out[i] = Record{Payload: p.Payload, Len: p.Len()}
		if p.Waste != anytls.NoWaste {
			w := p.Waste
			out[i].Waste = &w
		}
	}
	return out, nil
}

// ParseScheme is anytls.parseScheme: anytls.ParseScheme, with the MD5 a
// client advertises and the steps of every shaped packet (below 2^20).
func ParseScheme(text string) (*SchemeInfo, error) {
	s, err := scheme(text)
	if err != nil {
		return nil, err
	}
	info := &SchemeInfo{MD5: s.MD5(), Stop: s.Stop(), Raw: s.Raw(), Packets: []SchemePacket{}}
	// Lists past packet 2^20 are not shown; a real scheme stops long before.
	for pkt := uint32(0); pkt < min(s.Stop(), 1<<20); pkt++ {
		steps := s.Steps(pkt)
		if steps == nil {
			continue
		}
		p := SchemePacket{Packet: pkt, Steps: make([]string, len(steps))}
		for i, st := range steps {
			if st.Check {
				p.Steps[i] = "c"
			} else {
				p.Steps[i] = strconv.Itoa(st.Min) + "-" + strconv.Itoa(st.Max)
			}
		}
		info.Packets = append(info.Packets, p)
	}
	return info, nil
}
