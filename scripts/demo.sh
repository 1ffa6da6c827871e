#!/usr/bin/env bash
# demo.sh: tlsgate's demo, run by "make demo" (after make build).
#
# On a Debian 12 machine, as root: installs what the demo needs
# (scripts/install-test-deps.sh, idempotent), then runs cmd/tlsgate-demo,
# which starts a private Postfix on 127.0.0.1 with ./tlsgate attached
# through "tlsgate mta-config", plays the inbound and outbound stories,
# prints what happened, stops everything it started and removes its
# temporary directories. No mail leaves the machine.
#
# Arguments are passed to tlsgate-demo (-v: also print the harness's log).
# Exit status: 0 when everything went as the policy says.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: must run as root: it installs packages and starts a private Postfix (try: sudo make demo)" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/tlsgate-demo-run.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "Checking what the demo needs (scripts/install-test-deps.sh; on a fresh machine this installs Postfix and swaks with apt)..."
if ! bash scripts/install-test-deps.sh >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log" >&2
	echo "demo.sh: installing the dependencies failed" >&2
	exit 1
fi
tail -n 1 "$tmp/install.log"

if [ ! -x ./tlsgate ]; then
	make build
fi
go build -o "$tmp/tlsgate-demo" ./cmd/tlsgate-demo
echo
"$tmp/tlsgate-demo" -tlsgate ./tlsgate "$@"
