// Package whatif tells what a new tlsgate configuration would do before it
// is deployed: for each next hop with mail in the queue, the answer the
// MTA gets today and would get, the TLS last seen with that peer, and
// whether the mail would be delivered or stay queued; and, from the logs,
// which sessions of the period the new file would have refused (inbound)
// or held (outbound) that today's file let through.
package whatif

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/maillog"
	"github.com/tlsgate/tlsgate/internal/mailq"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/posture"
	"github.com/tlsgate/tlsgate/internal/probe"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

// NextHop is where the MTA sends a recipient's mail, in its own terms.
type NextHop struct {
	// Key is the TLS policy lookup key: a domain ("example.com", looked
	// up with its parent domains), "[host]:port" or "host:port".
	Key string
	// Domain is set when Key is the recipient domain itself.
	Domain string
	// Host and Port are set for a host next hop; Bracketed says no MX
	// lookup is done for Host.
	Host      string
	Port      int
	Bracketed bool
	// NoTLS is set for a transport that does not use SMTP over the
	// network (discard, error, local, ...): TLS does not apply.
	NoTLS bool
}

// Router finds the next hop of a recipient domain (Postfix: transport(5),
// relayhost). Nil routes every domain to itself.
type Router func(domain string) (NextHop, error)

// Prober probes a next hop; nil: no probes.
type Prober func(ctx context.Context, t probe.Target) ([]probe.Result, error)

// Options are the inputs of [Run].
type Options struct {
	Current, New *verdict.Model
	// Queue is the queue listing (nil: not read).
	Queue []mailq.Message
	// Logs is the posture report of the logs under the current policy,
	// LogsNew the same logs under the new one (nil: no logs).
	Logs, LogsNew *posture.Report
	Route         Router
	Probe         Prober
	Now           time.Time
}

// Hop is one next hop with queued mail.
type Hop struct {
	NextHop    NextHop
	Domains    []string
	Messages   int
	Recipients int
	Oldest     time.Time
	// LastReason is a delay reason of the queued mail.
	LastReason string
	// Today and New are the answers; TodayText and NewText what the MTA
	// receives ("" = not found, its default applies).
	Today, New         verdict.Answer
	TodayText, NewText string
	// LastTLS is the TLS last seen with the peer in the logs.
	LastTLS *posture.Session
	// Evidence says what the verdict rests on (probe, log, queue).
	Evidence string
	// TodayOutcome and NewOutcome are the verdicts; Why explains
	// NewOutcome.
	TodayOutcome, NewOutcome mtapolicy.Outcome
	Why                      string
	// Worse: the new file keeps mail queued (or cannot tell) that today's
	// would deliver.
	Worse bool
	Err   string
}

// PeerChange is a peer of the logs whose sessions the new file would
// refuse or hold more often than today's.
type PeerChange struct {
	Direction   posture.Direction
	Kind        posture.Kind
	Peer        string
	Sessions    int
	Today, New  int // refused (inbound) or held (outbound) sessions
	NewUnknown  int // sessions the new file's checks cannot be judged on from the log
	Endpoints   []string
	Reason      string
	LastSession *posture.Session
}

// Result is what whatif found.
type Result struct {
	Hops    []Hop
	Changes []PeerChange
	// Held counts the queued messages that would stay queued under the
	// new file, Unknown those whose next hop cannot be judged (no TLS
	// seen, or a check the evidence cannot show), Delivered those that
	// would be delivered.
	Held, Unknown, Delivered int
	// Worse: something would change for the worse.
	Worse bool
}

// Run computes the result.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	res := &Result{}
	if o.Queue != nil {
		hops, err := queueHops(o)
		if err != nil {
			return nil, err
		}
		for i := range hops {
			judgeHop(ctx, o, &hops[i])
			h := &hops[i]
			switch h.NewOutcome {
			case mtapolicy.Deliver:
				res.Delivered += h.Messages
			case mtapolicy.Hold:
				res.Held += h.Messages
			default:
				res.Unknown += h.Messages
			}
			res.Worse = res.Worse || h.Worse
		}
		res.Hops = hops
	}
	if o.Logs != nil && o.LogsNew != nil {
		res.Changes = logChanges(o.Logs, o.LogsNew)
		if len(res.Changes) > 0 {
			res.Worse = true
		}
	}
	return res, nil
}

