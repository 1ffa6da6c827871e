// Package hostile holds tlsgate's cross-component hostile-input, flood and
// load tests, part of the lab (internal/lab). It has no code of its own:
// the tests build the real tlsgate binary once (TestMain; with -race when
// the tests run with it), start "tlsgate serve -c FILE" as a subprocess on
// unix sockets in a private directory, attack its socketmap,
// policy-delegation and milter listeners (and its configuration file, through
// "tlsgate check" and SIGHUP) with malformed, oversized, slow and flooding
// clients, and assert after every case that
//
//   - the attacker got a clear error or a safe answer (TEMP, a temporary
//     SMTP reply, a closed connection), never a permissive one;
//   - the daemon is still running and well-behaved clients get correct
//     answers from all three listeners;
//   - memory stayed bounded (peak RSS of the daemon, /proc/PID/status
//     VmHWM, reset per case through /proc/PID/clear_refs).
//
// docs/hostile-input.md is the catalogue: every case, the test that covers
// it, and the outcome. All traffic stays on unix sockets on this machine;
// every process the tests start is stopped by its PID.
package hostile
