//go:build !race

package vmessconn

const raceEnabled = false
