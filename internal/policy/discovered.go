package policy

import (
	"errors"
	"fmt"
	"strings"
)

// Source is where an outbound answer comes from.
type Source uint8

// Answer sources.
const (
	// SourceNone: no policy; the MTA's default applies.
	SourceNone Source = iota
	// SourceEndpoint: an endpoint's rules.
	SourceEndpoint
	// SourceDANE: the domain's DANE TLSA records under DNSSEC ("dane").
	SourceDANE
	// SourceMTASTS: the domain's MTA-STS policy in mode enforce
	// ("secure match=... servername=hostname").
	SourceMTASTS
)

// String returns "none", "endpoint", "dane" or "mta-sts", the words of
// log lines and `tlsgate query`.
func (s Source) String() string {
	switch s {
	case SourceEndpoint:
		return "endpoint"
	case SourceDANE:
		return "dane"
	case SourceMTASTS:
		return "mta-sts"
	}
	return "none"
}

// Discovered is what discovery found for a bare domain, in the form
// [MergeDiscovered] needs. The zero value is "no discovered policy".
type Discovered struct {
	// Source is SourceDANE or SourceMTASTS when Text is a policy,
	// SourceNone otherwise.
	Source Source
	// Text is the Postfix policy: "dane", or "secure match=<patterns>
	// servername=hostname"; "" without a policy.
	Text string
	// AllMX says, for "dane", that every MX host of the domain has usable
	// TLSA records under DNSSEC. Where one has not, Postfix's "dane" gives
	// it opportunistic TLS ("may") or unauthenticated TLS ("encrypt").
	AllMX bool
	// Temp says that the domain's policy cannot be decided now (its DANE
	// state is unknown because of a DNS failure while an MTA-STS policy or
	// a recent usable DANE result is held): the MTA must defer unless an
	// endpoint authenticates the peer anyway.
	Temp bool
	// Reason says why Temp (for the TEMP reply and the log line).
	Reason string
}

// TempError is the error of [MergeDiscovered] and [View.PostfixDiscovered]
// when the answer is TEMP because discovery cannot decide the domain's
// policy now.
type TempError struct {
	// Reason is discovery's reason.
	Reason string
}

// Error says why.
func (e *TempError) Error() string { return "discovered policy undecided: " + e.Reason }

// Security ranks of a Postfix TLS policy level: none < may < encrypt <
// authenticated (verify, secure, fingerprint, dane, dane-only). Postfix
// has no finer order: each authenticated level checks something the
// others do not.
const (
	rankNone = iota
	rankMay
	rankEncrypt
	rankAuthenticated
)

// postfixRank returns the rank of a policy text's level (its first word).
// An unknown level ranks none.
func postfixRank(text string) int {
	level, _, _ := strings.Cut(text, " ")
	switch level {
	case "may":
		return rankMay
	case "encrypt":
		return rankEncrypt
	case "verify", "secure", "fingerprint", "dane", "dane-only":
		return rankAuthenticated
	}
	return rankNone
}

// keptAttributes are the policy attributes an endpoint's answer carries
// over to a discovered level that replaces its own: they restrict the
// TLS session itself (protocols, cipher grade, excluded ciphers), not how
// the peer is authenticated, so they apply at every level.
var keptAttributes = [...]string{"protocols=", "ciphers=", "exclude="}

// MergeDiscovered merges the endpoint answer a for a bare-domain key
// (from [View.PostfixPolicy]) with d, what discovery found for the
// domain, so that the result is never weaker than either:
//
//   - nothing discovered: a as it is;
//   - an enforcing endpoint at an authenticated level (verify, secure,
//     fingerprint): the endpoint wins, its rules are what the
//     administrator pinned; Overrides names the discovered source it won
//     over (for the log line's overrides=);
//   - d.Temp otherwise: a *TempError (answer TEMP), never cached;
//   - an endpoint below authenticated (encrypt): the discovered level,
//     with the endpoint's protocols=, ciphers= and exclude= kept; but
//     "dane-only" for a discovered "dane" where not every MX host has
//     usable TLSA records ([DANEOnly]);
//   - an endpoint in monitor mode, or none: the discovered policy.
//
// The answer keeps a's Endpoint and Exception, so log lines still name
// the endpoint that covers the key. A discovered text whose level is not
// authenticated is an error: discovery only ever finds "dane" and
// "secure ...".
func MergeDiscovered(a Answer, d Discovered) (Answer, error) {
	if d.Text == "" && !d.Temp {
		return a, nil
	}
	if a.Authenticates() {
		if d.Text != "" {
			a.Overrides = d.Source
		}
		return a, nil
	}
	if d.Temp {
		reason := d.Reason
		if reason == "" {
			reason = "discovery cannot decide now"
		}
		return a, &TempError{Reason: reason}
	}
	if postfixRank(d.Text) != rankAuthenticated || (d.Source != SourceDANE && d.Source != SourceMTASTS) {
		return a, fmt.Errorf("policy: discovered policy %q from %s is not an authenticated level", d.Text, d.Source)
	}
	text := d.Text
	if DANEOnly(a, d) {
		text = "dane-only"
	}
	if a.Found {
		for _, attr := range strings.Fields(a.Text)[1:] {
			for _, k := range keptAttributes {
				if strings.HasPrefix(attr, k) {
					text += " " + attr
				}
			}
		}
	}
	a.Found, a.Text, a.Source = true, text, d.Source
	return a, nil
}

