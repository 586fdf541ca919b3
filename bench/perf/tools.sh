#!/usr/bin/env bash
# make perf's peers: Debian's nginx-light (the proxy and the C reference)
# and wrk (the load generator). Installs what is missing when run as root
# with apt-get; otherwise says how to get them, and make perf skips the rows
# that need them.
set -euo pipefail

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "perf: ${need[*]} missing: the rows that need them are skipped; install them with: sudo apt-get install -y ${need[*]}" >&2
	exit 0
fi

echo "perf: apt-get install ${need[*]}" >&2
# Installing nginx must not start Debian's nginx service, which listens on
# port 80 of every address: make perf runs its own on 127.0.0.1 only. A
# policy-rc.d that says "no" (exit 101) holds service starts back for the
# install, unless the machine already has one.
guard=/usr/sbin/policy-rc.d
added=
if [ ! -e "$guard" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 755 "$guard" && added=1
	trap 'rm -f "$guard"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
[ -z "$added" ] || rm -f "$guard"
