//go:build race

package session

// raceEnabled: the race detector distorts heap figures.
const raceEnabled = true
