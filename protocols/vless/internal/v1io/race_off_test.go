//go:build !race

package v1io

const raceEnabled = false
