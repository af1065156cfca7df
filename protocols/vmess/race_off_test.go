//go:build !race

package vmess

const raceEnabled = false
