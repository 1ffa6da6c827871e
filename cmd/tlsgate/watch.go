package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/internal/heldmail"
	"github.com/tlsgate/tlsgate/internal/mailq"
	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/partnerwatch"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/probe"
	"github.com/tlsgate/tlsgate/internal/reload"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

// watchPoll is how often the watchers look at the policy in force when no
// round is due: a reload that changes [watch] or the endpoints takes
// effect within it (tests shorten it).
var watchPoll = 5 * time.Second

// routeTTL is how long a recipient domain's next hop is kept before
// Postfix's tables are asked again.
const routeTTL = 5 * time.Minute

// startWatchers starts serve's held-mail watch and partner probes. Both
// follow the policy in force: [watch] turns them on and off and sets
// their intervals, from the next round on after a reload. stop ends them
// and waits for a round in progress to be cut short.
func startWatchers(h *reload.Holder, log *slog.Logger, m *metrics.Metrics) (stop func()) {
	var mw *metrics.Watch
	if m != nil {
		mw = m.AddWatch()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); heldLoop(ctx, h, log, mw) }()
	go func() { defer wg.Done(); probeLoop(ctx, h, log, mw) }()
	return func() { cancel(); wg.Wait() }
}

// sleep waits d or until ctx ends; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// heldLoop reads the queue every [watch] held_interval (the first time
// right away) with one postqueue -j or mailq, time-limited.
func heldLoop(ctx context.Context, h *reload.Holder, log *slog.Logger, mw *metrics.Watch) {
	w := &heldmail.Watcher{Log: log}
	if mw != nil {
		w.OnRound = mw.HeldRound
	}
	var routes *postfixRoutes
	var next time.Time
	on := false
	for {
		p := h.Policy()
		ws := p.Settings.Watch
		now := time.Now()
		switch {
		case ws == nil || ws.HeldInterval == 0:
			if on {
				log.Info("held-mail", "state", "off", "file", p.File)
				w = &heldmail.Watcher{Log: log, OnRound: w.OnRound}
				if mw != nil {
					mw.HeldOff()
				}
				on = false
			}
		case now.Before(next):
		default:
			on = true
			var src mailq.Source
			if p.MTA == policy.Sendmail {
				src = mailq.Sendmail(ws.Mailq)
				w.Attribute = sendmailAttributor(h)
			} else {
				src = mailq.Postfix(ws.Postqueue, ws.PostfixConfig)
				routes = watchRoutes(routes, ws, ws.QueueTimeout)
				w.Attribute = postfixAttributor(h, routes)
			}
			src.Timeout = ws.QueueTimeout
			w.Read = src.Read
			w.Round(ctx, now)
			next = now.Add(ws.HeldInterval)
		}
		wait := watchPoll
		if on {
			wait = min(wait, time.Until(next))
		}
		if !sleep(ctx, max(wait, 0)) {
			return
		}
	}
}

// postfixAttributor finds each recipient's endpoint the way Postfix asks
// tlsgate: the recipient domain's next hop (transport_maps, relayhost),
// then the policy's answer for it.
func postfixAttributor(h *reload.Holder, routes *postfixRoutes) heldmail.Attributor {
	return func(ctx context.Context, addrs []string) ([]string, error) {
		var domains []string
		for _, a := range addrs {
			domains = append(domains, (mailq.Recipient{Address: a}).Domain())
		}
		hops, err := routes.route(ctx, domains, true)
		if err != nil {
			return nil, err
		}
		m, now := verdict.New(h.Policy()), time.Now()
		out := make([]string, len(addrs))
		for i, d := range domains {
			nh := hops[d]
			switch {
			case d == "" || nh.NoTLS:
			case nh.Domain != "":
				out[i] = m.Domain(nh.Domain, "", now).Endpoint
			default:
				out[i] = m.Key(nh.Key, now).Endpoint
			}
		}
		return out, nil
	}
}

// sendmailAttributor finds each recipient's endpoint the way Sendmail asks
// tlsgate for it: tls_rcpt:ADDRESS and its domain keys.
func sendmailAttributor(h *reload.Holder) heldmail.Attributor {
	return func(_ context.Context, addrs []string) ([]string, error) {
		m, now := verdict.New(h.Policy()), time.Now()
		out := make([]string, len(addrs))
		for i, a := range addrs {
			if d := (mailq.Recipient{Address: a}).Domain(); d != "" {
				out[i] = m.Domain(d, a, now).Endpoint
			}
		}
		return out, nil
	}
}

