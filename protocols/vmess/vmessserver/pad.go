package vmessserver

import (
	"crypto/rand"
	mathrand "math/rand/v2"
)

// newPadSource is where padding bytes come from: a ChaCha8 stream seeded
// from crypto/rand per connection. Padding sits after the ciphertext and
// hides only lengths; V2Ray fills it from math/rand.
func newPadSource() *mathrand.ChaCha8 {
	var seed [32]byte
	rand.Read(seed[:])
	return mathrand.NewChaCha8(seed)
}
