// Package policyd implements the protocols through which an MTA asks tlsgate for TLS
// policy, and the servers that speak them:
//
//   - the socketmap protocol (Postfix socketmap_table(5), used for smtp_tls_policy_maps;
//     Sendmail's "socket" map class, used for the access map): netstring requests
//     "NAME KEY" answered by "OK data", "NOTFOUND ", "TEMP reason", "TIMEOUT reason" or
//     "PERM reason" (see ReadNetstring, SocketmapServer, SocketmapClient);
//   - the Postfix SMTP access policy delegation protocol (SMTPD_POLICY_README,
//     check_policy_service): "name=value" lines ended by an empty line, answered by
//     "action=..." and an empty line (see ParseDelegation, DelegationServer);
//   - Postfix xtext, in which ccert_subject and ccert_issuer arrive (see certid.DecodeXtext).
//
// The servers know nothing about policies: a Lookuper or a Decider supplies the answers.
// They are written for hostile input: every length is capped before memory is committed,
// every read and write has a deadline, a connection cap protects the process, a panic in
// the Lookuper or Decider turns into a temporary failure, and protocol errors close the
// offending connection only.
//
// # Failure semantics
//
// For smtp_tls_policy_maps, Postfix treats TEMP, TIMEOUT, PERM, an unknown answer, a broken
// connection and a timeout as a lookup error and defers the mail (status 4.7.5); only
// NOTFOUND lets its default TLS level apply. A Lookuper that cannot decide for a covered
// peer must therefore answer TEMP, never NOTFOUND. Sendmail maps TEMP and TIMEOUT to
// EX_TEMPFAIL and PERM to EX_UNAVAILABLE. The servers themselves only ever answer TEMP when
// something goes wrong on their side.
//
// # Sockets and chroot
//
// Socketmap and policy delegation carry no authentication: whoever can connect can ask, and
// whoever can listen on the address can answer. Prefer a unix socket (tlsgate opens it with
// package internal/listen) whose mode and group admit only the MTA. A chrooted Postfix
// smtp(8) or smtpd(8) (Debian's default master.cf) resolves "socketmap:unix:/x/y.sock:NAME"
// inside its chroot, i.e. as /var/spool/postfix/x/y.sock on the host; so the daemon listens
// on unix:/var/spool/postfix/tlsgate/policy.sock and main.cf names
// socketmap:unix:/tlsgate/policy.sock:NAME, while "postmap -q", which is not chrooted,
// needs the host path. An inet: listener on loopback avoids the difference but lets every
// local user query it.
package policyd
