package anytls

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestDefaultScheme parses the spec's default scheme and checks its MD5
// against the value every stock client advertises (anytls-go, sing-anytls,
// mihomo all send 75cff2ad89aadf5e257059ee571ebe11).
func TestDefaultScheme(t *testing.T) {
	s := DefaultScheme()
	if s.MD5() != "75cff2ad89aadf5e257059ee571ebe11" || DefaultSchemeMD5 != s.MD5() {
		t.Errorf("MD5 = %s", s.MD5())
	}
	sum := md5.Sum([]byte(DefaultSchemeText))
	if hex.EncodeToString(sum[:]) != DefaultSchemeMD5 {
		t.Errorf("md5(DefaultSchemeText) = %x", sum)
	}
	if len(DefaultSchemeText) != 137 || strings.HasSuffix(DefaultSchemeText, "\n") || s.Raw() != DefaultSchemeText {
		t.Errorf("default text is %d bytes (want 137, no trailing newline)", len(DefaultSchemeText))
	}
	if s.Stop() != 8 {
		t.Errorf("Stop = %d", s.Stop())
	}
	r500 := Step{Min: 500, Max: 1000}
	c := Step{Check: true}
	want := map[uint32][]Step{
		0: {{Min: 30, Max: 30}},
		1: {{Min: 100, Max: 400}},
		2: {{Min: 400, Max: 500}, c, r500, c, r500, c, r500, c, r500},
		3: {{Min: 9, Max: 9}, r500},
		4: {r500}, 5: {r500}, 6: {r500}, 7: {r500},
		8: nil,
	}
	for pkt, steps := range want {
		if got := s.Steps(pkt); !reflect.DeepEqual(got, steps) {
			t.Errorf("Steps(%d) = %+v, want %+v", pkt, got, steps)
		}
	}
	if p := s.Padding0(rand.New(rand.NewPCG(1, 2))); p != 30 {
		t.Errorf("Padding0 = %d, want 30", p)
	}
}

func TestParseScheme(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		stop  uint32
		steps map[uint32][]Step
		err   string
	}{
		{name: "minimal", text: "stop=0", stop: 0},
		{name: "spaces and CR", text: " stop = 2 \r\n0 = 5-5 , c \r\n\r\n", stop: 2, steps: map[uint32][]Step{0: {{Min: 5, Max: 5}, {Check: true}}}},
		{name: "reversed range", text: "stop=2\n1=900-100", stop: 2, steps: map[uint32][]Step{1: {{Min: 100, Max: 900}}}},
		{name: "empty list", text: "stop=2\n1=", stop: 2, steps: map[uint32][]Step{1: nil}},
		{name: "unknown key", text: "stop=2\njitter=0-10\nfoo=bar", stop: 2},
		{name: "last line wins", text: "stop=2\nstop=5\n1=1-1\n1=2-2", stop: 5, steps: map[uint32][]Step{1: {{Min: 2, Max: 2}}}},
		{name: "packet past stop", text: "stop=1\n3=1-1", stop: 1, steps: map[uint32][]Step{3: {{Min: 1, Max: 1}}}},
		{name: "limits", text: "stop=4294967295\n4294967294=0-65535", stop: 4294967295, steps: map[uint32][]Step{4294967294: {{Min: 0, Max: 65535}}}},
		{name: "no stop", text: "0=1-1", err: "no stop= line"},
		{name: "empty", text: "", err: "no stop= line"},
		{name: "bad stop", text: "stop=eight", err: `stop="eight" is not a number`},
		{name: "negative stop", text: "stop=-1", err: "not a number"},
		{name: "no equals", text: "stop=1\nhello", err: `line 2: "hello" is not key=value`},
		{name: "leading zero", text: "stop=2\n01=1-1", err: `packet "01" is not a plain decimal`},
		{name: "signed packet", text: "stop=2\n1x=1-1", err: "not a plain decimal"},
		{name: "single number", text: "stop=2\n1=30", err: `"30" is neither c nor min-max`},
		{name: "too big", text: "stop=2\n1=1-65536", err: "from 0 to 65535"},
		{name: "negative size", text: "stop=2\n1=-5-5", err: "from 0 to 65535"},
		{name: "capital C", text: "stop=2\n1=C", err: "neither c nor"},
		{name: "empty token", text: "stop=2\n1=1-1,,2-2", err: "neither c nor"},
		{name: "too long", text: "stop=1\n" + strings.Repeat("x=y\n", 16384), err: "do not fit a frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseScheme([]byte(tt.text))
			if tt.err != "" {
				if !errors.Is(err, ErrBadScheme) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Stop() != tt.stop || !reflect.DeepEqual(s.packets, nonNil(tt.steps)) || s.Raw() != tt.text {
				t.Errorf("= stop %d, %+v; want stop %d, %+v", s.Stop(), s.packets, tt.stop, tt.steps)
			}
		})
	}
}

