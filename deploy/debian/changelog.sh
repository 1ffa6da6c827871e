#!/bin/sh
# changelog.sh VERSION: print the Debian changelog entry for a package
# built from this checkout (installed as /usr/share/doc/tlsgate/changelog.gz;
# the history itself is the git log). The date is the commit's, so that two
# builds of one commit are identical.
set -eu
cd "$(dirname "$0")/../.."
version=$1
maint=${DEB_MAINTAINER:-tlsgate maintainers <tlsgate@users.noreply.github.com>}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
date=$(git log -1 --format=%cD HEAD 2>/dev/null || date -R)
cat <<EOT
tlsgate ($version) unstable; urgency=medium

  * Built from git commit $commit.
    The changes are the git history of https://github.com/tlsgate/tlsgate.

 -- $maint  $date
EOT
