//go:build race

package vmess

// raceEnabled: the race detector adds allocations of its own, so
// allocation counts mean nothing under it; `make allocs` runs the
// allocation tests without -race.
const raceEnabled = true
