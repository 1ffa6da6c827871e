package discovery

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// fetcher fetches MTA-STS policies; *mtasts.Fetcher implements it, tests
// may substitute it.
type fetcher interface {
	Fetch(ctx context.Context, domain string) (*mtasts.Policy, error)
}

// Self-check states.
const (
	selfUnchecked int32 = iota
	selfOK
	selfFailed
)

// selfCheckRetry is how often a failed self-check is tried again, on the
// next lookup that needs DNS.
const selfCheckRetry = 5 * time.Minute

// Discoverer discovers, caches and answers MTA-STS and DANE policies for
// bare domains. Its methods are safe for concurrent use.
type Discoverer struct {
	cfg     *config
	res     *resolver // nil when dns is substituted
	dns     lookuper
	fetcher fetcher
	now     func() time.Time

	mu      sync.RWMutex
	entries map[string]*entry
	bytes   int64
	evictMu sync.Mutex
	dirty   atomic.Bool
	saveMu  sync.Mutex

	sf      singleflight.Group
	bg      sync.WaitGroup // background refreshes
	bgSlots chan struct{}

	self      atomic.Int32
	selfAt    atomic.Int64 // Unix seconds of the last self-check
	selfMu    sync.Mutex
	selfErr   error
	selfBusy  atomic.Bool
	gen       atomic.Uint32
	evictions atomic.Uint64
	fetches   atomic.Uint64
	fetchFail [mtasts.NumFetchErrorKinds]atomic.Uint64
	answers   [numSources]atomic.Uint64
	temps     atomic.Uint64
	cacheUse  [numCacheStates]atomic.Uint64
}

// maxBackground bounds concurrent background refreshes.
const maxBackground = 4

// New validates cfg (a bad resolver address, an unreadable sts_ca_file,
// DANE with a non-loopback resolver without trust_remote_ad, negative
// limits are errors) and returns a Discoverer with the cache loaded from
// cfg.CacheFile. An unreadable cache file is not an error: it is renamed
// to <cache_file>.bad and reported through cfg.OnEvent. New sends no
// query; call [Discoverer.SelfCheck] at start (a lookup does it if not),
// and run [Discoverer.Run] for refreshes ahead of expiry and cache saves.
func New(cfg Config) (*Discoverer, error) {
	c, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	d := &Discoverer{
		cfg:     c,
		now:     time.Now,
		entries: map[string]*entry{},
		bgSlots: make(chan struct{}, maxBackground),
	}
	// The AD bit counts only from a loopback resolver, or where the
	// configuration says the path to a remote one is trusted.
	d.res = newResolver(c.resolverAddr, c.loopback || c.TrustRemoteAD, c.DNSTimeout)
	d.dns = d.res
	d.fetcher = mtasts.NewFetcher(mtasts.FetcherOptions{
		RootCAs:     c.roots,
		DialContext: d.dialHTTPS,
		Timeout:     c.FetchTimeout,
	})
	if c.CacheFile != "" {
		if err := d.load(); err != nil {
			d.event(Event{Kind: EventCache, Err: err})
		}
	}
	return d, nil
}

func (d *Discoverer) event(ev Event) {
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(ev)
	}
}

// daneOn reports whether DANE is enabled and the self-check passed.
func (d *Discoverer) daneOn() bool { return d.cfg.DANE && d.self.Load() == selfOK }

