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

// record is everything known about one domain. Immutable once stored:
// a refresh stores a new record. Times are Unix seconds.
type record struct {
	// DANE (dane is DANEOff when not evaluated; never DANEUnknown).
	dane        DANEState
	daneChecked int64
	daneExpires int64
	daneUsable  int64 // last time DANE was seen usable (0: never)
	daneReason  string

	// MTA-STS TXT record ("" txtID: none).
	txtID      string
	txtChecked int64
	txtExpires int64
	// The policy held, if any.
	pol *policyRec
	// The last failure (fetch or TXT lookup) and the fetch back-off.
	stsErr     string
	retryAfter int64
	failedID   string

	// gen is the Discoverer's DANE generation when the record was made;
	// records of an older generation are refreshed on their next lookup.
	gen uint32
	// fresh: lookups before this are answered from the record.
	fresh int64
	// refreshAt: a lookup or Run after this refreshes in the background.
	refreshAt int64
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
	const fixed = 64 + 64 + 208
	n := int64(fixed + 2*len(key) + len(rec.daneReason) + len(rec.txtID) + len(rec.stsErr) + len(rec.failedID))
	if p := rec.pol; p != nil {
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

// entry is the cache slot of one domain.
type entry struct {
	key  string
	rec  atomic.Pointer[record]
	used atomic.Int64 // Unix seconds of the last lookup
	busy atomic.Bool  // a background refresh is running
	size int64        // guarded by Discoverer.mu
}

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
		e.used.Store(used)
		d.entries[key] = e
	}
	e.rec.Store(rec)
	d.bytes += sz - e.size
	e.size = sz
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
		d.bytes -= e.size
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
		cands = append(cands, cand{e, e.used.Load()})
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
			d.bytes -= c.e.size
			d.evictions.Add(1)
		}
	}
	d.mu.Unlock()
	d.dirty.Store(true)
}

// finish computes rec.fresh and rec.refreshAt from its parts.
func (d *Discoverer) finish(rec *record, now int64) {
	fresh, refresh := int64(math.MaxInt64), int64(math.MaxInt64)
	if rec.dane != DANEOff || d.daneOn() {
		fresh = min(fresh, rec.daneExpires)
		refresh = min(refresh, refreshPoint(rec.daneChecked, rec.daneExpires))
	}
	if d.cfg.MTASTS {
		fresh = min(fresh, rec.txtExpires)
		refresh = min(refresh, refreshPoint(rec.txtChecked, rec.txtExpires))
		if p := rec.pol; p != nil {
			fresh = min(fresh, p.expires)
			refresh = min(refresh, max(p.refetch, rec.retryAfter))
		} else if rec.txtID != "" && rec.failedID == rec.txtID && rec.retryAfter > now {
			// A fetch failed and nothing is held: try again after the
			// back-off rather than only when the TXT record expires.
			fresh = min(fresh, rec.retryAfter)
		}
	}
	rec.fresh, rec.refreshAt = fresh, min(refresh, fresh)
}
