package bufpool

import (
	"testing"

	"github.com/portico-gw/portico/internal/raceflag"
)

func TestSizesAndReuse(t *testing.T) {
	s, l := Small(), Large()
	if len(*s) != SmallSize || len(*l) != LargeSize {
		t.Fatalf("sizes %d, %d; want %d, %d", len(*s), len(*l), SmallSize, LargeSize)
	}
	*l = (*l)[:10] // a caller may shorten it; Put restores the length
	Put(l)
	Put(s)
	other := make([]byte, 100)
	Put(&other) // dropped, not pooled
	Put(nil)
	if got := Large(); len(*got) != LargeSize {
		t.Fatalf("a large buffer back from the pool has %d bytes", len(*got))
	}
}

func TestZeroAllocs(t *testing.T) {
	if raceflag.Enabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	Put(Large())
	Put(Small())
	if n := testing.AllocsPerRun(1000, func() { Put(Large()); Put(Small()) }); n != 0 {
		t.Fatalf("Get and Put allocate %v times", n)
	}
}
