//go:build race

package vmessserver

// raceEnabled: the race detector's shadow memory makes heap figures
// meaningless; `make test` runs the memory tests again without -race.
const raceEnabled = true
