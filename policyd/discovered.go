package policyd

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// SendmailSTSMapName is the map name Sendmail's FEATURE(`sts') sends: the
// key is the recipient domain, the answer its MTA-STS policy in Postfix's
// syntax ("secure match=... servername=hostname").
const SendmailSTSMapName = "sts"

// How long a lookup waits for a discovery that is not answered from the
// cache. The discovery itself goes on to its own timeouts and fills the
// cache for the next lookup; a lookup that stops waiting answers TEMP
// only where the rule for TEMP allows it (see Discovery), else NOTFOUND.
const (
	// DefaultPostfixWait: Postfix's smtp(8) waits up to 100 s for a
	// socketmap answer (socketmap_timeout); 15 s covers the DNS queries
	// and one policy fetch of a cold lookup.
	DefaultPostfixWait = 15 * time.Second
	// DefaultSendmailWait: FEATURE(`sts') declares its map with -d5, a
	// 5 s timeout after which Sendmail answers "450 STS lookup temp
	// fail"; answering within it keeps that for the cases that need it.
	DefaultSendmailWait = 4 * time.Second
)

// Discoverer is the part of the discovery engine the socketmap uses;
// *discovery.Discoverer implements it.
type Discoverer interface {
	Lookup(ctx context.Context, domain string) (discovery.Result, error)
	Show(domain string) (discovery.Info, bool, error)
}

// Discovery adds discovered MTA-STS (RFC 8461) and DANE (RFC 7672)
// policies to a TLSMap's answers, for bare-domain keys only
// (discovery.BareDomain):
//
//   - Postfix (the map name of [policyd] map_name): the endpoint answer
//     of the key merged with the domain's discovered policy,
//     never weaker than either (policy.MergeDiscovered);
//   - Sendmail: the map "sts" of FEATURE(`sts') answers the discovered
//     MTA-STS policy; the endpoints stay in the access map, and Sendmail
//     applies both.
//
// A cached domain is answered without waiting. Otherwise the lookup
// waits up to Wait; if discovery has not finished by then, the answer is
// TEMP only where the domain's DANE state is unknown while an MTA-STS
// policy or a recent usable DANE result is held (the engine's rule for
// TEMP), else NOTFOUND, so that a slow DNS or HTTPS server never holds
// the MTA for long and never defers mail for a domain that has no known
// policy. A key an authenticating endpoint decides never waits: no
// discovered policy can change its answer.
type Discovery struct {
	// Engine discovers and caches the policies. Required.
	Engine Discoverer
	// Wait bounds how long a lookup waits for a discovery that is not
	// in the cache. Default: DefaultPostfixWait for Postfix,
	// DefaultSendmailWait for Sendmail.
	Wait time.Duration
	// Grace is how long after DANE was last seen usable a domain still
	// counts as holding a usable DANE result (the engine's
	// Config.DANEGrace). Default: discovery.DefaultDANEGrace.
	Grace time.Duration
	// DANEAllowed, if set, reports whether "dane" answers may go to the
	// MTA now, and why not: Postfix turns "dane" into "may" without
	// smtp_dns_support_level = dnssec, which would be weaker than an
	// endpoint's "encrypt". When it says no, a domain with DANE gets its
	// MTA-STS policy if it has one, else no discovered policy.
	DANEAllowed func() (bool, string)
}

// doneCtx is a context that is already done: a lookup with it answers
// from the cache or not at all (and starts the discovery for next time).
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// Explanation is an outbound answer with where it comes from, for the
// log line and `tlsgate query outbound`.
type Explanation struct {
	// Reply is what the MTA gets.
	Reply Reply
	// Answer is the merged answer (Endpoint, Source, Overrides); its
	// Source is policy.SourceNone for NOTFOUND and TEMP.
	Answer policy.Answer
	// Discovered says whether discovery was consulted (a bare-domain key
	// with discovery on); then Result is its outcome and Cache how it used
	// the cache.
	Discovered bool
	Result     discovery.Result
	// Pending is set when the discovery did not answer in time (Result is
	// then empty; it goes on and fills the cache).
	Pending bool
	// Merged is the level the merge answers instead of the discovered
	// one, for the log line's merged=: "dane-only" where an endpoint
	// requires encryption and not every MX host has usable TLSA records
	// (policy.DANEOnly); "" otherwise.
	Merged string
	// Reason says why the answer is what it is when that is not obvious.
	Reason string
}

// discovered answers a lookup that involves discovery: Sendmail's "sts"
// map, or a bare-domain key of Postfix's map. ok is false for any other
// lookup, which TLSMap answers as without discovery.
func (m *TLSMap) discovered(ctx context.Context, p *policy.Policy, name, key string) (Reply, bool) {
	var x Explanation
	if !m.explainDiscovered(ctx, p, name, key, &x) {
		return Reply{}, false
	}
	m.logDiscovered(ctx, name, key, &x)
	return x.Reply, true
}

