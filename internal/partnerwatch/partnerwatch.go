// Package partnerwatch probes the servers of covered partners, the way
// our MTA connects to them (package probe), when the administrator asks
// for it ([watch] probe_interval), and says what must be acted on before
// mail stops: a certificate that expires within 14 days or has expired, a
// server key that changed (the endpoint's pins may no longer match it), a
// server the endpoint's outbound requirements would refuse.
//
// Only what the configuration names is probed ([Targets]): the exact host
// names and single addresses of endpoints with an [endpoint.outbound]
// table (all of them, or those [watch] probe_endpoints lists). Subdomain
// patterns and address ranges name no server and are not probed.
package partnerwatch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/probe"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

// WarnWithin is how long before a partner's certificate expires it is
// logged.
const WarnWithin = 14 * 24 * time.Hour

// Target is one thing to probe for an endpoint.
type Target struct {
	// Endpoint is the endpoint's name.
	Endpoint string
	// Pattern is the host pattern of the endpoint it comes from,
	// normalised: an A-label name or an address ("mx1.company-b.example",
	// "192.0.2.10").
	Pattern string
	// Probe is what is connected to: the name as a domain (its MX hosts,
	// port 25), the address on port 25, or where the MTA's routing sends
	// mail for the name (Postfix transport_maps).
	Probe probe.Target
}

// Router finds where the MTA sends mail for each of names (Postfix:
// transport_maps); ok false keeps the name's own MX hosts.
type Router func(ctx context.Context, names []string) (targets []probe.Target, ok []bool, err error)

// Targets lists what to probe for p: the exact names and single addresses
// of the endpoints with an [endpoint.outbound] table, or only of those
// named in only. route, if set, is asked where mail for the names goes.
func Targets(ctx context.Context, p *policy.Policy, only []string, route Router) ([]Target, error) {
	want := map[string]bool{}
	for _, n := range only {
		want[n] = true
	}
	var out []Target
	var names []string
	var nameAt []int
	for _, ep := range p.Endpoints {
		if !ep.Defines(policy.Outbound) || len(only) > 0 && !want[ep.Name] {
			continue
		}
		for _, h := range ep.Hosts {
			switch h.Kind {
			case policy.PatternName:
				nameAt = append(nameAt, len(out))
				names = append(names, h.Name)
				out = append(out, Target{Endpoint: ep.Name, Pattern: h.Name, Probe: probe.Target{Domain: h.Name}})
			case policy.PatternAddr:
				a := h.Prefix.Addr().String()
				out = append(out, Target{Endpoint: ep.Name, Pattern: a, Probe: probe.Target{Host: a, Port: 25}})
			}
		}
	}
	if route != nil && len(names) > 0 {
		ts, ok, err := route(ctx, names)
		if err != nil {
			return nil, err
		}
		for i, at := range nameAt {
			if ok[i] {
				out[at].Probe = ts[i]
			}
		}
	}
	return out, nil
}

// Verdict is what the endpoint's outbound requirements make the MTA do
// with a probed server.
type Verdict struct {
	Outcome mtapolicy.Outcome
	// Why explains Outcome.
	Why string
	// Pinned: the requirements pin certificates or keys.
	Pinned bool
}

// Judge tells what the endpoint's outbound answer in m (for t's pattern,
// as the MTA would ask for it; an endpoint in monitor mode is judged as if
// enforced) makes the MTA do with the probed server r.
func Judge(m *verdict.Model, t Target, r *probe.Result, now time.Time) Verdict {
	var a verdict.Answer
	if _, err := netip.ParseAddr(t.Pattern); err == nil || m.Sendmail() {
		a = m.Host(t.Pattern, 0, now)
	} else {
		a = m.Domain(t.Pattern, "", now)
	}
	if a.Err != nil {
		return Verdict{Outcome: mtapolicy.Hold, Why: "the policy lookup fails (the MTA gets TEMP): " + a.Err.Error()}
	}
	req, err := m.Requirement(a, true)
	if err != nil {
		return Verdict{Outcome: mtapolicy.Unknown, Why: err.Error()}
	}
	v := Verdict{Pinned: len(req.Fingerprints) > 0}
	switch {
	case req.None:
	case r.Err != nil && r.Offered && !r.TLS:
		// STARTTLS refused or the handshake failed: the MTA cannot
		// start TLS either.
		v.Outcome, v.Why = mtapolicy.Hold, r.Err.Error()
		return v
	case r.Err != nil && !r.TLS:
		v.Outcome, v.Why = mtapolicy.Unknown, "the probe failed: "+r.Err.Error()
		return v
	}
	v.Outcome, v.Why = req.Judge(r.Session())
	return v
}

