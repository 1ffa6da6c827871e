package heldmail

import (
	"regexp"
	"strings"
)

// Cause says why a delay reason holds mail, when it is about TLS.
type Cause int

// The causes. Postfix says "Server certificate not verified" for an
// untrusted chain, a name that does not match and a pin that does not
// match alike (the reason is in a warning line of its log, not in the
// queue), so NotVerified includes name mismatches there; Sendmail names
// them (NameMismatch).
const (
	// NotTLS: the reason is not about TLS (a busy server, a 4xx reply).
	NotTLS Cause = iota
	// NotOffered: the server offers no STARTTLS, or refused it.
	NotOffered
	// NotVerified: the server's certificate did not verify (untrusted
	// chain, and on Postfix also a name or pin that does not match).
	NotVerified
	// NameMismatch: the certificate does not name the server, or its
	// subject is not the one required (Sendmail).
	NameMismatch
	// TooWeak: the cipher is weaker than required (Sendmail).
	TooWeak
	// Handshake: the TLS handshake failed (no common protocol or cipher
	// of the required grade, or the server broke it off).
	Handshake
	// PolicyLookup: the TLS policy lookup failed, so the MTA keeps the
	// mail (tlsgate down or answering TEMP, a DANE TLSA lookup error).
	PolicyLookup
	// LocalTLS: our own MTA cannot do TLS (no TLS engine, STARTTLS
	// disabled locally).
	LocalTLS
)

// String returns the cause as log lines write it: "not-offered",
// "not-verified", "name-mismatch", "too-weak", "handshake",
// "policy-lookup", "local-tls" or "not-tls".
func (c Cause) String() string {
	switch c {
	case NotOffered:
		return "not-offered"
	case NotVerified:
		return "not-verified"
	case NameMismatch:
		return "name-mismatch"
	case TooWeak:
		return "too-weak"
	case Handshake:
		return "handshake"
	case PolicyLookup:
		return "policy-lookup"
	case LocalTLS:
		return "local-tls"
	}
	return "not-tls"
}

// postfixReasons are the delay reasons Postfix 3.7 writes when TLS holds
// mail (smtp_proto.c, smtp_tls_policy.c; postqueue -j delay_reason, also
// after "delivery temporarily suspended: "), most specific first.
var postfixReasons = []struct {
	text  string
	cause Cause
}{
	{"TLS is required, but was not offered by host", NotOffered},
	{"refused to start TLS", NotOffered}, // "TLS is required, but host H refused to start TLS: ..."
	{"TLS is required, but our TLS engine is unavailable", LocalTLS},
	{"TLS is required, but unavailable", LocalTLS},
	{"TLS is required, but not available", LocalTLS},
	{"Cannot start TLS: handshake failure", Handshake},
	{"Server certificate not verified", NotVerified},
	{"Server certificate not trusted", NotVerified},
	{"TLS failure: Cannot verify server", NotVerified},
	{"client TLS configuration problem", PolicyLookup},
	{"TLSA lookup error", PolicyLookup},
}

// Sendmail 8.17 keeps, as the status of a message that one of its TLS
// rulesets refused (tls_server, tls_rcpt: TLS_connection in
// cf/m4/proto.m4), the ruleset's text without the reply code: mailq shows
// "(encryption too weak 0 less than 128)", "(CN wrong.example does not
// match mx1.example)", "(authentication failed)". A server's own reply
// is kept as "Deferred: 451 4.3.0 ...": a status that starts with the
// ruleset's words is Sendmail's, never the server's.
var sendmailReasons = regexp.MustCompile(`^(?:(encryption too weak 0 less than)|(other side does not support STARTTLS)|(encryption too weak)|` +
	`(STARTTLS disabled locally|STARTTLS temporarily not possible)|(authentication required|authentication failed|authentication failure|not authenticated|no authentication requested)|` +
	`(\S+ not listed in SANs|(?:CN|Cert Subject) .* does not match )|(Cert Issuer .* does not match )|` +
	`(TLS handshake failed|STARTTLS failed|DANE check failed)|` +
	`(STS lookup temp fail|Temporary system failure|access map: lookup \((?:TLS_Rcpt|TLS_Srv|Try_TLS|TLS_Clt):[^)]*\): deferred))`)

// sendmailCauses are the causes of sendmailReasons' groups, in order.
var sendmailCauses = []Cause{NotOffered, NotOffered, TooWeak, LocalTLS, NotVerified, NameMismatch, NotVerified, Handshake, PolicyLookup}

// Classify returns the cause of a delay reason as the MTA wrote it in its
// queue, or NotTLS.
func Classify(reason string) Cause {
	if reason == "" {
		return NotTLS
	}
	for _, r := range postfixReasons {
		if strings.Contains(reason, r.text) {
			return r.cause
		}
	}
	if m := sendmailReasons.FindStringSubmatchIndex(reason); m != nil {
		for g := range sendmailCauses {
			if m[2*g+2] >= 0 {
				return sendmailCauses[g]
			}
		}
	}
	return NotTLS
}
