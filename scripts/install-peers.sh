#!/usr/bin/env bash
# Installs the real programs the interop tests talk to, from Debian's
# packages, when they are missing. Go-module peers (Pebble) need nothing here.
set -euo pipefail
need=()
command -v v2ray >/dev/null 2>&1 || need+=(v2ray)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-peers: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
	exit 1
fi
echo "install-peers: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
