// Package policy is tlsgate's endpoint model: it loads the TOML file in
// which a mail administrator names TLS endpoints, refuses anything the chosen
// MTA could not enforce, matches peers to endpoints and turns requirements
// into verdicts (inbound) and MTA policy text (outbound).
//
// The package is pure: no sockets, no logging, no clock. Every decision is
// made on a [View], the policy at an instant the caller gives
// ([Policy.At]), because exceptions end at a date without a reload. The
// milter and the policy daemon are thin adapters that translate what the
// MTA reports into [Facts] and [View.Judge] verdicts (whose [Outcome]
// carries the SMTP reply, log word and metric label), or hand a key to
// [View.Outbound] and relay the answer; [View.PostfixWalk] and the
// Sendmail walks show what the MTA asks after a key that is not found.
//
// # Files
//
// [Load] reads the main file and the files its include patterns name
// (one file per partner, [[endpoint]] tables only), compiles each file on
// its own and assembles the policy: the endpoints of all files, their
// index, exceptions and nesting, checked across files. A [Loader] keeps
// what it compiled of each file by path and content, so that a reload
// compiles only the files that changed, in parallel; [Diff] says what
// changed and [Same] proves two loads equal. Each file is read so that
// one caught half-written is never taken (see readFile).
//
// # Host patterns
//
// An endpoint's hosts are written as
//
//	example.com         that name only
//	.example.com        any name below example.com (not example.com itself)
//	mx1.example.com     a host name (the same as a domain: exact)
//	192.0.2.10          one address (IPv4 or IPv6)
//	198.51.100.0/24     an address range
//
// Names are compared case-insensitively, a trailing dot is ignored and
// internationalised names are converted to A-labels. Each direction is
// decided on its own, among the endpoints that define it ([Endpoint.Defines]):
// the most specific pattern wins for a key, an exact name or address over
// the longest matching subdomain pattern or CIDR range, over shorter ones.
// A pattern may appear in one endpoint per direction.
//
// # Never weaker
//
// An endpoint nested in another (a pattern of the other covers one of its
// own) must be at least as strict in each direction both define
// ([Rule.AtLeastAsStrict]), or load fails, unless it declares itself an
// [Exception] to that endpoint, which ends at its date. So the endpoint
// that decides a key is at least as strict as every endpoint whose
// patterns match it, by construction; the property test TestNeverWeaker
// checks it against each MTA's lookup walk.
//
// # What each MTA can enforce
//
// Postfix 3.7 reports to a milter only the subject and issuer common name
// of a trusted client certificate; its policy-delegation protocol adds
// SHA-256 fingerprints (also for untrusted certificates). Its outbound TLS
// policy table can require encryption, a validated chain with a host-name
// match (`match=`), fingerprints and per-destination trust anchors
// (`tafile=`), but it cannot compare distinguished names and cannot restrict
// TLS 1.3 cipher suites per destination. Sendmail 8.17 reports full DNs,
// `{verify}`, CNs and a certificate fingerprint, and its access map supports
// `ENCR:bits`, `VERIFY:bits`, `CN:`, `CS:` and `CI:` but no fingerprints.
// A requirement the configured MTA cannot enforce is a load error that says
// why and what to write instead; it is never silently dropped.
//
// References: Postfix TLS_README ("TLS policy table"), socketmap_table(5),
// SMTPD_POLICY_README, MILTER_README; Sendmail cf/README ("STARTTLS") and
// cf/m4/proto.m4 (TLS_connection, TLS_req).
package policy
