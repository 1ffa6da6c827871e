package discovery

import (
	"math"
	"sort"
	"sync/atomic"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// TTL clamps, as postfix-tlspol does: DNS answers are cached for at
// least minTTL and at most maxTTL; an MTA-STS policy for at least minTTL
// and at most its max_age capped at mtasts.MaxMaxAge.
const (
	minTTL = 180
	maxTTL = 30 * 24 * 3600
	// failRetry is how soon a failed TXT lookup is retried while a
	// policy is held (the policy is served meanwhile).
	failRetry = 60
	// maxRefetch is the longest a held policy goes without being fetched
	// again (RFC 8461 §5.1 asks for about daily).
	maxRefetch = 24 * 3600
)

func clampTTL(ttl uint32) int64 { return min(max(int64(ttl), minTTL), maxTTL) }

// policyRec is an MTA-STS policy held for a domain. Immutable.
type policyRec struct {
	id      string // the TXT id it was fetched under
	policy  *mtasts.Policy
	answer  string // policy.Answer(): "" unless mode enforce
	fetched int64
	expires int64 // fetched + max_age (clamped)
	refetch int64 // when to fetch again although the id is the same
}

// unix32 is a time in Unix seconds in 32 bits (until 2106): the cache
// holds up to hundreds of thousands of records, and half their size was
// 64-bit times.
type unix32 uint32

// never is the largest unix32, "no limit".
const never = unix32(math.MaxUint32)

// u32 converts Unix seconds, clamped to 0..never.
func u32(t int64) unix32 {
	switch {
	case t <= 0:
		return 0
	case t >= int64(never):
		return never
	}
	return unix32(t)
}

// unix returns t as Unix seconds.
func (t unix32) unix() int64 { return int64(t) }

// stsPart is the MTA-STS state of a domain that has some: a TXT record,
// a policy or a failure. Most domains have none, and their records do
// not pay for it.
type stsPart struct {
	txtID string // the id of the _mta-sts TXT record ("": none)
	pol   *policyRec
	// The last failure (fetch or TXT lookup) and the fetch back-off.
	err        string
	retryAfter int64
	failedID   string
}

// record is everything known about one domain. Immutable once stored:
// a refresh stores a new record. It is 64 bytes: the cache holds up to
// hundreds of thousands.
type record struct {
	// DANE (dane is DANEOff when not evaluated; never DANEUnknown).
	dane DANEState
	// daneFlags qualify dane DANEUsable (daneAllMX, daneAllMXUnread).
	// The byte sits in the padding after dane: the record stays 64 bytes.
	daneFlags uint8
	// gen is the Discoverer's DANE generation when the record was made;
	// records of an older generation are refreshed on their next lookup.
	gen         uint32
	daneChecked unix32
	daneExpires unix32
	daneUsable  unix32 // last time DANE was seen usable (0: never)
	// When the MTA-STS TXT record was checked and when that expires.
	txtChecked unix32
	txtExpires unix32
	// fresh: lookups before this are answered from the record.
	fresh unix32
	// refreshAt: a lookup or Run after this refreshes in the background.
	refreshAt  unix32
	daneReason string
	// sts is nil for a domain without MTA-STS record, policy or failure.
	sts *stsPart
}

// The bits of record.daneFlags.
const (
	// daneAllMX: every MX host has usable DANE (daneOutcome.allMX).
	daneAllMX uint8 = 1 << iota
	// daneAllMXUnread: read from a cache file written without
	// dane_all_mx; daneAllMX is unknown and unset (the stricter answer)
	// until DANE is evaluated again, which the next lookup starts.
	daneAllMXUnread
)

// allMX reports whether every MX host has usable DANE.
func (rec *record) allMX() bool { return rec.daneFlags&daneAllMX != 0 }

// txtID, policy, stsErr, retryAfter and failedID read rec.sts.
func (rec *record) txtID() string {
	if rec.sts == nil {
		return ""
	}
	return rec.sts.txtID
}

func (rec *record) policy() *policyRec {
	if rec.sts == nil {
		return nil
	}
	return rec.sts.pol
}

func (rec *record) stsErr() string {
	if rec.sts == nil {
		return ""
	}
	return rec.sts.err
}

func (rec *record) retryAfter() int64 {
	if rec.sts == nil {
		return 0
	}
	return rec.sts.retryAfter
}

func (rec *record) failedID() string {
	if rec.sts == nil {
		return ""
	}
	return rec.sts.failedID
}

// setSTS sets the MTA-STS state, nil when there is none.
func (rec *record) setSTS(txtID string, pol *policyRec, err string, retryAfter int64, failedID string) {
	if txtID == "" && pol == nil && err == "" && retryAfter == 0 && failedID == "" {
		rec.sts = nil
		return
	}
	rec.sts = &stsPart{txtID: txtID, pol: pol, err: err, retryAfter: retryAfter, failedID: failedID}
}

// refreshPoint returns the time three quarters into [checked, expires].
func refreshPoint(checked, expires int64) int64 {
	if expires <= checked {
		return expires
	}
	return checked + (expires-checked)*3/4
}

// size estimates the memory of an entry holding rec, in bytes: the
// fixed structures (map slot, entry, record) plus the strings and the
// policy.
func (rec *record) size(key string) int64 {
	const fixed = 48 + 32 + 64 // map slot (with its share of growth room), entry, record
	n := int64(fixed + len(key) + len(rec.daneReason))
	if st := rec.sts; st != nil {
		n += 64 + int64(len(st.txtID)+len(st.err)+len(st.failedID))
	}
	if p := rec.policy(); p != nil {
		n += 96 + int64(len(p.id)+len(p.answer))
		for _, m := range p.policy.MX {
			n += 16 + int64(len(m))
		}
		for _, m := range p.policy.Dropped {
			n += 16 + int64(len(m))
		}
	}
	return n
}

// entry is the cache slot of one domain. Its size in bytes is
// rec.size(key), kept up to date in Discoverer.bytes.
type entry struct {
	key  string
	rec  atomic.Pointer[record]
	used atomic.Uint32 // Unix seconds of the last lookup (unix32)
	busy atomic.Bool   // a background refresh is running
}

// lastUsed returns the time of the entry's last lookup.
func (e *entry) lastUsed() int64 { return int64(e.used.Load()) }

// setUsed records a lookup at now.
func (e *entry) setUsed(now int64) { e.used.Store(uint32(u32(now))) }

// get returns the entry of key, or nil.
func (d *Discoverer) get(key string) *entry {
	d.mu.RLock()
	e := d.entries[key]
	d.mu.RUnlock()
	return e
}

// store puts rec for key into the cache and evicts if the bounds are
// exceeded.
func (d *Discoverer) store(key string, rec *record, used int64) {
	sz := rec.size(key)
	d.mu.Lock()
	e := d.entries[key]
	if e == nil {
		e = &entry{key: key}
		e.setUsed(used)
		d.entries[key] = e
	} else {
		sz -= e.rec.Load().size(key)
	}
	e.rec.Store(rec)
	d.bytes += sz
	over := len(d.entries) > d.cfg.CacheEntries || d.bytes > d.cfg.CacheBytes
	d.mu.Unlock()
	d.dirty.Store(true)
	if over {
		d.evict()
	}
}

// remove drops key's entry.
func (d *Discoverer) remove(key string) bool {
	d.mu.Lock()
	e, ok := d.entries[key]
	if ok {
		delete(d.entries, key)
		d.bytes -= e.rec.Load().size(key)
	}
	d.mu.Unlock()
	if ok {
		d.dirty.Store(true)
	}
	return ok
}

// evict drops the least recently used entries until the cache is within
// 90% of both bounds, so that evictions come in batches rather than on
// every insert. The sort runs without the lock; lookups go on meanwhile.
func (d *Discoverer) evict() {
	d.evictMu.Lock()
	defer d.evictMu.Unlock()
	type cand struct {
		e    *entry
		used int64
	}
	d.mu.RLock()
	if len(d.entries) <= d.cfg.CacheEntries && d.bytes <= d.cfg.CacheBytes {
		d.mu.RUnlock()
		return
	}
	cands := make([]cand, 0, len(d.entries))
	for _, e := range d.entries {
		cands = append(cands, cand{e, e.lastUsed()})
	}
	d.mu.RUnlock()
	sort.Slice(cands, func(i, j int) bool { return cands[i].used < cands[j].used })
	wantEntries := d.cfg.CacheEntries * 9 / 10
	wantBytes := d.cfg.CacheBytes / 10 * 9
	d.mu.Lock()
	for _, c := range cands {
		if len(d.entries) <= wantEntries && d.bytes <= wantBytes {
			break
		}
		if cur, ok := d.entries[c.e.key]; ok && cur == c.e {
			delete(d.entries, c.e.key)
			d.bytes -= c.e.rec.Load().size(c.e.key)
			d.evictions.Add(1)
		}
	}
	d.mu.Unlock()
	d.dirty.Store(true)
}

// finish computes rec.fresh and rec.refreshAt from its parts.
func (d *Discoverer) finish(rec *record, now int64) {
	fresh, refresh := int64(never), int64(never)
	if rec.dane != DANEOff || d.daneOn() {
		fresh = min(fresh, rec.daneExpires.unix())
		refresh = min(refresh, refreshPoint(rec.daneChecked.unix(), rec.daneExpires.unix()))
	}
	if d.cfg.MTASTS {
		fresh = min(fresh, rec.txtExpires.unix())
		refresh = min(refresh, refreshPoint(rec.txtChecked.unix(), rec.txtExpires.unix()))
		if p := rec.policy(); p != nil {
			fresh = min(fresh, p.expires)
			refresh = min(refresh, max(p.refetch, rec.retryAfter()))
		} else if rec.txtID() != "" && rec.failedID() == rec.txtID() && rec.retryAfter() > now {
			// A fetch failed and nothing is held: try again after the
			// back-off rather than only when the TXT record expires.
			fresh = min(fresh, rec.retryAfter())
		}
	}
	rec.fresh, rec.refreshAt = u32(fresh), u32(min(refresh, fresh))
}