// SelfCheck asks the resolver for the DNSKEY RRset of cfg.SelfCheckName
// (default ".") and requires the AD bit: proof that it validates DNSSEC.
// Without it DANE is off (cached DANE results are still served until
// they expire) and SelfCheck returns one error saying so and why, for the
// caller to log and for `tlsgate check` to print. A failed self-check is
// tried again, by a lookup, every 5 minutes. SelfCheck returns nil when
// DANE is not enabled.
func (d *Discoverer) SelfCheck(ctx context.Context) error {
	if !d.cfg.DANE {
		return nil
	}
	name := d.cfg.SelfCheckName
	rs, err := d.dns.lookup(ctx, name, dns.TypeDNSKEY)
	var fail error
	switch {
	case err != nil:
		fail = fmt.Errorf("discovery: DANE is off: resolver self-check failed: %w", err)
	case len(rs.rrs) == 0:
		fail = fmt.Errorf("discovery: DANE is off: resolver %s returned no DNSKEY record for %q; selfcheck_name must be a DNSSEC-signed zone", d.cfg.resolverAddr, name)
	case !rs.secure:
		fail = fmt.Errorf("discovery: DANE is off: resolver %s answered %q DNSKEY without the AD bit: it does not validate DNSSEC; "+
			"run a validating resolver on this host (Debian: unbound) and point resolver at it", d.cfg.resolverAddr, name)
	}
	d.setSelfCheck(fail)
	return fail
}

func (d *Discoverer) setSelfCheck(fail error) {
	d.selfMu.Lock()
	prev := d.self.Load()
	d.selfErr = fail
	d.selfAt.Store(d.now().Unix())
	if fail == nil {
		d.self.Store(selfOK)
		if prev == selfFailed {
			// Records made while DANE was off get DANE on their next lookup.
			d.gen.Add(1)
		}
	} else {
		d.self.Store(selfFailed)
	}
	d.selfMu.Unlock()
	switch {
	case fail != nil && prev != selfFailed:
		d.event(Event{Kind: EventSelfCheck, Err: fail})
	case fail == nil && prev == selfFailed:
		d.event(Event{Kind: EventSelfCheck})
	}
}

// DANEStatus reports whether DANE discovery is working: enabled and the
// last self-check passed. If not, err says why (nil when DANE is not
// enabled or no self-check ran yet).
func (d *Discoverer) DANEStatus() (on bool, err error) {
	d.selfMu.Lock()
	defer d.selfMu.Unlock()
	return d.daneOn(), d.selfErr
}

// maybeSelfCheck runs the self-check if none ran yet, or if the last one
// failed more than selfCheckRetry ago. Concurrent callers share one.
func (d *Discoverer) maybeSelfCheck() {
	if !d.cfg.DANE {
		return
	}
	switch d.self.Load() {
	case selfOK:
		return
	case selfFailed:
		if d.now().Unix()-d.selfAt.Load() < int64(selfCheckRetry/time.Second) {
			return
		}
	}
	d.sf.Do("\x00selfcheck", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DNSTimeout)
		defer cancel()
		d.SelfCheck(ctx)
		return nil, nil
	})
}

// selfCheckAsync retries a failed self-check in the background, at most
// every selfCheckRetry, so that DANE comes back also for domains answered
// from the cache.
func (d *Discoverer) selfCheckAsync(now int64) {
	if d.self.Load() == selfFailed && now-d.selfAt.Load() < int64(selfCheckRetry/time.Second) {
		return
	}
	if !d.selfBusy.CompareAndSwap(false, true) {
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		defer d.selfBusy.Store(false)
		d.maybeSelfCheck()
	}()
}

// Lookup returns the discovered policy of domain, a bare domain name
// (see [BareDomain]: other keys get an error matching ErrNotDomain, and
// the caller answers NOTFOUND). A fresh cache entry answers without
// network and without allocating (a read lock is held for the map
// lookup only, never across I/O); otherwise concurrent lookups of one
// domain share one discovery (DNS, and HTTPS for MTA-STS) that runs to
// its own timeouts, and ctx only bounds how long this caller waits (its
// error is then ctx.Err(): answer TEMP).
func (d *Discoverer) Lookup(ctx context.Context, domain string) (Result, error) {
	key, err := BareDomain(domain)
	if err != nil {
		return Result{}, err
	}
	now := d.now().Unix()
	if e := d.get(key); e != nil {
		rec := e.rec.Load()
		if now < rec.fresh.unix() && rec.gen == d.gen.Load() {
			if e.lastUsed() != now {
				e.setUsed(now)
			}
			if now >= rec.refreshAt.unix() {
				d.refreshAsync(e)
			}
			if d.cfg.DANE && d.self.Load() != selfOK {
				d.selfCheckAsync(now)
			}
			res := d.answer(key, rec, now, nil)
			res.Cache = CacheHit
			d.count(&res)
			return res, nil
		}
	}
	return d.flight(ctx, key, key, modeLookup)
}