func nonNil(m map[uint32][]Step) map[uint32][]Step {
	if m == nil {
		return map[uint32][]Step{}
	}
	return m
}

// fixedRand returns v (or n-1 when v >= n) for every draw.
type fixedRand int

func (f fixedRand) IntN(n int) int { return min(int(f), n-1) }

// countRand counts draws.
type countRand struct{ n int }

func (c *countRand) IntN(n int) int { c.n++; return 0 }

func rec(payload, waste int) Record { return Record{Payload: payload, Waste: waste} }

// TestPlan walks the planner through the spec's cases by hand. Sizes are
// from ranges drawn with fixed randomness: low (0) gives Min, high gives
// Max-1.
func TestPlan(t *testing.T) {
	def := DefaultScheme()
	custom, err := ParseScheme([]byte("stop=4\n0=10-10\n1=50-50\n2=100-100,c,200-200,c,300-300\n3=30-30,40-40"))
	if err != nil {
		t.Fatal(err)
	}
	const high = fixedRand(1 << 30)
	tests := []struct {
		name    string
		s       *Scheme
		pkt     uint32
		payload int
		r       Rand
		want    []Record
	}{
		// Packet 1 of the default scheme, settings+SYN+PSH of ~90 bytes:
		// one record of 100 (low draw) = 90 payload + waste frame 7+3.
		{"pkt1 padded to 100", def, 1, 90, fixedRand(0), []Record{rec(90, 3)}},
		{"pkt1 padded to 399", def, 1, 90, high, []Record{rec(90, 302)}},
		// Payload leaving 7 or fewer bytes to fill: no waste frame fits.
		{"pkt1 no room for waste", def, 1, 93, fixedRand(0), []Record{rec(93, NoWaste)}},
		{"pkt1 exactly 100", def, 1, 100, fixedRand(0), []Record{rec(100, NoWaste)}},
		{"pkt1 larger than range", def, 1, 150, fixedRand(0), []Record{rec(100, NoWaste), rec(50, NoWaste)}},
		// Packet 2: small payload; the first c stops after one record.
		{"pkt2 c stops early", def, 2, 300, fixedRand(0), []Record{rec(300, 93)}},
		// Payload spanning two records, then c stops.
		{"pkt2 two records", def, 2, 700, fixedRand(0), []Record{rec(400, NoWaste), rec(300, 193)}},
		// Payload past all ranges: 400 + 4*500, then the rest.
		{"pkt2 all steps then rest", def, 2, 3000, fixedRand(0), []Record{rec(400, NoWaste), rec(500, NoWaste), rec(500, NoWaste), rec(500, NoWaste), rec(500, NoWaste), rec(600, NoWaste)}},
		// Packet 3: "9-9,500-1000" with no check mark: a 9-byte record,
		// then pure padding of 500 data bytes (507 on the wire).
		{"pkt3 pure waste", def, 3, 9, fixedRand(0), []Record{rec(9, NoWaste), rec(0, 500)}},
		{"pkt3 waste after short", def, 3, 5, fixedRand(0), []Record{rec(5, NoWaste), rec(0, 500)}},
		{"pkt7", def, 7, 2000, fixedRand(0), []Record{rec(500, NoWaste), rec(1500, NoWaste)}},
		{"pkt8 past stop", def, 8, 2000, fixedRand(0), []Record{rec(2000, NoWaste)}},
		{"custom c after exact fit", custom, 2, 100, nil, []Record{rec(100, NoWaste)}},
		{"custom c skipped", custom, 2, 250, nil, []Record{rec(100, NoWaste), rec(150, 43)}},
		{"custom all", custom, 2, 1000, nil, []Record{rec(100, NoWaste), rec(200, NoWaste), rec(300, NoWaste), rec(400, NoWaste)}},
		{"custom pure waste tail", custom, 3, 10, nil, []Record{rec(10, 13), rec(0, 40)}},
		{"custom zero payload", custom, 3, 0, nil, []Record{rec(0, 30), rec(0, 40)}},
		{"custom c at zero payload", custom, 2, 0, nil, []Record{rec(0, 100)}},
		{"packet without list", custom, 0, 5, nil, []Record{rec(5, NoWaste)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.Plan(nil, tt.pkt, tt.payload, tt.r)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Plan = %+v\nwant   %+v", got, tt.want)
			}
			sum := 0
			for _, r := range got {
				sum += r.Payload
			}
			if sum != tt.payload {
				t.Errorf("records carry %d payload bytes, want %d", sum, tt.payload)
			}
		})
	}
	if got := (Record{Payload: 10, Waste: 3}).Len(); got != 20 {
		t.Errorf("Len = %d", got)
	}
	if got := (Record{Payload: 10, Waste: NoWaste}).Len(); got != 10 {
		t.Errorf("Len = %d", got)
	}
}

