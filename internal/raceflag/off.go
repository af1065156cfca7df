//go:build !race

package raceflag

// Enabled is true in a binary built with -race.
const Enabled = false
