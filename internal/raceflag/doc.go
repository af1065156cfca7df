// Package raceflag says whether the binary was built with -race, for the
// tests that measure allocations or memory (the race detector adds both,
// and makes sync.Pool drop items on purpose), that hit a race inside a
// dependency, or whose deadlines only guard against a hang and must allow
// for the detector's slowdown.
package raceflag

import "time"

// Deadline is d, or three times d under -race: bulk transfers run several
// times slower with the detector, most of all on a loaded machine, and a
// deadline meant to catch a hang must not catch those.
func Deadline(d time.Duration) time.Duration {
	if Enabled {
		return 3 * d
	}
	return d
}
