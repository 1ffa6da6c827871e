#!/usr/bin/env bash
# fuzz.sh FUZZTIME PKG:TARGET...: run each Go fuzz target for FUZZTIME.
#
# A failure with a crasher ("Failing input written to testdata/fuzz/...")
# fails at once. Go 1.26's fuzzing coordinator can also end a clean run
# with a bare "context deadline exceeded" and no input (golang/go#75804,
# fixed in Go 1.27); such a run is repeated once, and fails if it happens
# again.
set -uo pipefail
fuzztime=$1
shift
go=${GO:-go}
for t in "$@"; do
	pkg=${t%%:*} name=${t##*:}
	for attempt in 1 2; do
		echo "fuzz $pkg $name ($fuzztime)"
		out=$("$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1)
		rc=$?
		echo "$out" | tail -n 20
		[ $rc -eq 0 ] && break
		if [ $attempt -eq 1 ] && grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
			echo "fuzz $pkg $name: the Go fuzzing coordinator stopped without a failing input (golang/go#75804); running it once more"
			continue
		fi
		exit 1
	done
done
