#!/bin/sh
# version.sh: print the Debian package version for this checkout. A commit
# tagged v1.2.3 is 1.2.3; N commits after it, 1.2.3+gitDATE.N.HASH; with no
# tag at all, 0~gitDATE.HASH. DATE is the commit time (UTC, so that later
# commits sort higher, whatever the build machine's clock says). Uncommitted
# changes add +dirty. The version is native (no Debian revision): upstream
# builds its own package.
set -eu
cd "$(dirname "$0")/../.."
if ! hash=$(git rev-parse --short=12 HEAD 2>/dev/null); then
	echo 0~unknown
	exit 0
fi
date=$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd HEAD)
if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	tag=${tag#v}
	if [ "$n" = 0 ]; then
		v=$tag
	else
		v=$tag+git$date.$n.$hash
	fi
else
	v=0~git$date.$hash
fi
if ! git diff --quiet HEAD -- 2>/dev/null; then
	v=$v+dirty
fi
echo "$v"
