#!/usr/bin/env bash
# Installs workerd, Cloudflare's Workers runtime, from npm into a cache
# outside the repository, for the edge worker's tests (wasm/edge), and prints
# the binary's path. Idempotent: an installed binary of the pinned version is
# kept. The binary ships inside npm's platform package
# (@cloudflare/workerd-<os>-<arch>/bin/workerd); npm's install scripts are
# not run (--ignore-scripts): the workerd package's postinstall only checks
# that binary.
#
#   PORTICO_CACHE      cache root, default ${XDG_CACHE_HOME:-$HOME/.cache}/portico
#   WORKERD_VERSION    npm version of workerd, default below
#   PORTICO_REQUIRE_PEERS=1   a missing npm or a failed install is an error
#                             (otherwise a warning, and the tests skip)
set -euo pipefail
version="${WORKERD_VERSION:-1.20261117.1}"
cache="${PORTICO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portico}"
dir="$cache/workerd"

case "$(uname -s)-$(uname -m)" in
Linux-x86_64) plat=linux-64 ;;
Linux-aarch64 | Linux-arm64) plat=linux-arm64 ;;
Darwin-x86_64) plat=darwin-64 ;;
Darwin-arm64) plat=darwin-arm64 ;;
*) plat="" ;;
esac

fail() {
	echo "install-workerd: $*" >&2
	if [ "${PORTICO_REQUIRE_PEERS:-}" = 1 ]; then
		exit 1
	fi
	echo "install-workerd: the edge worker's tests will be skipped (PORTICO_REQUIRE_PEERS=1 makes this an error)" >&2
	exit 0
}

[ -n "$plat" ] || fail "no workerd build for $(uname -s)-$(uname -m)"
bin="$dir/node_modules/@cloudflare/workerd-$plat/bin/workerd"
installed() {
	[ -x "$bin" ] && [ -f "$dir/node_modules/workerd/package.json" ] &&
		grep -q "\"version\": \"$version\"" "$dir/node_modules/workerd/package.json"
}
if ! installed; then
	command -v npm >/dev/null 2>&1 || fail "npm not found (Debian: apt-get install -y npm)"
	mkdir -p "$dir"
	echo "install-workerd: npm install workerd@$version into $dir" >&2
	npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --loglevel=error "workerd@$version" >&2 ||
		fail "npm install workerd@$version failed"
	installed || fail "workerd@$version installed no $bin"
fi
"$bin" --version >/dev/null 2>&1 || fail "$bin does not run"
echo "$bin"
