//go:build !race

package readwait

const raceEnabled = false