// Status is the last probe of one server for one endpoint, for metrics.
type Status struct {
	Endpoint string
	// Host is the server probed, "name:port" ("[v6]:port").
	Host string
	// NotAfter is when the first certificate of its chain expires (zero
	// when no certificate was seen).
	NotAfter time.Time
	// OK: the server was probed and the endpoint's requirements would let
	// the MTA deliver to it.
	OK bool
}

// Watcher probes targets in rounds. Its fields are set before the first
// round; Round and Forget are not safe for concurrent use.
type Watcher struct {
	// Probe probes one target (probe.Probe with our options).
	Probe func(ctx context.Context, t probe.Target) ([]probe.Result, error)
	// Judge tells what the endpoint of t makes the MTA do with r.
	Judge func(t Target, r *probe.Result) Verdict
	// Log receives the findings.
	Log *slog.Logger
	// Parallel is how many servers are probed at once (default 4).
	Parallel int

	seen   map[seenKey]seenState
	status map[seenKey]Status
}

type seenKey struct{ endpoint, host string }

type seenState struct {
	spki    string // the leaf's public key, sha256
	failing bool   // the last probe did not end in "would deliver"
}

// Round probes targets (each distinct probe target once) and logs what
// it finds. targets must hold all targets of each endpoint they name: the
// statuses of those endpoints are replaced by this round's.
//
// The lines:
//
//	partner-cert endpoint=company-b host=mx1.company-b.example:25 cert="CN=mx1.company-b.example" not_after=2026-12-20T00:00:00Z days_left=12 status=expires-soon
//	partner-key endpoint=company-b host=mx1.company-b.example:25 old=sha256:... new=sha256:... pinned=yes verdict="would stay queued: ..."
//	partner-probe endpoint=company-b host=mx1.company-b.example:25 result="would stay queued" reason="..."
//	partner-probe endpoint=company-b host=mx1.company-b.example:25 result="would deliver" tls=TLSv1.3 bits=256
//
// A certificate of the chain expiring within WarnWithin (or expired) is
// a warning at every round. A changed server key is logged once, as a
// warning when the endpoint pins certificates or keys. A probe that ends
// in anything but "would deliver" is a warning when it starts and logged
// as information when the server is fine again; a fine probe is logged
// at debug level otherwise.
func (w *Watcher) Round(ctx context.Context, targets []Target, now time.Time) {
	if w.seen == nil {
		w.seen, w.status = map[seenKey]seenState{}, map[seenKey]Status{}
	}
	// Each distinct probe target once, a few at a time.
	type job struct {
		probe   probe.Target
		results []probe.Result
		err     error
	}
	idx := map[probe.Target]*job{}
	var jobs []*job
	for _, t := range targets {
		if idx[t.Probe] == nil {
			j := &job{probe: t.Probe}
			idx[t.Probe] = j
			jobs = append(jobs, j)
		}
	}
	par := w.Parallel
	if par <= 0 {
		par = 4
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			j.results, j.err = w.Probe(ctx, j.probe)
		}()
	}
	wg.Wait()
	ends := endpointsOf(targets)
	for k := range w.status {
		if ends[k.endpoint] {
			delete(w.status, k)
		}
	}
	for _, t := range targets {
		j := idx[t.Probe]
		if j.err != nil {
			host := t.Probe.String()
			w.finding(seenKey{t.Endpoint, host}, Status{Endpoint: t.Endpoint, Host: host}, false, "error", j.err.Error())
			continue
		}
		for i := range j.results {
			w.server(t, &j.results[i], now)
		}
	}
}

