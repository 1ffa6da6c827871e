// Package e2e holds tlsgate's end-to-end tests, part of the lab
// (internal/lab): the outbound TLS policy, the generated MTA configuration,
// and the fault matrix (daemon, milter and peer failures, each case with
// its own Postfix, counting what was deferred, delivered, duplicated or
// lost, and Sendmail with tlsgate down). It has no code of its own: the
// tests build the real tlsgate binary once, write a TOML configuration per
// test, run "tlsgate serve -c FILE" as a subprocess (stopped by PID, its
// log captured), wire a private Postfix 3.7 or a Sendmail 8.17 from
// internal/lab/mtalab with the output of "tlsgate mta-config", and send
// mail through them to loopback SMTP sinks with and without STARTTLS.
// The milter_*_test.go files run the inbound matrix closer in: the milter
// package served from the test process, attached to a private Postfix or
// Sendmail, with its decision lines read from memory.
//
// What each test asserts is what a mail administrator would check: the
// envelope a sink saw or never saw, whether it arrived over TLS, the MTA's
// log lines (dsn=4.7.4 / 4.7.5 status=deferred, "Verified TLS connection
// established") and its queue.
//
// The discovery_test.go files run MTA-STS and DANE discovery end to end:
// the dnslab lab's nsd and validating unbound with zones signed at test
// start, its HTTPS server for mta-sts.<zone>, MX sinks on 127.0.0.35-.49
// port 25 with matching TLSA records, and Postfix (smtp_dns_support_level
// = dnssec) or Sendmail (FEATURE(`sts')) resolving through unbound.
//
// The tests need root, Postfix and Sendmail, nsd, unbound and ldnsutils
// (scripts/install-test-deps.sh); without them they skip, or fail when
// CI=true. The test binary runs in the dnslab lab's network namespace,
// which has only lo, so all traffic stays on loopback; the MTAs run in
// private mount namespaces whose resolver points at 127.0.0.1 (nothing
// answers there: names come from a private hosts file), or for the
// discovery tests at the lab's unbound on 127.0.0.53.
package e2e