// Explain answers name and key as Lookup does, without logging, and says
// where the answer comes from.
func (m *TLSMap) Explain(ctx context.Context, name, key string) Explanation {
	p := m.Policy()
	if p == nil {
		return Explanation{Reply: Reply{Status: StatusTemp, Data: "tlsgate has no policy loaded"}}
	}
	var x Explanation
	if m.explainDiscovered(ctx, p, name, key, &x) {
		return x
	}
	if !servesMap(p, name) {
		return Explanation{Reply: unknownMapReply(p, name)}
	}
	a, err := p.At(m.now()).Outbound(key)
	x = Explanation{Reply: AnswerReply(a, err), Answer: a, Reason: AnswerNote(a)}
	if err != nil {
		x.Reason = err.Error()
	}
	return x
}

// explainDiscovered fills x for a lookup that involves discovery and
// reports whether it was one (see discovered).
func (m *TLSMap) explainDiscovered(ctx context.Context, p *policy.Policy, name, key string, x *Explanation) bool {
	dc := m.Discovery
	if dc == nil || p.Settings.Discovery == nil {
		return false
	}
	switch {
	case p.MTA == policy.Sendmail && name == SendmailSTSMapName:
		m.sendmailSTS(ctx, key, x)
		return true
	case p.MTA == policy.Postfix && name == p.Settings.MapName:
	default:
		return false
	}
	domain, err := discovery.BareDomain(key)
	if err != nil {
		return false
	}
	a, err := p.At(m.now()).PostfixPolicy(key)
	if err != nil {
		return false // TLSMap answers TEMP for it
	}
	x.Answer, x.Discovered = a, true
	if a.Authenticates() {
		// The endpoint wins whatever is discovered: take a cached result
		// for the log line's overrides=, never wait.
		if res, err := dc.Engine.Lookup(doneCtx, domain); err == nil {
			x.Result = res
		} else {
			x.Pending = true
		}
	} else if !m.lookup(ctx, dc, domain, DefaultPostfixWait, x) {
		x.Reply = Reply{Status: StatusTemp, Data: "discovered policy of " + domain + " undecided: " + x.Reason}
		return true
	}
	d := m.toDiscovered(dc, x)
	merged, err := policy.MergeDiscovered(a, d)
	x.Answer = merged
	switch {
	case policy.IsTemp(err):
		x.Reply = Reply{Status: StatusTemp, Data: clip(err.Error())}
		x.Reason = d.Reason
	case err != nil:
		x.Reply = AnswerReply(merged, err)
		x.Reason = err.Error()
	default:
		x.Reply = AnswerReply(merged, nil)
		switch {
		case policy.DANEOnly(a, d):
			x.Merged, x.Reason = "dane-only", policy.DANEOnlyReason
		case merged.Monitor() && merged.Source == policy.SourceNone:
			x.Reason = AnswerNote(merged)
		}
	}
	if x.Reply.Status != StatusOK {
		x.Answer.Source = policy.SourceNone
	}
	return true
}