// TestPlanFollowsScheme checks, for random schemes and payloads, the
// properties a censor would see: every record of a shaped packet has a
// size its step allows, the payload is carried whole and in order, and
// nothing follows a check mark reached with the payload all sent.
func TestPlanFollowsScheme(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for range 3000 {
		var tokens []string
		var steps []Step
		for range 1 + rng.IntN(6) {
			if rng.IntN(3) == 0 {
				tokens = append(tokens, "c")
				steps = append(steps, Step{Check: true})
				continue
			}
			lo := rng.IntN(1500)
			hi := lo + rng.IntN(3)*rng.IntN(500)
			tokens = append(tokens, strconv.Itoa(lo)+"-"+strconv.Itoa(hi))
			steps = append(steps, Step{Min: lo, Max: hi})
		}
		text := "stop=3\n1=" + strings.Join(tokens, ",")
		s, err := ParseScheme([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		payload := rng.IntN(5000)
		got := s.Plan(nil, 1, payload, rng)
		allowed := func(st Step, size int) bool {
			return size == st.Min || (size > st.Min && size < st.Max)
		}
		rem, i := payload, 0
		for _, st := range steps {
			if st.Check {
				if rem == 0 {
					break
				}
				continue
			}
			if st.Max == 0 && rem > 0 {
				continue // a 0-byte record is not written
			}
			if i >= len(got) {
				t.Fatalf("%q payload %d: plan %+v ends before step %+v", text, payload, got, st)
			}
			r := got[i]
			i++
			var ok bool
			switch {
			case r.Payload == 0: // pure padding: its data has the drawn size
				ok = rem == 0 && allowed(st, r.Waste)
			case r.Waste != NoWaste: // the last payload, padded up to the drawn size
				ok = r.Payload == rem && allowed(st, r.Len())
			case r.Payload < rem: // a full record of payload
				ok = allowed(st, r.Len())
			default: // the last payload, with no room (≤ 7 bytes) for a waste frame
				ok = r.Len() >= st.Min-HeaderLen && r.Len() <= max(st.Min, st.Max)
			}
			if !ok {
				t.Fatalf("%q payload %d (%d left): record %+v outside step %+v; plan %+v", text, payload, rem, r, st, got)
			}
			rem -= r.Payload
		}
		if rem > 0 {
			if i != len(got)-1 || got[i].Payload != rem || got[i].Waste != NoWaste {
				t.Fatalf("%q payload %d: rest %d not sent as one record: %+v", text, payload, rem, got)
			}
		} else if i != len(got) {
			t.Fatalf("%q payload %d: extra records %+v", text, payload, got[i:])
		}
	}
}

func TestPlanDraws(t *testing.T) {
	var c countRand
	DefaultScheme().Plan(nil, 2, 10000, &c)
	if c.n != 5 {
		t.Errorf("packet 2 with 10000 bytes drew %d times, want 5", c.n)
	}
	c.n = 0
	DefaultScheme().Plan(nil, 0, 10, &c)
	DefaultScheme().Padding0(&c)
	if c.n != 0 {
		t.Errorf("point ranges drew %d times", c.n)
	}
	buf := make([]Record, 0, 16)
	if allocs := testing.AllocsPerRun(100, func() { buf = DefaultScheme().Plan(buf[:0], 2, 3000, fixedRand(3)) }); allocs != 0 {
		t.Errorf("Plan allocates %v times", allocs)
	}
	if p := (&Scheme{stop: 1}).Padding0(nil); p != 0 {
		t.Errorf("Padding0 without packet 0 = %d", p)
	}
}