// DANEOnlyReason says why [MergeDiscovered] answers "dane-only" (for the
// log line and `tlsgate query`).
const DANEOnlyReason = "the endpoint requires encryption and not every MX host has usable TLSA records: " +
	"Postfix's dane would give those hosts opportunistic TLS, so only DANE-authenticated MX hosts are used"

// DANEOnly reports whether [MergeDiscovered] answers "dane-only" for the
// endpoint answer a and the discovered d: a is an enforcing endpoint's
// "encrypt" (it requires encryption, below authenticated) and d is "dane"
// for a domain where not every MX host has usable TLSA records.
//
// Postfix applies "dane" per MX host (smtp_tls_policy.c, dane_init and
// dane_incompat): a host with usable TLSA records is authenticated, one
// with only unusable records gets "encrypt", and one without TLSA records
// (or with insecure addresses) gets "may", opportunistic TLS, weaker than
// the endpoint's "encrypt". No Postfix level says "DANE where published,
// else at least encrypt"; "dane-only" uses only the MX hosts that DANE
// authenticates, and defers (4.7.5) the others, which is stricter than
// both the endpoint and the domain. Where every MX host is usable, "dane"
// and "dane-only" enforce the same and the domain's "dane" is kept; with
// no endpoint, or one in monitor mode, the domain's own "dane" applies.
func DANEOnly(a Answer, d Discovered) bool {
	level, _, _ := strings.Cut(d.Text, " ")
	return a.Found && postfixRank(a.Text) == rankEncrypt && d.Source == SourceDANE && level == "dane" && !d.AllMX && !d.Temp
}

// PostfixDiscovered answers an smtp_tls_policy_maps key like
// [View.PostfixPolicy], merged with d, what discovery found for the key
// ([MergeDiscovered]). The caller gives a non-zero d only for a bare
// domain (RFC 8461 §3.4: a ".parent" key, an explicit next hop with
// brackets or a port, and an address get no discovery). The answer is
// decided on this exact key, where the endpoint that decides it is
// already the one whose pattern is the most specific among the name and
// its parent domains (".example.com" for "mx.example.com"), so Postfix,
// which stops at the first key found, never falls through to a weaker
// ".parent" answer.
func (v View) PostfixDiscovered(key string, d Discovered) (Answer, error) {
	a, err := v.PostfixPolicy(key)
	if err != nil {
		return a, err
	}
	return MergeDiscovered(a, d)
}

// PostfixWalkDiscovered is [View.PostfixWalk] with discovery: discover
// returns what discovery found for each key Postfix asks (the zero
// Discovered for keys that get none).
func (v View) PostfixWalkDiscovered(nexthop string, discover func(key string) Discovered) Walk {
	return walk(PostfixKeys(nexthop), func(k string) (Answer, error) { return v.PostfixDiscovered(k, discover(k)) })
}

// IsTemp reports whether err (of [View.PostfixDiscovered]) means the
// discovered policy is undecided now.
func IsTemp(err error) bool {
	if err == nil {
		return false
	}
	var te *TempError
	return errors.As(err, &te)
}

// Authenticates reports whether a found Postfix answer is an
// authenticated level (verify, secure, fingerprint, dane, dane-only):
// then no discovered policy can change it ([MergeDiscovered]).
func (a Answer) Authenticates() bool { return a.Found && postfixRank(a.Text) == rankAuthenticated }
