// Package lab is the room of tlsgate that proves and measures the product;
// nothing in it ships in the tlsgate binary. It has no code of its own: its
// packages are
//
//   - mtalab: real MTAs on loopback (a private Postfix, a Sendmail 8.17 run
//     from Debian's .debs) in private mount namespaces, and an SMTP sink;
//   - testpki: X.509 certificates made at test time;
//   - testbin: builds tlsgate's commands for the tests that run them;
//   - golden: compares test output with files under testdata/;
//   - e2e and hostile: the end-to-end, fault, hostile-input and load tests
//     (test files only);
//   - bench and demo: the benchmark runner and the demo, the bodies of
//     cmd/tlsgate-bench and cmd/tlsgate-demo, instruments built on mtalab
//     and testpki.
//
// The product (cmd/tlsgate and every package it imports) never imports the
// lab, and no command links package testing: mtalab takes the small
// [mtalab.T] that a test's *testing.T satisfies and that the commands get
// from mtalab.Runner. cmd/tlsgate's TestShippedDeps checks both.
package lab