// server handles one probed server of a target.
func (w *Watcher) server(t Target, r *probe.Result, now time.Time) {
	host := net.JoinHostPort(r.Host, strconv.Itoa(r.Port))
	k := seenKey{t.Endpoint, host}
	st := Status{Endpoint: t.Endpoint, Host: host}
	v := w.Judge(t, r)
	if len(r.Chain) > 0 {
		first := r.Chain[0]
		for _, c := range r.Chain[1:] {
			if c.NotAfter.Before(first.NotAfter) {
				first = c
			}
		}
		st.NotAfter = first.NotAfter
		if left := first.NotAfter.Sub(now); left < WarnWithin {
			status := "expires-soon"
			if left <= 0 {
				status = "expired"
			}
			w.Log.Warn("partner-cert", "endpoint", t.Endpoint, "host", probe.Escape(host), "cert", probe.Escape(certs.Describe(first).Subject),
				"not_after", first.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24), "status", status)
		}
		spki := certs.FingerprintSPKI(r.Chain[0])
		s := w.seen[k]
		if s.spki != "" && s.spki != spki {
			args := []any{"endpoint", t.Endpoint, "host", probe.Escape(host), "old", s.spki, "new", spki}
			if v.Pinned {
				w.Log.Warn("partner-key", append(args, "pinned", "yes", "verdict", verdictText(v))...)
			} else {
				w.Log.Info("partner-key", append(args, "pinned", "no")...)
			}
		}
		s.spki = spki
		w.seen[k] = s
	}
	if v.Outcome == mtapolicy.Deliver {
		st.OK = true
		w.finding(k, st, true, "", fmt.Sprintf("%s, %d bits", r.Version, r.Bits))
		return
	}
	w.finding(k, st, false, v.Outcome.String(), v.Why)
}

// finding records a server's status and logs a probe that starts or
// stops failing.
func (w *Watcher) finding(k seenKey, st Status, ok bool, result, why string) {
	s := w.seen[k]
	switch {
	case !ok && !s.failing:
		w.Log.Warn("partner-probe", "endpoint", k.endpoint, "host", probe.Escape(k.host), "result", result, "reason", probe.Escape(why))
	case !ok:
		w.Log.Debug("partner-probe", "endpoint", k.endpoint, "host", probe.Escape(k.host), "result", result, "reason", probe.Escape(why))
	case s.failing:
		w.Log.Info("partner-probe", "endpoint", k.endpoint, "host", probe.Escape(k.host), "result", mtapolicy.Deliver.String(), "tls", why)
	default:
		w.Log.Debug("partner-probe", "endpoint", k.endpoint, "host", probe.Escape(k.host), "result", mtapolicy.Deliver.String(), "tls", why)
	}
	s.failing = !ok
	w.seen[k] = s
	w.status[k] = st
}

func verdictText(v Verdict) string {
	if v.Outcome == mtapolicy.Deliver {
		return v.Outcome.String()
	}
	return v.Outcome.String() + ": " + v.Why
}

// Forget drops what is known of the endpoints that have no target in keep
// (a reload removed them, or their names), so that Statuses no longer
// lists them.
func (w *Watcher) Forget(keep []Target) {
	ends := endpointsOf(keep)
	for k := range w.status {
		if !ends[k.endpoint] {
			delete(w.status, k)
		}
	}
	// seen also holds servers no longer probed (Round dropped their
	// status): those of a removed endpoint go too.
	for k := range w.seen {
		if !ends[k.endpoint] {
			delete(w.seen, k)
		}
	}
}

// endpointsOf returns the set of the endpoints ts names.
func endpointsOf(ts []Target) map[string]bool {
	ends := make(map[string]bool, len(ts))
	for _, t := range ts {
		ends[t.Endpoint] = true
	}
	return ends
}

// Statuses returns the last status of every server probed, sorted by
// endpoint and host.
func (w *Watcher) Statuses() []Status {
	out := make([]Status, 0, len(w.status))
	for _, s := range w.status {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Endpoint != out[j].Endpoint {
			return out[i].Endpoint < out[j].Endpoint
		}
		return out[i].Host < out[j].Host
	})
	return out
}
