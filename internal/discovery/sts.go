package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// stsOutcome is the MTA-STS part of a record after one resolve.
type stsOutcome struct {
	txtID      string
	txtChecked int64
	txtExpires int64
	pol        *policyRec
	stsErr     string
	retryAfter int64
	failedID   string
	// stale: a held policy is kept although its renewal failed or its TXT
	// record vanished.
	stale bool
}

// evalSTS renews the MTA-STS part of old (RFC 8461 §3, §5.1): check the
// TXT record if due; fetch the policy when there is a record and no
// policy is held, its id changed, the policy is due for its daily
// refetch, or force; keep a held policy until its max_age when the
// record vanished or the fetch failed; after a failed fetch, fetch again
// only after cfg.STSRetry unless the id changes.
func (d *Discoverer) evalSTS(ctx context.Context, key string, old *record, now int64, force, txtDue bool) stsOutcome {
	var o stsOutcome
	if old != nil {
		o = stsOutcome{txtID: old.txtID(), txtChecked: old.txtChecked.unix(), txtExpires: old.txtExpires.unix(),
			pol: old.policy(), stsErr: old.stsErr(), retryAfter: old.retryAfter(), failedID: old.failedID()}
	}
	if o.pol != nil && now >= o.pol.expires {
		o.pol = nil
	}
	if txtDue {
		id, ttl, err := d.lookupSTSRecord(ctx, key)
		o.txtChecked = now
		var dnsErr *DNSError
		switch {
		case errors.As(err, &dnsErr):
			d.event(Event{Kind: EventDNSFailed, Domain: key, Err: err})
			o.stsErr = "MTA-STS record lookup failed: " + err.Error()
			if o.pol != nil {
				o.txtExpires = now + failRetry
				o.stale = true
			} else {
				o.txtExpires = now // not cached
			}
			// No fetch on a record not seen now.
			return o
		case err != nil:
			o.txtID = ""
			o.txtExpires = now + clampTTL(ttl)
			o.stsErr = err.Error()
			if o.pol != nil {
				// RFC 8461 §3.1: a vanished record does not drop a
				// cached policy.
				o.stale = true
				o.stsErr += "; the cached policy applies until it expires"
			} else if errors.Is(err, mtasts.ErrNoRecord) {
				o.stsErr = ""
			}
		default:
			o.txtID = id
			o.txtExpires = now + clampTTL(ttl)
			if o.failedID != id {
				o.stsErr = ""
			}
		}
	}
	if o.txtID == "" {
		return o
	}
	need := o.pol == nil || o.pol.id != o.txtID || now >= o.pol.refetch || force
	if need && !force && o.failedID == o.txtID && now < o.retryAfter {
		need = false
	}
	if !need {
		return o
	}
	d.fetches.Add(1)
	p, err := d.fetcher.Fetch(ctx, key)
	if err != nil {
		var fe *mtasts.FetchError
		if errors.As(err, &fe) {
			d.fetchFail[fe.Kind].Add(1)
		} else {
			d.fetchFail[mtasts.FetchNetwork].Add(1)
		}
		d.event(Event{Kind: EventFetchFailed, Domain: key, Err: err})
		o.retryAfter = now + int64(d.cfg.STSRetry.Seconds())
		o.failedID = o.txtID
		o.stsErr = err.Error()
		if o.pol != nil {
			o.stale = true
			o.stsErr += fmt.Sprintf("; the cached policy (id %s) applies until it expires", o.pol.id)
			// Try again after the back-off, not before.
			cp := *o.pol
			cp.refetch = max(cp.refetch, o.retryAfter)
			o.pol = &cp
		}
		return o
	}
	life := min(max(int64(p.MaxAge), minTTL), mtasts.MaxMaxAge)
	o.pol = &policyRec{
		id:      o.txtID,
		policy:  p,
		answer:  p.Answer(),
		fetched: now,
		expires: now + life,
		refetch: now + min(maxRefetch, life*3/4),
	}
	o.retryAfter, o.failedID, o.stsErr = 0, "", ""
	return o
}

// lookupSTSRecord looks up "_mta-sts.<key>" TXT and selects the policy
// record. A missing record is mtasts.ErrNoRecord (with the negative
// TTL); a DNS failure is a *DNSError.
func (d *Discoverer) lookupSTSRecord(ctx context.Context, key string) (string, uint32, error) {
	rs, err := d.dns.lookup(ctx, "_mta-sts."+key, dns.TypeTXT)
	if err != nil {
		return "", 0, err
	}
	txts := make([]string, 0, len(rs.rrs))
	for _, rr := range rs.rrs {
		txts = append(txts, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	r, err := mtasts.SelectRecord(txts)
	if err != nil {
		return "", rs.ttl, err
	}
	return r.ID, rs.ttl, nil
}
