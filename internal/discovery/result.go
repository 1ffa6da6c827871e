package discovery

import (
	"fmt"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// AnswerKind is the kind of a socketmap answer.
type AnswerKind uint8

const (
	// NotFound: discovery has no policy for the domain (socketmap
	// NOTFOUND); the MTA's default applies.
	NotFound AnswerKind = iota
	// Found: Answer.Text is the policy (socketmap OK).
	Found
	// Temp: the domain's policy cannot be decided now (socketmap TEMP):
	// DANE is unknown because of a DNS failure while an MTA-STS policy or
	// a recent usable DANE result is held. Never cached.
	Temp
)

// String returns "NOTFOUND", "OK" or "TEMP", the socketmap status words.
func (k AnswerKind) String() string {
	switch k {
	case NotFound:
		return "NOTFOUND"
	case Found:
		return "OK"
	case Temp:
		return "TEMP"
	}
	return fmt.Sprintf("AnswerKind(%d)", uint8(k))
}

// Answer is what one MTA gets for a domain.
type Answer struct {
	// Kind is NotFound, Found or Temp.
	Kind AnswerKind
	// Text is the policy when Kind is Found: "dane", or
	// "secure match=<patterns> servername=hostname".
	Text string
}

// Source is where a Postfix answer comes from.
type Source uint8

const (
	// SourceNone: no discovered policy (NotFound or Temp).
	SourceNone Source = iota
	// SourceDANE: usable DANE TLSA records under DNSSEC: "dane".
	SourceDANE
	// SourceMTASTS: an MTA-STS policy in mode enforce: "secure ...".
	SourceMTASTS
	numSources
)

// String returns "none", "dane" or "mta-sts".
func (s Source) String() string {
	switch s {
	case SourceNone:
		return "none"
	case SourceDANE:
		return "dane"
	case SourceMTASTS:
		return "mta-sts"
	}
	return fmt.Sprintf("Source(%d)", uint8(s))
}

// CacheState says how a lookup used the cache.
type CacheState uint8

const (
	// CacheHit: answered from the cache, no network.
	CacheHit CacheState = iota
	// CacheMiss: nothing was cached; answered from DNS (and HTTPS).
	CacheMiss
	// CacheRefreshed: the cached data had expired (or a refresh was
	// asked for) and was renewed from the network.
	CacheRefreshed
	// CacheStale: renewing expired data failed, and the answer keeps
	// what was cached (an MTA-STS policy is applied until its max_age,
	// RFC 8461 §3.3, even when its TXT record vanished, §3.1).
	CacheStale
	numCacheStates
)

// String returns "hit", "miss", "refreshed" or "stale".
func (c CacheState) String() string {
	switch c {
	case CacheHit:
		return "hit"
	case CacheMiss:
		return "miss"
	case CacheRefreshed:
		return "refreshed"
	case CacheStale:
		return "stale"
	}
	return fmt.Sprintf("CacheState(%d)", uint8(c))
}

// DANEState is what discovery knows about a domain's DANE.
type DANEState uint8

const (
	// DANEOff: DANE discovery is disabled, or its self-check failed.
	DANEOff DANEState = iota
	// DANENone: DANE does not apply (insecure or absent MX, no usable
	// TLSA record on a secure MX).
	DANENone
	// DANEUsable: the MX RRset and an MX host's addresses are secure and
	// that host has a usable TLSA record (usage 2 or 3).
	DANEUsable
	// DANEUnknown: a DNS failure (SERVFAIL, bogus, timeout) left it
	// undecided.
	DANEUnknown
)

// String returns "off", "none", "usable" or "unknown".
func (s DANEState) String() string {
	switch s {
	case DANEOff:
		return "off"
	case DANENone:
		return "none"
	case DANEUsable:
		return "usable"
	case DANEUnknown:
		return "unknown"
	}
	return fmt.Sprintf("DANEState(%d)", uint8(s))
}

// Change is a set of policy changes of a domain, for a log line.
type Change uint8

const (
	// ChangeSTSNew: an MTA-STS policy was fetched under a new id (or for
	// the first time).
	ChangeSTSNew Change = 1 << iota
	// ChangeSTSGone: the held MTA-STS policy expired or was dropped.
	ChangeSTSGone
	// ChangeDANEAppeared: DANE became usable.
	ChangeDANEAppeared
	// ChangeDANEVanished: DANE was usable and is not any more.
	ChangeDANEVanished
)

// String returns the changes as "sts-new,dane-appeared" ("" for none).
func (c Change) String() string {
	var parts []string
	for _, x := range []struct {
		c    Change
		name string
	}{{ChangeSTSNew, "sts-new"}, {ChangeSTSGone, "sts-gone"}, {ChangeDANEAppeared, "dane-appeared"}, {ChangeDANEVanished, "dane-vanished"}} {
		if c&x.c != 0 {
			parts = append(parts, x.name)
		}
	}
	return strings.Join(parts, ",")
}

// Result is the outcome of a lookup.
type Result struct {
	// Domain is the normalized domain (lower case, no trailing dot).
	Domain string
	// Postfix is the answer for Postfix's smtp_tls_policy_maps: "dane"
	// when DANE is usable, else "secure match=... servername=hostname"
	// for an MTA-STS policy in mode enforce, else NotFound; Temp as
	// described there. Never "dane-only": that only the merge with an
	// endpoint that requires encryption gives (see DANEAllMX).
	Postfix Answer
	// Sendmail is the answer for the map of Sendmail's FEATURE(`sts'):
	// the MTA-STS policy in mode enforce ("secure match=...
	// servername=hostname"), else NotFound. Sendmail 8.17 on Debian has no
	// DANE, so DANE never shows here.
	Sendmail Answer
	// Source is where the Postfix answer comes from.
	Source Source
	// Cache says how the cache was used.
	Cache CacheState
	// DANE is the domain's DANE state as used for this answer.
	DANE DANEState
	// DANEAllMX says, with DANE DANEUsable, that every MX host of the
	// domain (up to the first 10) has secure addresses and a secure,
	// usable TLSA record. When it is false some MX host has not, and
	// Postfix's "dane" gives that host opportunistic TLS ("may": no TLSA
	// records, or insecure addresses) or unauthenticated TLS ("encrypt":
	// only unusable records), weaker than an endpoint's "encrypt"; the
	// merge with such an endpoint answers "dane-only" (see
	// policy.MergeDiscovered).
	DANEAllMX bool
	// STSMode is the mode of the MTA-STS policy held (0 if none).
	STSMode mtasts.Mode
	// PolicyID is the id of the MTA-STS policy held ("" if none).
	PolicyID string
	// Expires is when the answer stops being valid without a refresh
	// (zero for Temp).
	Expires time.Time
	// Change is set on the result of the lookup that noticed a policy
	// change (lookups collapsed into it share it); the same change is
	// reported once through Config.OnEvent.
	Change Change
	// Reason says why the answer is what it is when that is not
	// obvious: why there is no policy, why TEMP, why stale.
	Reason string
}

// EventKind is the kind of an [Event].
type EventKind uint8

const (
	// EventChange: a domain's policy changed (Event.Change, Event.Result).
	EventChange EventKind = iota
	// EventFetchFailed: an MTA-STS policy fetch failed (Event.Err is a
	// *mtasts.FetchError).
	EventFetchFailed
	// EventDNSFailed: a DNS lookup failed (Event.Err is a *DNSError).
	EventDNSFailed
	// EventCache: the cache file could not be read or written (Event.Err);
	// an unreadable file was renamed to <cache_file>.bad.
	EventCache
	// EventSelfCheck: the resolver self-check failed (Event.Err: DANE is
	// off) or passed again after failing (Event.Err nil).
	EventSelfCheck
)

// String returns "change", "fetch_failed", "dns_failed", "cache",
// "selfcheck".
func (k EventKind) String() string {
	switch k {
	case EventChange:
		return "change"
	case EventFetchFailed:
		return "fetch_failed"
	case EventDNSFailed:
		return "dns_failed"
	case EventCache:
		return "cache"
	case EventSelfCheck:
		return "selfcheck"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something a log line should say; see Config.OnEvent.
type Event struct {
	Kind   EventKind
	Domain string
	Change Change
	Result Result
	Err    error
}

// Stats are counters for metrics, from [Discoverer.Stats]. Counters only
// grow; Entries and Bytes are the cache's current size.
type Stats struct {
	// Answers counts Postfix answers by source (index Source).
	Answers [numSources]uint64
	// Temp counts Temp answers (also counted as SourceNone).
	Temp uint64
	// Cache counts lookups by cache state (index CacheState).
	Cache [numCacheStates]uint64
	// Entries and Bytes are the cache's size now (Bytes estimated).
	Entries int
	Bytes   int64
	// Evictions counts domains dropped to keep within the cache bounds.
	Evictions uint64
	// Fetches counts MTA-STS policy fetches tried.
	Fetches uint64
	// FetchFailures counts failed fetches by kind (index
	// mtasts.FetchErrorKind).
	FetchFailures [mtasts.NumFetchErrorKinds]uint64
	// DNSQueries counts DNS queries sent.
	DNSQueries uint64
	// DNSFailures counts failed DNS queries by kind (index DNSErrorKind).
	DNSFailures [numDNSErrorKinds]uint64
	// SelfCheckOK says whether the last resolver self-check passed.
	SelfCheckOK bool
}
