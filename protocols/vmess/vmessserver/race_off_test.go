//go:build !race

package vmessserver

const raceEnabled = false
