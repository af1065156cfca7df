#!/usr/bin/env bash
# Runs every native fuzz target in the module for a short while each.
# Usage: scripts/fuzz.sh [FUZZTIME]   (default 3s; `make fuzz` uses longer)
set -euo pipefail
fuzztime="${1:-3s}"
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true)
	for t in $targets; do
		echo "fuzz $pkg $t ($fuzztime)"
		go test -run='^$' -fuzz="^${t}\$" -fuzztime="$fuzztime" "$pkg" >/tmp/portico-fuzz.log 2>&1 || {
			cat /tmp/portico-fuzz.log
			echo "fuzz: $pkg $t failed; the failing input is in that package's testdata/fuzz/$t" >&2
			exit 1
		}
	done
done
