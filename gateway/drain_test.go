package gateway

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/portico-gw/portico/protocols"
)

// TestDrainAndClose: a refused tunnel is read for at most 4,096 bytes
// (and 3 s) before it closes, and what the protocol server read before it
// refused counts: past the amount, the close comes at once.
func TestDrainAndClose(t *testing.T) {
	for _, tc := range []struct {
		already  int
		maxTaken int
		atOnce   bool
	}{
		{already: 0, maxTaken: 4096},
		{already: 1000, maxTaken: 3096},
		{already: 4096, maxTaken: 0, atOnce: true},
		{already: 16 << 10, maxTaken: 0, atOnce: true},
	} {
		t.Run(fmt.Sprint(tc.already), func(t *testing.T) {
			server, client := net.Pipe()
			done := make(chan struct{})
			start := time.Now()
			go func() { drainAndClose(server, tc.already); close(done) }()
			// The prober keeps sending; count what the server takes.
			taken := 0
			buf := make([]byte, 256)
			for {
				client.SetWriteDeadline(time.Now().Add(4 * time.Second))
				n, err := client.Write(buf)
				taken += n
				if err != nil {
					break
				}
			}
			<-done
			if taken > tc.maxTaken {
				t.Errorf("the drain took %d bytes, want at most %d", taken, tc.maxTaken)
			}
			if el := time.Since(start); tc.atOnce && el > time.Second {
				t.Errorf("closed after %v, want at once", el)
			} else if el > 3500*time.Millisecond {
				t.Errorf("closed after %v, want within 3 s", el)
			}
		})
	}
}

// TestBytesReadBeforeRefusal: the count survives wrapping, and a refusal
// without one reads as 0.
func TestBytesReadBeforeRefusal(t *testing.T) {
	refusal := fmt.Errorf("%w: unknown key", protocols.ErrNotProtocol)
	counted := fmt.Errorf("vmess: %w", &protocols.ReadBeforeRefusal{Err: refusal, N: 8234})
	if got := protocols.BytesReadBeforeRefusal(counted); got != 8234 {
		t.Errorf("counted: %d, want 8234", got)
	}
	if got := protocols.BytesReadBeforeRefusal(refusal); got != 0 {
		t.Errorf("uncounted: %d, want 0", got)
	}
	if !errors.Is(counted, protocols.ErrNotProtocol) {
		t.Error("the wrapped refusal no longer reads as ErrNotProtocol")
	}
}