// lookup asks the engine for domain, waiting up to the configured wait
// (def by default). It reports false when the answer is TEMP: the wait
// ended, or the connection's context did, with a policy held for the
// domain. With nothing held a wait that ends gives no discovered policy
// (x.Result empty, x.Pending set).
func (m *TLSMap) lookup(ctx context.Context, dc *Discovery, domain string, def time.Duration, x *Explanation) bool {
	// A cached domain is answered without the context: try that first,
	// without the cost of a timer (this starts the discovery of a domain
	// not cached, which the wait below then joins).
	if res, err := dc.Engine.Lookup(doneCtx, domain); err == nil {
		x.Result = res
		return true
	}
	wait := dc.Wait
	if wait <= 0 {
		wait = def
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	res, err := dc.Engine.Lookup(wctx, domain)
	cancel()
	if err == nil {
		x.Result = res
		return true
	}
	x.Pending = true
	if ctx.Err() != nil {
		// The connection is going away (shutdown): the MTA sees no answer
		// anyway; TEMP is what it would get.
		x.Reason = "lookup cancelled: " + ctx.Err().Error()
		return false
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		x.Reason = "discovery failed: " + err.Error()
		return false
	}
	if held, what := dc.held(domain); held {
		x.Reason = "discovery did not finish within " + wait.String() + " while " + what + " is held"
		return false
	}
	x.Reason = "discovery did not finish within " + wait.String() + " and no policy is held: no discovered policy (it goes on and is cached for the next lookup)"
	return true
}

// held reports whether the cache holds, for domain, an MTA-STS policy in
// mode enforce or a DANE result seen usable within Grace, the states in
// which an undecided lookup answers TEMP.
func (dc *Discovery) held(domain string) (bool, string) {
	info, ok, err := dc.Engine.Show(domain)
	if err != nil || !ok {
		return false, ""
	}
	if info.Result.Sendmail.Kind == discovery.Found {
		return true, "an MTA-STS policy in mode enforce"
	}
	grace := dc.Grace
	if grace <= 0 {
		grace = discovery.DefaultDANEGrace
	}
	if !info.DANELastUsable.IsZero() && time.Since(info.DANELastUsable) <= grace {
		return true, "a usable DANE result of " + info.DANELastUsable.UTC().Format(time.RFC3339)
	}
	return false, ""
}

// toDiscovered turns the engine's result into what the merge takes,
// withholding "dane" while Postfix could not enforce it.
func (m *TLSMap) toDiscovered(dc *Discovery, x *Explanation) policy.Discovered {
	r := &x.Result
	danePossible := r.Source == discovery.SourceDANE || r.Postfix.Kind == discovery.Temp
	if danePossible && dc.DANEAllowed != nil {
		if ok, why := dc.DANEAllowed(); !ok {
			// Without DANE the answer is the MTA-STS policy alone, the
			// one Sendmail gets: no DNS state can make it TEMP.
			x.Reason = "DANE withheld: " + why
			if r.Sendmail.Kind == discovery.Found {
				return policy.Discovered{Source: policy.SourceMTASTS, Text: r.Sendmail.Text}
			}
			return policy.Discovered{}
		}
	}
	switch r.Postfix.Kind {
	case discovery.Found:
		src := policy.SourceMTASTS
		if r.Source == discovery.SourceDANE {
			src = policy.SourceDANE
		}
		return policy.Discovered{Source: src, Text: r.Postfix.Text, AllMX: r.DANEAllMX}
	case discovery.Temp:
		return policy.Discovered{Temp: true, Reason: r.Reason}
	}
	if x.Reason == "" {
		x.Reason = r.Reason
	}
	return policy.Discovered{}
}

// sendmailSTS answers Sendmail's "sts" map: the recipient domain's
// MTA-STS policy in mode enforce, else NOTFOUND (a domain literal or any
// other key that is not a bare domain included).
func (m *TLSMap) sendmailSTS(ctx context.Context, key string, x *Explanation) {
	x.Discovered = true
	domain, err := discovery.BareDomain(key)
	if err != nil {
		x.Reply = Reply{Status: StatusNotFound}
		x.Reason = "not a domain: no MTA-STS policy"
		return
	}
	if !m.lookup(ctx, m.Discovery, domain, DefaultSendmailWait, x) {
		x.Reply = Reply{Status: StatusTemp, Data: "MTA-STS policy of " + domain + " undecided: " + x.Reason}
		return
	}
	if a := x.Result.Sendmail; a.Kind == discovery.Found {
		x.Reply = Reply{Status: StatusOK, Data: a.Text}
		x.Answer = policy.Answer{Found: true, Text: a.Text, Source: policy.SourceMTASTS}
		return
	}
	x.Reply = Reply{Status: StatusNotFound}
	if x.Reason == "" {
		x.Reason = x.Result.Reason
	}
}

// overridesWord is the log word for the discovered source an
// authenticating endpoint wins over: "sts" or "dane".
func overridesWord(s policy.Source) string {
	if s == policy.SourceMTASTS {
		return "sts"
	}
	return s.String()
}

// logDiscovered logs a lookup that involved discovery: at debug when the
// answer needs no attention (Postfix logs each delivery's TLS outcome
// itself), at info when an endpoint in monitor mode, an unexpired
// exception or an authenticating endpoint over a discovered policy
// (overrides=) decides or the merge answers a stricter level than the
// one discovered (merged=dane-only), at warn for TEMP. tlsgate's fields (answer, endpoint, exception, sources) come
// first, the values the MTA sent (map, key) after them.
func (m *TLSMap) logDiscovered(ctx context.Context, name, key string, x *Explanation) {
	lvl := slog.LevelDebug
	switch {
	case x.Reply.Status != StatusOK && x.Reply.Status != StatusNotFound:
		lvl = slog.LevelWarn
	case x.Answer.Overrides != policy.SourceNone, x.Merged != "", x.Answer.Monitor(), x.Answer.Exception != nil:
		lvl = slog.LevelInfo
	}
	if m.Logger == nil || !m.Logger.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("answer", x.Reply.String()))
	if ep := x.Answer.Endpoint; ep != nil {
		attrs = append(attrs, slog.String("endpoint", ep.Name))
	}
	if e := x.Answer.Exception; e != nil {
		attrs = append(attrs, slog.String("exception", e.Endpoint.Name))
	}
	attrs = append(attrs, slog.String("source", x.Answer.Source.String()))
	if !x.Pending {
		attrs = append(attrs, slog.String("cache", x.Result.Cache.String()))
	}
	if x.Answer.Overrides != policy.SourceNone {
		attrs = append(attrs, slog.String("overrides", overridesWord(x.Answer.Overrides)))
	}
	if x.Merged != "" {
		attrs = append(attrs, slog.String("merged", x.Merged))
	}
	attrs = append(attrs, slog.String("map", clip(name)), slog.String("key", clip(key)))
	if x.Reason != "" {
		attrs = append(attrs, slog.String("reason", clip(x.Reason)))
	}
	m.Logger.LogAttrs(ctx, lvl, "tls-policy-lookup", attrs...)
}
