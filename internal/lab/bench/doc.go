// Package bench measures what tlsgate costs next to a no-op baseline, side by
// side in the same run, and renders the report kept in docs/benchmarks.md.
// It is the body of cmd/tlsgate-bench and an instrument of the lab
// (internal/lab): it runs the real binaries and, for part 4, a private
// Postfix from mtalab.
//
// The report answers the question an administrator asks before putting
// tlsgate in front of their mail: what does it cost? Absolute numbers vary
// from machine to machine, so every figure is shown next to a baseline
// measured in the same run, in interleaved rounds, as a ratio:
//
//  1. Socketmap: the real "tlsgate serve" process (default logging) against
//     two no-op netstring servers built on the same library, with the same
//     load client (persistent connections, one request in flight per
//     connection, as Postfix's smtp(8) does), over a unix socket and
//     loopback TCP at concurrency 1, 8 and 32; server CPU per lookup from
//     /proc/PID/stat.
//  2. Policy size: lookup cost, load and reload time and RSS with 10, 1k,
//     10k and 100k generated endpoints (see GenerateConfig).
//  3. Milter: the tlsgate milter against a no-op go-milter server with the
//     same negotiation, driven by go-milter's client with Postfix's TLS
//     macros, one and many messages per milter connection.
//  4. End to end: Postfix's smtp-source into a private Postfix (package
//     mtalab) with TLS on both legs, delivering to a TLS sink, in three
//     set-ups: Postfix alone, with a no-op milter and socketmap, and with
//     tlsgate.
//  5. Discovery: lookups answered from the MTA-STS/DANE cache (100 and
//     100,000 domains loaded from a cache_file) through the socket against
//     the no-op server, the RSS of the full cache, and a cold lookup
//     against the dnslab lab's resolver (go test's lab benchmarks of
//     package discovery) next to the raw round trips it needs.
//
// P. Posture report: "tlsgate posture" reading a generated month of
// Postfix and Sendmail logs (2 GB, GenerateMailLog) on one core, next to
// cat and wc -l reading the same file; its peak RSS as the lines grow
// with the same peers and as the peers grow with the same lines.
//
// The runner (Run) starts every server as its own process, so that CPU time
// is accounted per process, and pins load client and server to different
// CPUs with taskset where the machine has two or more. The load clients and
// the no-op servers are modes of the same program (cmd/tlsgate-bench), which
// the runner re-executes. "make bench" runs it all.
package bench