// Refresh discovers domain's policy again now, ignoring what is cached
// (and the fetch back-off), and returns the new answer.
func (d *Discoverer) Refresh(ctx context.Context, domain string) (Result, error) {
	key, err := BareDomain(domain)
	if err != nil {
		return Result{}, err
	}
	return d.flight(ctx, "\x01"+key, key, modeForce)
}

// Purge drops domain from the cache; it reports whether it was cached.
func (d *Discoverer) Purge(domain string) (bool, error) {
	key, err := BareDomain(domain)
	if err != nil {
		return false, err
	}
	return d.remove(key), nil
}

type resolveMode uint8

const (
	modeLookup resolveMode = iota
	modeForce
	modeBackground
)

func (d *Discoverer) flight(ctx context.Context, sfKey, key string, mode resolveMode) (Result, error) {
	ch := d.sf.DoChan(sfKey, func() (any, error) {
		return d.resolve(key, mode), nil
	})
	select {
	case r := <-ch:
		res := r.Val.(Result)
		d.count(&res)
		return res, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

func (d *Discoverer) count(res *Result) {
	d.answers[res.Source].Add(1)
	if res.Postfix.Kind == Temp {
		d.temps.Add(1)
	}
	d.cacheUse[res.Cache].Add(1)
}

// refreshAsync refreshes e in the background unless a refresh of it is
// running or too many are.
func (d *Discoverer) refreshAsync(e *entry) {
	if !e.busy.CompareAndSwap(false, true) {
		return
	}
	select {
	case d.bgSlots <- struct{}{}:
	default:
		e.busy.Store(false)
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		defer func() { <-d.bgSlots }()
		defer e.busy.Store(false)
		d.sf.Do(e.key, func() (any, error) {
			return d.resolve(e.key, modeBackground), nil
		})
	}()
}

// resolve discovers key's policy and stores it. It runs once per flight.
func (d *Discoverer) resolve(key string, mode resolveMode) Result {
	d.maybeSelfCheck()
	t := d.now()
	now := t.Unix()
	var old *record
	if e := d.get(key); e != nil {
		old = e.rec.Load()
	}
	gen := d.gen.Load()
	if mode == modeLookup && old != nil && now < old.fresh.unix() && old.gen == gen {
		// Another flight renewed it just before this one started.
		res := d.answer(key, old, now, nil)
		res.Cache = CacheHit
		return res
	}
	force := mode == modeForce
	ctx, cancel := context.WithTimeout(context.Background(), 4*d.cfg.DNSTimeout+d.cfg.FetchTimeout)
	defer cancel()

	daneDue := d.daneOn() && (old == nil || force || old.dane == DANEOff || old.gen != gen ||
		old.daneFlags&daneAllMXUnread != 0 || now >= refreshPoint(old.daneChecked.unix(), old.daneExpires.unix()))
	txtDue := d.cfg.MTASTS && (old == nil || force || now >= refreshPoint(old.txtChecked.unix(), old.txtExpires.unix()))

	var (
		dane daneOutcome
		sts  stsOutcome
		wg   sync.WaitGroup
	)
	if daneDue {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dane = evalDANE(ctx, d.dns, key)
		}()
	}
	if d.cfg.MTASTS {
		sts = d.evalSTS(ctx, key, old, now, force, txtDue)
	}
	wg.Wait()

	rec := &record{gen: gen}
	if old != nil {
		rec.dane, rec.daneFlags, rec.daneChecked, rec.daneExpires, rec.daneUsable, rec.daneReason =
			old.dane, old.daneFlags, old.daneChecked, old.daneExpires, old.daneUsable, old.daneReason
	}
	var unknown *daneOutcome
	stale := sts.stale
	if daneDue {
		switch dane.state {
		case DANEUsable, DANENone:
			rec.dane, rec.daneFlags = dane.state, 0
			if dane.allMX {
				rec.daneFlags = daneAllMX
			}
			rec.daneChecked = u32(now)
			rec.daneExpires = u32(now + clampTTL(dane.ttl))
			rec.daneReason = dane.reason
			if dane.state == DANEUsable {
				rec.daneUsable = u32(now)
			}
		case DANEUnknown:
			d.event(Event{Kind: EventDNSFailed, Domain: key, Err: dane.err})
			if rec.dane != DANEOff && now < rec.daneExpires.unix() {
				stale = true // the earlier result is still valid: keep it
			} else {
				unknown = &dane
			}
		}
	} else if !d.daneOn() && rec.dane != DANEOff && now >= rec.daneExpires.unix() {
		// DANE is off (self-check failing) and the cached result expired.
		rec.dane = DANEOff
	}
	if d.cfg.MTASTS {
		rec.txtChecked, rec.txtExpires = u32(sts.txtChecked), u32(sts.txtExpires)
		rec.setSTS(sts.txtID, sts.pol, sts.stsErr, sts.retryAfter, sts.failedID)
	}
	d.finish(rec, now)
	if unknown != nil {
		// The answer depends on DNS that failed: never serve it from the
		// cache (TEMP is never cached).
		rec.fresh, rec.refreshAt = 0, 0
	}

	res := d.answer(key, rec, now, unknown)
	switch {
	case old == nil:
		res.Cache = CacheMiss
	case stale:
		res.Cache = CacheStale
	default:
		res.Cache = CacheRefreshed
	}
	res.Change = changes(old, rec, now)
	used := now
	if mode == modeBackground && old != nil {
		used = 0 // keep the entry's last-use time as it is
	}
	d.store(key, rec, used)
	if mode != modeBackground {
		if e := d.get(key); e != nil {
			e.setUsed(now)
		}
	}
	if res.Change != 0 {
		d.event(Event{Kind: EventChange, Domain: key, Change: res.Change, Result: res})
	}
	return res
}

// changes compares the policy-relevant parts of two records.
func changes(old, rec *record, now int64) Change {
	var c Change
	oldUsable := old != nil && old.dane == DANEUsable
	newUsable := rec.dane == DANEUsable
	switch {
	case newUsable && !oldUsable:
		c |= ChangeDANEAppeared
	case oldUsable && !newUsable:
		c |= ChangeDANEVanished
	}
	var oldID, newID string
	if old != nil && old.policy() != nil {
		oldID = old.policy().id
	}
	if p := rec.policy(); p != nil && now < p.expires {
		newID = p.id
	}
	switch {
	case newID != "" && newID != oldID:
		c |= ChangeSTSNew
	case newID == "" && oldID != "":
		c |= ChangeSTSGone
	}
	return c
}

// answer computes the answers from rec at time now. unknown is the
// failed DANE evaluation of this resolve, if any. It does not allocate
// unless unknown is set.
func (d *Discoverer) answer(key string, rec *record, now int64, unknown *daneOutcome) Result {
	r := Result{Domain: key}
	pol := rec.policy()
	if pol != nil && now >= pol.expires {
		pol = nil
	}
	enforce := pol != nil && pol.answer != ""
	if pol != nil {
		r.STSMode = pol.policy.Mode
		r.PolicyID = pol.id
	}
	switch {
	case unknown != nil:
		r.DANE = DANEUnknown
	case rec.dane != DANEOff && now < rec.daneExpires.unix():
		r.DANE = rec.dane
	default:
		r.DANE = DANEOff
	}
	if enforce {
		r.Sendmail = Answer{Kind: Found, Text: pol.answer}
	}
	recentDANE := rec.daneUsable > 0 && now-rec.daneUsable.unix() <= int64(d.cfg.DANEGrace/time.Second)
	switch {
	case r.DANE == DANEUsable:
		r.Postfix = Answer{Kind: Found, Text: "dane"}
		r.DANEAllMX = rec.allMX()
		r.Source = SourceDANE
		r.Expires = time.Unix(rec.daneExpires.unix(), 0)
		return r
	case r.DANE == DANEUnknown && (enforce || recentDANE):
		held := "an MTA-STS policy in mode enforce"
		if !enforce {
			held = "DANE seen usable at " + time.Unix(rec.daneUsable.unix(), 0).UTC().Format(time.RFC3339)
		}
		r.Postfix = Answer{Kind: Temp}
		r.Reason = "DANE state unknown (" + unknown.reason + ": " + errString(unknown.err) + ") while " + held + " is held"
		return r
	case enforce:
		r.Postfix = Answer{Kind: Found, Text: pol.answer}
		r.Source = SourceMTASTS
		r.Expires = time.Unix(pol.expires, 0)
		if err := rec.stsErr(); err != "" {
			r.Reason = err
		}
		return r
	}
	if rec.fresh != never && rec.fresh > 0 {
		r.Expires = time.Unix(rec.fresh.unix(), 0)
	}
	switch {
	case unknown != nil:
		r.Reason = "DANE state unknown (" + unknown.reason + ": " + errString(unknown.err) + ")"
	case rec.stsErr() != "":
		r.Reason = rec.stsErr()
	case pol != nil:
		r.Reason = "MTA-STS policy in mode " + pol.policy.Mode.String() // allocates only for testing/none
	case rec.daneReason != "":
		r.Reason = rec.daneReason
	}
	return r
}

func errString(err error) string {
	if err == nil {
		return "no detail"
	}
	return err.Error()
}

// dialHTTPS connects to "mta-sts.<domain>:443", resolving the name
// through the configured resolver (A, then AAAA), so that policy fetches
// use the same DNS as the rest of discovery.
func (d *Discoverer) dialHTTPS(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []string
	var lastErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rs, err := d.dns.lookup(ctx, host, qt)
		if err != nil {
			lastErr = err
			continue
		}
		for _, rr := range rs.rrs {
			switch v := rr.(type) {
			case *dns.A:
				ips = append(ips, v.A.String())
			case *dns.AAAA:
				ips = append(ips, v.AAAA.String())
			}
		}
	}
	if len(ips) == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("%s has no address record", host)
		}
		return nil, lastErr
	}
	var dialer net.Dialer
	for _, ip := range ips {
		c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip, port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// Stats returns the counters.
func (d *Discoverer) Stats() Stats {
	var s Stats
	for i := range s.Answers {
		s.Answers[i] = d.answers[i].Load()
	}
	s.Temp = d.temps.Load()
	for i := range s.Cache {
		s.Cache[i] = d.cacheUse[i].Load()
	}
	d.mu.RLock()
	s.Entries, s.Bytes = len(d.entries), d.bytes
	d.mu.RUnlock()
	s.Evictions = d.evictions.Load()
	s.Fetches = d.fetches.Load()
	for i := range s.FetchFailures {
		s.FetchFailures[i] = d.fetchFail[i].Load()
	}
	if d.res != nil {
		s.DNSQueries = d.res.queries.Load()
		for i := range s.DNSFailures {
			s.DNSFailures[i] = d.res.fails[i].Load()
		}
	}
	s.SelfCheckOK = d.self.Load() == selfOK
	return s
}

// Info is what the cache holds for one domain, for `tlsgate discovery
// show`.
type Info struct {
	// Result is the answer the cached data gives now; Cache is CacheHit,
	// or CacheStale when a lookup would renew it first.
	Result Result
	// LastUsed is the last lookup.
	LastUsed time.Time
	// DANE: the cached state, when it was checked and expires, when DANE
	// was last seen usable (zero: never), and why.
	DANE           DANEState
	DANEChecked    time.Time
	DANEExpires    time.Time
	DANELastUsable time.Time
	DANEReason     string
	// STSRecordID is the id of the _mta-sts TXT record when last checked
	// ("" none), and when that check expires.
	STSRecordID      string
	STSRecordChecked time.Time
	STSRecordExpires time.Time
	// STSPolicy is the policy held (nil: none), fetched under STSPolicyID
	// at STSFetched, applied until STSExpires.
	STSPolicy   *mtasts.Policy
	STSPolicyID string
	STSFetched  time.Time
	STSExpires  time.Time
	// STSError is the last MTA-STS failure; no fetch is tried before
	// STSRetryAfter unless the id changes.
	STSError      string
	STSRetryAfter time.Time
}

// Show returns what the cache holds for domain, without network. ok is
// false when nothing is cached.
func (d *Discoverer) Show(domain string) (info Info, ok bool, err error) {
	key, err := BareDomain(domain)
	if err != nil {
		return Info{}, false, err
	}
	e := d.get(key)
	if e == nil {
		return Info{}, false, nil
	}
	rec := e.rec.Load()
	now := d.now().Unix()
	info.Result = d.answer(key, rec, now, nil)
	info.Result.Cache = CacheHit
	if now >= rec.fresh.unix() || rec.gen != d.gen.Load() {
		info.Result.Cache = CacheStale
	}
	ts := func(s int64) time.Time {
		if s == 0 {
			return time.Time{}
		}
		return time.Unix(s, 0)
	}
	info.LastUsed = ts(e.lastUsed())
	info.DANE, info.DANEChecked, info.DANEExpires = rec.dane, ts(rec.daneChecked.unix()), ts(rec.daneExpires.unix())
	info.DANELastUsable, info.DANEReason = ts(rec.daneUsable.unix()), rec.daneReason
	info.STSRecordID, info.STSRecordChecked, info.STSRecordExpires = rec.txtID(), ts(rec.txtChecked.unix()), ts(rec.txtExpires.unix())
	if p := rec.policy(); p != nil {
		cp := *p.policy
		info.STSPolicy, info.STSPolicyID = &cp, p.id
		info.STSFetched, info.STSExpires = ts(p.fetched), ts(p.expires)
	}
	info.STSError, info.STSRetryAfter = rec.stsErr(), ts(rec.retryAfter())
	return info, true, nil
}

// Run refreshes, until ctx is done, the cached domains looked up within
// cfg.RefreshHorizon ahead of their expiry, drops entries that expired
// and were not used within it, and saves the cache file every minute when
// it changed. It saves once more before it returns; the error is that
// last save's.
func (d *Discoverer) Run(ctx context.Context) error {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	lastSave := time.Now()
	for {
		select {
		case <-ctx.Done():
			d.bg.Wait()
			if d.dirty.Load() {
				return d.Save()
			}
			return nil
		case <-tick.C:
			d.sweep()
			if d.dirty.Load() && time.Since(lastSave) >= time.Minute {
				if err := d.Save(); err != nil {
					d.event(Event{Kind: EventCache, Err: err})
				}
				lastSave = time.Now()
			}
		}
	}
}

// sweep starts background refreshes for recently used domains that are
// due and drops dead entries.
func (d *Discoverer) sweep() {
	now := d.now().Unix()
	if d.cfg.DANE && d.self.Load() != selfOK {
		d.selfCheckAsync(now)
	}
	horizon := int64(d.cfg.RefreshHorizon / time.Second)
	d.mu.RLock()
	es := make([]*entry, 0, len(d.entries))
	for _, e := range d.entries {
		es = append(es, e)
	}
	d.mu.RUnlock()
	var dead []string
	for _, e := range es {
		rec := e.rec.Load()
		recent := now-e.lastUsed() <= horizon
		switch {
		case recent && (now >= rec.refreshAt.unix() || rec.gen != d.gen.Load()):
			d.refreshAsync(e)
		case !recent && now >= rec.fresh.unix() && (rec.policy() == nil || now >= rec.policy().expires):
			dead = append(dead, e.key)
		}
	}
	for _, k := range dead {
		d.remove(k)
	}
}

// waitBackground waits for running background refreshes (for tests).
func (d *Discoverer) waitBackground() { d.bg.Wait() }
