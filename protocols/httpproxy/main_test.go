package httpproxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves goroutines behind: every tunnel
// and handshake must end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
