// Package raceflag says whether the binary was built with -race, for the
// tests that measure allocations or memory (the race detector adds both,
// and makes sync.Pool drop items on purpose) or that hit a race inside a
// dependency.
package raceflag
