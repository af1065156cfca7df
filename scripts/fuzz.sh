#!/usr/bin/env bash
# Runs every native fuzz target in the module for a short while each.
# Usage: scripts/fuzz.sh [FUZZTIME]   (default 3s; `make fuzz` uses longer)
#
# A run that ends with the fuzzing engine's own "context deadline exceeded"
# and no failing input (a worker starved of CPU on a loaded machine) is run
# once more; a real failure writes its input under testdata/fuzz and fails.
set -euo pipefail
fuzztime="${1:-3s}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true)
	for t in $targets; do
		for attempt in 1 2; do
			echo "fuzz $pkg $t ($fuzztime)"
			if go test -run='^$' -fuzz="^${t}\$" -fuzztime="$fuzztime" "$pkg" >"$log" 2>&1; then
				break
			fi
			if [ "$attempt" = 1 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				echo "fuzz: $t: the engine timed out without a failing input; once more"
				continue
			fi
			cat "$log"
			echo "fuzz: $pkg $t failed; the failing input is in that package's testdata/fuzz/$t" >&2
			exit 1
		done
	done
done
