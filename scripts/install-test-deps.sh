#!/usr/bin/env bash
# install-test-deps.sh: install what tlsgate's real-MTA tests need on Debian 12.
#
# Idempotent. Must run as root. It installs Postfix (with no system
# instance: "No configuration"), swaks (with TLS support), openssl, m4,
# ca-certificates, make and lintian (the install tests check the package
# with it) with apt, nsd, unbound and ldnsutils for the
# DNSSEC lab (internal/lab/dnslab; their system services are not started),
# Debian's chromium with a font (the posture report's HTML page is checked
# in headless Chromium), Debian's opendkim (the second milter of the
# coexistence test in internal/lab/e2e; its service is not started), then
# downloads Sendmail's .debs into the cache directory that
# internal/lab/mtalab uses and extracts them there. Sendmail is NOT
# installed as a package: the tests run the extracted binary (see
# internal/lab/mtalab/sendmail.go). It also downloads, without installing
# anything, every .deb that "apt-get install sendmail" needs on this host
# (as internal/lab/debsys FetchDebs does), so that the Sendmail install
# test installs Debian's sendmail package into its throwaway system
# without the network.
#
# Environment:
#   TLSGATE_LAB_CACHE  cache directory (default /var/cache/tlsgate-lab);
#                      must match what mtalab uses (same variable).
set -euo pipefail

cache="${TLSGATE_LAB_CACHE:-/var/cache/tlsgate-lab}"
debs="$cache/debs"
root="$cache/sendmail-root"
sm_pkgs=(sendmail-bin sendmail-cf sendmail-base libwrap0)
apt_pkgs=(postfix swaks libnet-ssleay-perl openssl m4 ca-certificates make nsd unbound ldnsutils chromium fonts-dejavu-core lintian opendkim)

if [ "$(id -u)" -ne 0 ]; then
	echo "install-test-deps.sh: must run as root (apt-get, dpkg -x into $cache)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# One run at a time (mtalab takes the same lock when it extracts the .debs).
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

missing=()
for p in "${apt_pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

have_debs=1
for p in "${sm_pkgs[@]}"; do
	compgen -G "$debs/${p}_*.deb" >/dev/null || have_debs=0
done

updated=0
apt_update_once() {
	if [ "$updated" -eq 0 ]; then
		apt-get update
		updated=1
	fi
}

if [ "${#missing[@]}" -gt 0 ]; then
	# No system Postfix instance: no /etc/postfix/main.cf is written and
	# nothing listens on port 25.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt_update_once
	# nsd and unbound start their system services when installed; the
	# tests run their own instances in a private network namespace and
	# nothing may answer on the host. A policy-rc.d that exits 101 makes
	# invoke-rc.d start nothing during the install; an existing one is put
	# back afterwards.
	rcd=/usr/sbin/policy-rc.d
	rcd_saved=""
	if [ -e "$rcd" ]; then
		rcd_saved="$(mktemp)"
		cp -p "$rcd" "$rcd_saved"
	fi
	restore_rcd() {
		if [ -n "$rcd_saved" ]; then mv -f "$rcd_saved" "$rcd"; else rm -f "$rcd"; fi
	}
	trap restore_rcd EXIT
	printf '#!/bin/sh\n# install-test-deps.sh: start no service during the install\nexit 101\n' >"$rcd"
	chmod 755 "$rcd"
	apt-get install -y --no-install-recommends "${missing[@]}"
	restore_rcd
	trap - EXIT
	# Nor at the next boot.
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		systemctl disable nsd.service unbound.service opendkim.service 2>/dev/null || true
	fi
else
	echo "install-test-deps.sh: apt packages already installed: ${apt_pkgs[*]}"
fi

if [ "$have_debs" -eq 0 ]; then
	mkdir -p "$debs"
	# apt-get download runs the fetch as user _apt; let it write here.
	if id _apt >/dev/null 2>&1; then chown _apt "$debs"; fi
	apt_update_once
	(cd "$debs" && apt-get download "${sm_pkgs[@]}")
else
	echo "install-test-deps.sh: Sendmail .debs already in $debs"
fi

# What "apt-get install sendmail" needs here (it would replace Postfix:
# download only). The install test installs it inside a throwaway system.
if ! compgen -G "$debs/sendmail_*_all.deb" >/dev/null || ! compgen -G "$debs/sensible-mda_*.deb" >/dev/null; then
	mkdir -p "$debs/partial"
	if id _apt >/dev/null 2>&1; then chown -R _apt "$debs"; fi
	apt_update_once
	apt-get -y -o Dir::Cache::archives="$debs" --download-only install sendmail
else
	echo "install-test-deps.sh: the .debs of apt-get install sendmail are already in $debs"
fi

if [ ! -x "$root/usr/libexec/sendmail/sendmail" ] || [ ! -f "$root/.complete" ]; then
	rm -rf "$root.tmp"
	mkdir -p "$root.tmp"
	for p in "${sm_pkgs[@]}"; do
		for d in "$debs/${p}"_*.deb; do
			dpkg -x "$d" "$root.tmp"
		done
	done
	rm -rf "$root"
	mv "$root.tmp" "$root"
	touch "$root/.complete"
fi
# The packaged binary is setgid mail; the dynamic loader then ignores
# LD_LIBRARY_PATH (secure-exec) and libwrap.so.0 from the extracted
# libwrap0 would not be found.
chmod g-s "$root/usr/libexec/sendmail/sendmail"

echo "install-test-deps.sh: ok (postfix $(postconf -d -h mail_version 2>/dev/null || echo '?'), sendmail root $root)"
