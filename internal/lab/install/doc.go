// Package install holds tlsgate's install tests. They build the Debian
// package (make deb), install it into a throwaway Debian system
// (internal/lab/debsys: the host's root under an overlay, in private
// mount, network and PID namespaces) on Debian's own MTA, and follow
// README.md's "Install on Debian" section literally: every block marked
// <!-- install-test: NAME --> is run as it stands, so the docs and the
// tests cannot drift. Then they prove what the install is for (refusal,
// verified delivery, issuer pins from Postfix's chroot, the fail-closed
// outage) and that upgrade, remove and purge leave what they should.
//
// The tests run under CI=true (where they are mandatory) and locally with
// TLSGATE_INSTALL_TESTS=1; they need root, Debian 12 and the test
// dependencies (make deps).
package install
