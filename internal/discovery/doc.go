// Package discovery finds the TLS policy a mail domain publishes for
// itself, MTA-STS (RFC 8461) and DANE (RFC 7672), caches it, and turns it
// into the answer Postfix's smtp_tls_policy_maps and Sendmail's
// FEATURE(`sts') map expect. It is the engine behind the policy daemon's
// answers for next hops that no endpoint covers; merging with endpoints
// happens in the caller.
//
// # Keys
//
// Only bare domains are discovered ([BareDomain]): ".parent", "[host]",
// "[host]:port", "host:port" and address keys get an error matching
// [ErrNotDomain] and the caller answers NOTFOUND (RFC 8461 §3.4: never a
// parent domain's policy).
//
// # Answers
//
// For Postfix, in this order ([Result.Postfix]):
//
//   - "dane" when the MX RRset is DNSSEC-secure and at least one MX host
//     has secure address records and a secure TLSA RRset with a usable
//     record (usage 2 or 3, a valid selector and matching type). Postfix
//     then checks every MX itself (and refuses one whose TLSA records do
//     not match its certificate). Never "dane-only": only an endpoint
//     asks for that. An insecure (unsigned) domain never gets "dane",
//     whatever TLSA records it has; a bogus answer counts as a DNS
//     failure.
//   - "secure match=<patterns> servername=hostname" for an MTA-STS policy
//     in mode enforce: the policy's mx patterns joined by ':', "*.x"
//     written ".x", lower case, IP addresses and invalid entries dropped;
//     never an empty match= (then there is no policy).
//   - NOTFOUND otherwise (mode testing or none included).
//   - TEMP only when the DANE state is unknown because of a DNS failure
//     while an MTA-STS policy in mode enforce or a recent usable DANE
//     result (Config.DANEGrace) is held. TEMP is never cached.
//
// For Sendmail ([Result.Sendmail]): the MTA-STS answer alone; Sendmail
// 8.17's FEATURE(`sts') (cf/feature/sts.m4, proto.m4 STS_Check, Set_SNI)
// looks the recipient domain up in its "sts" map, takes the same
// "secure match=... servername=hostname" syntax, requires a verified
// certificate, an MX name in the match list (or, for ".x", one label
// below x) and a matching subjectAltName. It has no DANE, so DANE never
// appears in that answer.
//
// # Failures and the cache
//
// A failed policy fetch (status other than 200, a redirect, a
// Content-Type other than text/plain, a body over 64 KiB, a TLS error)
// with nothing cached means no policy, with a reason in [Result.Reason]
// and an [Event] for a log line; it is tried again after Config.STSRetry.
// A cached policy is applied until its max_age even when its TXT record
// vanished or a refresh failed ([CacheStale]); a new TXT id makes a
// refetch. DNS answers are cached for their TTL clamped to 180 s .. 30
// days, policies for max_age (at least 180 s, at most one year). The
// cache is bounded (entries and estimated bytes, least recently used
// out first), saved atomically to Config.CacheFile and loaded by [New],
// so a restart answers from it even with the network down. Concurrent
// lookups of one domain share one discovery. Domains looked up within
// Config.RefreshHorizon are refreshed ahead of expiry; others just
// expire, so domains nobody mails any more cause no traffic.
//
// # DNS trust
//
// Queries carry the DO bit and go to one resolver (Config.Resolver). Its
// AD bit is trusted only on a loopback address unless
// Config.TrustRemoteAD; [Discoverer.SelfCheck] requires the AD bit on a
// known signed name and turns DANE off with one clear error otherwise.
package discovery
