#!/bin/sh
# copyright.sh BINARY: print the machine-readable debian/copyright
# (https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/) for
# a tlsgate binary: tlsgate itself, the Go standard library, and every Go
# module compiled into BINARY (from its build information, `go version -m`),
# each with the copyright lines and license of its LICENSE file in the
# module cache. Run by `make deb`; needs the module cache the binary was
# built from (it never downloads: GOPROXY=off).
set -eu

bin=$1
GO=${GO:-go}
export GOPROXY=off GOFLAGS=-mod=mod

# license_of FILE: the DEP-5 short name of a license text.
license_of() {
	if grep -q "Apache License" "$1" && grep -q "Version 2.0" "$1"; then
		echo Apache-2.0
	elif grep -q "Mozilla Public License Version 2.0\|Mozilla Public License, version 2.0" "$1"; then
		echo MPL-2.0
	elif grep -q "Permission is hereby granted, free of charge" "$1"; then
		echo Expat
	elif grep -q "Permission to use, copy, modify, and/or distribute" "$1"; then
		echo ISC
	elif grep -q "Redistribution and use in source and binary forms" "$1"; then
		if grep -qi "neither the name\|names of its contributors" "$1"; then
			echo BSD-3-clause
		else
			echo BSD-2-clause
		fi
	else
		echo "copyright.sh: cannot tell the license of $1" >&2
		exit 1
	fi
}

# copyright_of FILE FALLBACK: the Copyright: field value (continuation
# lines indented) from the "Copyright ..." lines of FILE.
copyright_of() {
	lines=$(grep -i '^[[:space:]]*copyright[[:space:]]*\((c)\|©\|[0-9]\)' "$1" |
		sed -e 's/^[[:space:]]*//' -e 's/^[Cc]opyright[[:space:]]*//' -e 's/^([Cc])[[:space:]]*//' -e 's/^©[[:space:]]*//' |
		sort -u) || true
	if [ -z "$lines" ]; then
		echo "$2"
	else
		echo "$lines" | sed '2,$s/^/ /'
	fi
}

licfile() {
	for f in LICENSE LICENSE.md LICENSE.txt LICENCE COPYING; do
		if [ -f "$1/$f" ]; then
			echo "$1/$f"
			return
		fi
	done
	echo "copyright.sh: no license file in $1" >&2
	exit 1
}

used=""
cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tlsgate
Source: https://github.com/tlsgate/tlsgate
Comment: /usr/sbin/tlsgate is a statically linked Go program. Besides
 tlsgate's own code it contains the Go standard library and the Go modules
 listed below (vendor/MODULE stands for the module's source as `go mod
 vendor` would place it).

HEAD

root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -f "$root/LICENSE" ]; then
	lic=$(license_of "$root/LICENSE")
	printf 'Files: *\nCopyright: %s\nLicense: %s\n\n' "$(copyright_of "$root/LICENSE" "The tlsgate authors")" "$lic"
	used="$used $lic"
else
	cat <<'NOLIC'
Files: *
Copyright: The tlsgate authors
License: tlsgate-unpublished
Comment: The tlsgate repository has no LICENSE file yet. This paragraph
 is replaced by its terms as soon as one exists (deploy/debian/copyright.sh
 reads it).

NOLIC
fi

goroot=$("$GO" env GOROOT)
lic=$(license_of "$goroot/LICENSE")
printf 'Files: go-stdlib/*\nCopyright: %s\nLicense: %s\nComment: The Go standard library and runtime, %s.\n\n' \
	"$(copyright_of "$goroot/LICENSE" "The Go Authors")" "$lic" "$("$GO" version -m "$bin" | sed -n '1s/.*: //p')"
used="$used $lic"

"$GO" version -m "$bin" | awk '$1 == "dep" { m = $2; v = $3 } $1 == "=>" { m = $2; v = $3 } $1 == "dep" || $1 == "=>" { print m, v }' |
	sort -u -k1,1 | while read -r mod ver; do
	dir=$("$GO" mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ -z "$dir" ]; then
		echo "copyright.sh: $mod@$ver is not in the module cache" >&2
		exit 1
	fi
	f=$(licfile "$dir")
	lic=$(license_of "$f")
	c=$(copyright_of "$f" "The $mod authors")
	if [ "$c" = "The $mod authors" ] && [ -f "$dir/NOTICE" ]; then
		c=$(copyright_of "$dir/NOTICE" "The $mod authors")
	fi
	printf 'Files: vendor/%s/*\nCopyright: %s\nLicense: %s\nComment: Go module %s %s.\n\n' \
		"$mod" "$c" "$lic" "$mod" "$ver"
done

# The license texts: the common ones by reference, the others in full.
lics=$( { echo "$used"; "$GO" version -m "$bin" | awk '$1 == "dep" || $1 == "=>" { print $2 "@" $3 }' |
	while read -r mv; do
		dir=$("$GO" mod download -json "$mv" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		license_of "$(licfile "$dir")"
	done; } | tr ' ' '\n' | grep . | sort -u)
if [ ! -f "$root/LICENSE" ]; then
	cat <<'NOLIC'
License: tlsgate-unpublished
 The authors have not published license terms for tlsgate itself yet.

NOLIC
fi
for lic in $lics; do
	case $lic in
	Apache-2.0 | MPL-2.0)
		printf 'License: %s\n On Debian systems, the complete text of the license can be found in\n "/usr/share/common-licenses/%s".\n\n' "$lic" "$lic"
		;;
	*)
		printf 'License: %s\n' "$lic"
		sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$(dirname "$0")/licenses/$lic"
		echo
		;;
	esac
done