// probeLoop probes the covered partners every [watch] probe_interval (the
// first time right away); after a reload, the endpoints whose servers
// changed are probed at once.
func probeLoop(ctx context.Context, h *reload.Holder, log *slog.Logger, mw *metrics.Watch) {
	w := &partnerwatch.Watcher{Log: log}
	var routes *postfixRoutes
	var last time.Time
	var gen uint64
	probed := map[string]string{} // endpoint → its targets when last probed
	for {
		p := h.Policy()
		ws := p.Settings.Watch
		now := time.Now()
		switch {
		case ws == nil || ws.ProbeInterval == 0:
			if len(probed) > 0 {
				log.Info("partner-probe", "state", "off", "file", p.File)
				w.Forget(nil)
				probed = map[string]string{}
				if mw != nil {
					mw.SetPartners(nil)
				}
			}
			last = time.Time{}
		case !last.IsZero() && now.Before(last.Add(ws.ProbeInterval)) && h.Generation() == gen:
		default:
			g := h.Generation()
			var route partnerwatch.Router
			if p.MTA == policy.Postfix {
				routes = watchRoutes(routes, ws, ws.ProbeTimeout)
				route = transportTargets(routes)
			}
			targets, err := partnerwatch.Targets(ctx, p, ws.ProbeEndpoints, route)
			if err != nil {
				log.Warn("partner-probe", "result", "failed", "error", err.Error())
				last, gen = now, g
				break
			}
			popts, err := probeOptions(p.Settings, ws)
			if err != nil {
				log.Warn("partner-probe", "result", "failed", "error", err.Error())
				last, gen = now, g
				break
			}
			w.Probe = func(ctx context.Context, t probe.Target) ([]probe.Result, error) { return probe.Probe(ctx, t, popts) }
			model := verdict.New(p)
			w.Judge = func(t partnerwatch.Target, r *probe.Result) partnerwatch.Verdict {
				return partnerwatch.Judge(model, t, r, time.Now())
			}
			due := last.IsZero() || !now.Before(last.Add(ws.ProbeInterval))
			keys := targetKeys(targets)
			round := targets
			if !due {
				// A reload: only the endpoints whose servers changed.
				round = nil
				for _, t := range targets {
					if probed[t.Endpoint] != keys[t.Endpoint] {
						round = append(round, t)
					}
				}
			}
			w.Forget(targets)
			w.Round(ctx, round, now)
			probed = keys
			if due {
				last = now
			}
			gen = g
			if mw != nil {
				mw.SetPartners(w.Statuses())
			}
		}
		if !sleep(ctx, watchPoll) {
			return
		}
	}
}

// targetKeys names each endpoint's targets, to see whether a reload
// changed them.
func targetKeys(ts []partnerwatch.Target) map[string]string {
	keys := map[string]string{}
	for _, t := range ts {
		keys[t.Endpoint] += t.Pattern + "→" + t.Probe.String() + " "
	}
	return keys
}

// watchRoutes returns routes for the Postfix of ws, made anew (with an
// empty cache) when ws names another Postfix, with timeout as each
// command's limit.
func watchRoutes(routes *postfixRoutes, ws *policy.Watch, timeout time.Duration) *postfixRoutes {
	if routes == nil || routes.dir != ws.PostfixConfig || routes.postqueue != ws.Postqueue {
		routes = &postfixRoutes{dir: ws.PostfixConfig, postqueue: ws.Postqueue, ttl: routeTTL}
	}
	routes.timeout = timeout
	return routes
}

// transportTargets sends a name where Postfix's transport_maps send its
// mail: a bracketed next hop is probed as that host and port, a
// "host:port" next hop as that host's MX hosts on that port. relayhost is
// not followed: it is our relay, not the partner.
func transportTargets(routes *postfixRoutes) partnerwatch.Router {
	return func(ctx context.Context, names []string) ([]probe.Target, []bool, error) {
		hops, err := routes.route(ctx, names, false)
		if err != nil {
			return nil, nil, err
		}
		ts, ok := make([]probe.Target, len(names)), make([]bool, len(names))
		for i, n := range names {
			nh := hops[n]
			switch {
			case nh.NoTLS, nh.Host == "" && nh.Domain == n:
			case nh.Bracketed:
				ts[i], ok[i] = probe.Target{Host: nh.Host, Port: nh.Port}, true
			default:
				ts[i], ok[i] = probe.Target{Domain: strings.ToLower(nh.Host), Port: nh.Port}, true
			}
		}
		return ts, ok, nil
	}
}

// probeOptions are the probes' options: our CA store (loadRoots), our
// client certificate when [certs] names it, the time limit.
func probeOptions(s policy.Settings, ws *policy.Watch) (probe.Options, error) {
	o := probe.Options{Timeout: ws.ProbeTimeout, Resolver: net.DefaultResolver}
	roots, _, err := loadRoots(s)
	if err != nil {
		return o, err
	}
	o.Roots = roots
	if s.ServerCert != "" && s.ServerKey != "" {
		pair, err := tls.LoadX509KeyPair(s.ServerCert, s.ServerKey)
		if err != nil {
			return o, err
		}
		o.ClientCert = &pair
	}
	return o, nil
}
