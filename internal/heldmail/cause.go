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

// sendmailReasons are what Sendmail 8.17's tls_server and tls_rcpt
// rulesets (cf/m4/proto.m4, TLS_connection) answer, with the enhanced
// status 4.7.0 before them: mailq shows "(Deferred: 403 4.7.0 encryption
// too weak 0 less than 40)". The CN, subject and issuer checks are
// sendmailCheck.
var sendmailReasons = regexp.MustCompile(`\b4\.7\.0 (?:.* )?(encryption too weak 0 less than|other side does not support STARTTLS|encryption too weak|` +
	`STARTTLS disabled locally|STARTTLS temporarily not possible|authentication required|authentication failed|authentication failure|` +
	`not authenticated|no authentication requested|not listed in SANs|TLS handshake failed|STARTTLS failed|DANE check failed|STS lookup temp fail)`)

var sendmailCauses = map[string]Cause{
	"encryption too weak 0 less than":      NotOffered, // no STARTTLS: 0 bits
	"other side does not support STARTTLS": NotOffered,
	"encryption too weak":                  TooWeak,
	"STARTTLS disabled locally":            LocalTLS,
	"STARTTLS temporarily not possible":    LocalTLS,
	"authentication required":              NotVerified,
	"authentication failed":                NotVerified,
	"authentication failure":               NotVerified,
	"not authenticated":                    NotVerified,
	"no authentication requested":          NotVerified,
	"not listed in SANs":                   NameMismatch,
	"TLS handshake failed":                 Handshake,
	"STARTTLS failed":                      Handshake,
	"DANE check failed":                    Handshake,
	"STS lookup temp fail":                 PolicyLookup,
}

// sendmailCheck matches Sendmail's CN, subject and issuer checks:
// "403 4.7.0 CN wrong.example does not match mx1.example",
// "... Cert Subject /C=.../CN=... does not match ...", "... Cert Issuer ...".
var sendmailCheck = regexp.MustCompile(`\b4\.7\.0 (CN|Cert Subject|Cert Issuer) .* does not match `)

// sendmailTemp is Sendmail's answer when its access map (tlsgate's
// socketmap) fails or answers TEMP in the tls_rcpt, tls_server or try_tls
// ruleset: "451 4.3.0 Temporary system failure. Please try again later."
// A remote Sendmail whose own map fails answers the same words; for a
// recipient an endpoint covers, this reading is the likely one.
const sendmailTemp = "4.3.0 Temporary system failure"

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
	if strings.Contains(reason, " said: ") {
		// Postfix quoting the server's own reply, which is not about
		// our TLS requirements (it would be after "refused to start TLS").
		return NotTLS
	}
	if m := sendmailReasons.FindStringSubmatch(reason); m != nil {
		return sendmailCauses[m[1]]
	}
	if m := sendmailCheck.FindStringSubmatch(reason); m != nil {
		if m[1] == "Cert Issuer" {
			return NotVerified
		}
		return NameMismatch
	}
	if strings.Contains(reason, sendmailTemp) {
		return PolicyLookup
	}
	return NotTLS
}
