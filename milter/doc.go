// Package milter is tlsgate's inbound enforcement point: a milter for
// Postfix 3.7 and Sendmail 8.17 that judges every message of an SMTP
// session against the endpoint model of package policy and stamps trace
// headers on what it accepts.
//
// # What it reads
//
// At connect, HELO and MAIL the milter asks the MTA (SMFIF_SETSYMLIST) for
// the macros listed in [ConnectMacros], [HeloMacros] and [MailMacros]; a
// requested list replaces the MTA's own list for that stage, so the lists
// repeat what the MTAs send by default ("i", "{mail_addr}", ...). The TLS
// macros are requested at HELO and again at MAIL because a client may skip
// the EHLO after STARTTLS. The session's TLS facts are copied into the
// milter's own per-connection state whenever the MTA reports them, because
// go-milter v0.10.1 forgets HELO-stage macros on ABORT, which Postfix sends
// after every message, and Postfix sends no TLS macros at EOH/EOM.
//
// factsFromMacros turns the macros into [policy.Facts]: Postfix reports
// the subject and issuer common names of a trusted certificate only and
// omits unset macros, so "trusted" is the presence of {cert_issuer} (and
// {cert_subject}); "no certificate" and "untrusted certificate" look alike
// (policy.VerifyUnknown). Sendmail reports full DNs in OpenSSL's
// /C=../CN=.. form, CNs and {verify}, all xtext-encoded, and sends unset
// macros as empty strings. Fingerprints: on Postfix the policy-delegation
// server judges them (FingerprintsKnown is false); on Sendmail {cert_fp} is
// compared when it is a SHA-256 digest (CertFingerprintAlgorithm=sha256),
// while an MD5 {cert_md5} (Sendmail's default) cannot be compared with a
// SHA-256 pin, so a pinned endpoint then fails closed and the log says why.
//
// # What it decides
//
// Every MAIL FROM is judged with [policy.View.Judge] on the model that
// was current when the SMTP session connected, at the instant of the MAIL
// command (an exception applies until it expires, without a reload). The
// verdict's [policy.Outcome] gives the reply, the log word and the metric
// label, as it does for the policy-delegation server. A refused message
// gets
//
//	451 4.7.1 TLS required by local policy for this peer   (action = "defer")
//	550 5.7.1 TLS required by local policy for this peer   (action = "reject")
//
// and the precise reason goes to the log. Endpoints in monitor mode never
// refuse; uncovered peers pass. On Postfix the milter cannot see client
// certificate fingerprints: a message whose only open requirement is a
// fingerprint pin goes on with result=unchecked, and the
// policy-delegation server decides at RCPT TO. Any internal error or panic
// answers
//
//	451 4.3.0 TLS policy check failed temporarily, try again later
//
// so that nothing is accepted unjudged; for a dead milter the MTA must be
// configured to temp-fail (Postfix milter_default_action = tempfail,
// Sendmail F=T).
//
// # What it writes
//
// At end of message forged copies are removed first: every
// Authentication-Results header whose authserv-id some reader would take
// for ours (any case, trailing dots, comments anywhere, Unicode spaces such
// as VT, FF or NBSP around it, invisible format characters; see
// forgedAuthResults), and every
// Received header whose by-clause reads "by HOST (tlsgate)" with our host
// name. Then a Received trace line and an Authentication-Results header are
// inserted at the top, see receivedHeader and authResultsHeader.
// Nothing taken from a certificate or from the client reaches a header
// unescaped (headerText).
//
// If mail passes through the same MTA twice (for example a content filter
// re-injecting into a listener that also runs this milter), the second pass
// replaces the first stamp; attach the milter only to the listener that
// receives mail from the Internet. Run tlsgate before other milters that
// write Authentication-Results with the same authserv-id.
//
// # What it logs
//
// One line per decision, see formatDecision: tlsgate's own fields (result,
// endpoint, exception, unchecked) before anything the peer supplied. Warnings about MTA
// connections (go-milter's own included) are rate-limited (logx.Limit).
//
// # Limits
//
// Whoever can connect to the milter's socket is treated as a possible
// attacker: connections are capped (Options.MaxConns; at the cap the
// connection whose packet has been arriving the longest, else the
// longest-idle one, makes room), a packet must arrive within
// Options.PacketTimeout of its first byte and is at most 1 MiB, a
// connection may wait Options.IdleTimeout for its next packet, and the
// unfinished packets of all connections together may hold 32 MiB, over
// which the longest-stalled connection is closed. Packet buffers grow as
// bytes arrive and large ones are freed after use. See guardListener.
package milter