func queueHops(o Options) ([]Hop, error) {
	byKey := map[string]*Hop{}
	ids := map[string]map[string]bool{}
	var order []string
	for _, m := range o.Queue {
		for _, r := range m.Recipients {
			d := r.Domain()
			if d == "" {
				continue
			}
			nh := NextHop{Key: d, Domain: d}
			if o.Route != nil {
				var err error
				if nh, err = o.Route(d); err != nil {
					return nil, err
				}
			}
			if nh.NoTLS {
				continue
			}
			h := byKey[nh.Key]
			if h == nil {
				h = &Hop{NextHop: nh}
				byKey[nh.Key] = h
				ids[nh.Key] = map[string]bool{}
				order = append(order, nh.Key)
			}
			if !contains(h.Domains, d) {
				h.Domains = append(h.Domains, d)
			}
			h.Recipients++
			if !ids[nh.Key][m.ID] {
				ids[nh.Key][m.ID] = true
				h.Messages++
			}
			if !m.Arrival.IsZero() && (h.Oldest.IsZero() || m.Arrival.Before(h.Oldest)) {
				h.Oldest = m.Arrival
			}
			if r.Reason != "" {
				h.LastReason = r.Reason
			}
		}
	}
	sort.Strings(order)
	out := make([]Hop, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// answer asks a model for a hop (rcpt: one recipient, for Sendmail's
// tls_rcpt: lookups).
func answer(m *verdict.Model, h *Hop, now time.Time) verdict.Answer {
	nh := h.NextHop
	if m.Sendmail() || nh.Domain != "" {
		d := nh.Domain
		if d == "" && len(h.Domains) > 0 {
			d = h.Domains[0]
		}
		return m.Domain(d, "", now)
	}
	return m.Key(nh.Key, now)
}

func judgeHop(ctx context.Context, o Options, h *Hop) {
	h.Today, h.New = answer(o.Current, h, o.Now), answer(o.New, h, o.Now)
	for _, a := range []verdict.Answer{h.Today, h.New} {
		if a.Err != nil {
			h.Err = a.Err.Error()
		}
	}
	if h.Today.Active() {
		h.TodayText = h.Today.Text
	}
	if h.New.Active() {
		h.NewText = h.New.Text
	}
	today, err1 := o.Current.Requirement(h.Today, false)
	next, err2 := o.New.Requirement(h.New, false)
	if err1 != nil || err2 != nil || h.New.Err != nil {
		h.NewOutcome, h.Why = mtapolicy.Hold, "the new answer is a lookup error: the MTA keeps the mail (TEMP)"
		if err2 != nil {
			h.Why = err2.Error()
		}
		h.Worse = true
		return
	}
	sess, evidence := evidenceFor(ctx, o, h)
	h.Evidence = evidence
	h.TodayOutcome, _ = today.Judge(sess)
	h.NewOutcome, h.Why = next.Judge(sess)
	if evidence == "none" && !next.None {
		h.NewOutcome, h.Why = mtapolicy.Unknown, "no TLS seen with this peer (give --logs, or --probe)"
	}
	h.Worse = h.NewText != h.TodayText && h.NewOutcome != mtapolicy.Deliver && h.TodayOutcome == mtapolicy.Deliver
}

// evidenceFor finds what is known of the peer's TLS: a probe, else the
// last session in the logs, else the queue's delay reason.
func evidenceFor(ctx context.Context, o Options, h *Hop) (mtapolicy.Session, string) {
	if o.Logs != nil {
		for _, d := range h.Domains {
			for i := range o.Logs.Peers {
				p := &o.Logs.Peers[i]
				if p.Direction == posture.Outbound && p.Kind == posture.KindDomain && p.Peer == d && p.LastSession != nil {
					if h.LastTLS == nil || p.LastSession.Time.After(h.LastTLS.Time) {
						h.LastTLS = p.LastSession
					}
				}
			}
		}
	}
	if o.Probe != nil {
		t := probe.Target{Domain: h.NextHop.Domain}
		switch {
		case h.NextHop.Domain != "":
		case h.NextHop.Bracketed:
			t = probe.Target{Host: h.NextHop.Host, Port: h.NextHop.Port}
		default:
			t = probe.Target{Domain: h.NextHop.Host, Port: h.NextHop.Port}
		}
		rs, err := o.Probe(ctx, t)
		if err == nil && len(rs) > 0 && (rs[0].Err == nil || rs[0].TLS) {
			r := rs[0]
			sess := r.Session()
			desc := "plaintext (no STARTTLS)"
			if r.TLS {
				desc = fmt.Sprintf("%s, %d bits, %s, CN=%s", r.Version, r.Bits, sess.Trust, probe.Escape(r.Chain[0].Subject.CommonName))
			}
			return sess, fmt.Sprintf("probe of %s: %s", probe.Escape(r.Host), desc)
		}
	}
	if l := h.LastTLS; l != nil {
		tr, _ := maillog.ParseTrust(l.Trust)
		return mtapolicy.Session{TLS: l.TLS, Bits: l.Bits, Trust: tr}, "log, " + l.Time.Format("2006-01-02 15:04") + ": " + l.Describe()
	}
	switch r := h.LastReason; {
	case strings.Contains(r, "TLS is required, but was not offered"):
		return mtapolicy.Session{TLS: false}, "queue: " + r
	case strings.Contains(r, "Server certificate not verified") || strings.Contains(r, "verify=FAIL"):
		return mtapolicy.Session{TLS: true, Trust: maillog.Untrusted}, "queue: " + r
	}
	return mtapolicy.Session{}, "none"
}

// logChanges lists the peers whose sessions the new file would refuse or
// hold more often than today's.
func logChanges(today, next *posture.Report) []PeerChange {
	type key struct {
		d posture.Direction
		k posture.Kind
		p string
	}
	old := map[key]*posture.PeerReport{}
	for i := range today.Peers {
		p := &today.Peers[i]
		old[key{p.Direction, p.Kind, p.Peer}] = p
	}
	var out []PeerChange
	for i := range next.Peers {
		p := &next.Peers[i]
		if p.Kind == posture.KindMX || p.Judgement == nil || p.Judgement.Refused == 0 {
			continue
		}
		before := 0
		if o := old[key{p.Direction, p.Kind, p.Peer}]; o != nil && o.Judgement != nil {
			before = o.Judgement.Refused
		}
		if p.Judgement.Refused <= before {
			continue
		}
		c := PeerChange{Direction: p.Direction, Kind: p.Kind, Peer: p.Peer, Sessions: p.Sessions, Today: before,
			New: p.Judgement.Refused, NewUnknown: p.Judgement.Unknown, Endpoints: p.Endpoints, LastSession: p.LastSession}
		for r, n := range p.Judgement.Reasons {
			if c.Reason == "" || n > p.Judgement.Reasons[c.Reason] || (n == p.Judgement.Reasons[c.Reason] && r < c.Reason) {
				c.Reason = r
			}
		}
		out = append(out, c)
	}
	return out
}
