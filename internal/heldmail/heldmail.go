// Package heldmail finds the mail the MTA holds in its queue because of
// TLS: recipients deferred with a TLS reason (the server offers no
// STARTTLS, its certificate does not verify or does not name it, the
// handshake fails, the TLS policy lookup fails), counted for the endpoint
// that decides their TLS. serve's held-mail watch reads the queue once
// per interval ([Watcher.Round]) and reports, per endpoint, the messages
// held and the age of the oldest, with one log line when an endpoint
// starts holding mail and one when it stops.
//
// The queue is read with the MTA's own listing (package mailq: one
// postqueue -j or mailq per round); which endpoint a recipient belongs to
// is asked of an [Attributor] the way the MTA asks tlsgate (Postfix: the
// recipient domain's next hop; Sendmail: tls_rcpt).
package heldmail

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/tlsgate/tlsgate/internal/mailq"
)

// Attributor returns, for each recipient address, the name of the
// endpoint that decides the TLS of mail to it ("" when none does). It is
// called once per round with the recipients whose delay reason is about
// TLS, so that it can batch its lookups.
type Attributor func(ctx context.Context, addrs []string) ([]string, error)

// Held is the mail one endpoint holds.
type Held struct {
	// Endpoint is the endpoint's name.
	Endpoint string
	// Messages and Recipients count what is held: queued messages with at
	// least one such recipient, and those recipients.
	Messages, Recipients int
	// Oldest is the arrival time of the oldest held message (zero if the
	// queue does not say).
	Oldest time.Time
	// Reason is the delay reason most of the held recipients have, as the
	// MTA wrote it, and Cause its reading.
	Reason string
	Cause  Cause
}

// Age is how long the oldest held message has been queued at now (0 if
// its arrival is not known).
func (h Held) Age(now time.Time) time.Duration {
	if h.Oldest.IsZero() || now.Before(h.Oldest) {
		return 0
	}
	return now.Sub(h.Oldest)
}

// Count finds the mail held because of TLS in q, by endpoint, sorted by
// endpoint name. Messages on hold (Postfix's hold queue, Sendmail's
// quarantine) are not counted: an administrator holds them, not TLS.
func Count(ctx context.Context, q []mailq.Message, attr Attributor) ([]Held, error) {
	type ref struct {
		msg    int
		reason string
	}
	var addrs []string
	var refs []ref
	for i, m := range q {
		if m.Queue == "hold" {
			continue
		}
		for _, r := range m.Recipients {
			if Classify(r.Reason) == NotTLS {
				continue
			}
			addrs = append(addrs, r.Address)
			refs = append(refs, ref{i, r.Reason})
		}
	}
	if len(addrs) == 0 {
		return nil, nil
	}
	eps, err := attr(ctx, addrs)
	if err != nil {
		return nil, err
	}
	if len(eps) != len(addrs) {
		return nil, fmt.Errorf("heldmail: %d endpoints for %d recipients", len(eps), len(addrs))
	}
	type acc struct {
		held    Held
		msgs    map[int]bool
		reasons map[string]int
	}
	by := map[string]*acc{}
	for i, ep := range eps {
		if ep == "" {
			continue
		}
		a := by[ep]
		if a == nil {
			a = &acc{held: Held{Endpoint: ep}, msgs: map[int]bool{}, reasons: map[string]int{}}
			by[ep] = a
		}
		r := refs[i]
		a.held.Recipients++
		a.reasons[r.reason]++
		if !a.msgs[r.msg] {
			a.msgs[r.msg] = true
			a.held.Messages++
			if t := q[r.msg].Arrival; !t.IsZero() && (a.held.Oldest.IsZero() || t.Before(a.held.Oldest)) {
				a.held.Oldest = t
			}
		}
	}
	out := make([]Held, 0, len(by))
	for _, a := range by {
		for r, n := range a.reasons {
			if best := a.reasons[a.held.Reason]; n > best || n == best && (a.held.Reason == "" || r < a.held.Reason) {
				a.held.Reason = r
			}
		}
		a.held.Cause = Classify(a.held.Reason)
		out = append(out, a.held)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out, nil
}

// Watcher reads the queue in rounds and logs when an endpoint starts and
// stops holding mail. Its fields are set before the first round; Round is
// not safe for concurrent use.
type Watcher struct {
	// Read lists the queue (mailq.Source.Read).
	Read func(ctx context.Context, now time.Time) ([]mailq.Message, error)
	// Attribute finds the endpoint of each held recipient.
	Attribute Attributor
	// Log receives the state changes.
	Log *slog.Logger
	// OnRound, if set, is called after each round with its outcome: the
	// held mail by endpoint (nil when the queue could not be read, ok
	// false).
	OnRound func(held []Held, ok bool, now time.Time)

	holding map[string]time.Time // endpoint → when it started holding
	failing string               // the error of the last round, "" if it succeeded
}

// Round reads the queue once and logs what changed since the last round:
//
//	held-mail endpoint=company-b state=holding messages=3 recipients=3 oldest=2026-12-08T09:00:00Z age=2h0m0s cause=not-verified reason="Server certificate not verified"
//	held-mail endpoint=company-b state=released held_for=2h5m0s
//
// The first line is a warning, the second information. A queue that
// cannot be read is logged once (held-mail-queue result=failed, a
// warning) until it can be read again (result=ok); meanwhile the state
// stays as it was. The error is returned.
func (w *Watcher) Round(ctx context.Context, now time.Time) error {
	q, err := w.Read(ctx, now)
	var held []Held
	if err == nil {
		held, err = Count(ctx, q, w.Attribute)
	}
	if err != nil {
		if msg := err.Error(); msg != w.failing {
			w.Log.Warn("held-mail-queue", "result", "failed", "error", msg)
			w.failing = msg
		}
		if w.OnRound != nil {
			w.OnRound(nil, false, now)
		}
		return err
	}
	if w.failing != "" {
		w.Log.Info("held-mail-queue", "result", "ok", "messages", len(q))
		w.failing = ""
	}
	if w.holding == nil {
		w.holding = map[string]time.Time{}
	}
	now = now.UTC()
	seen := make(map[string]bool, len(held))
	for _, h := range held {
		seen[h.Endpoint] = true
		if _, ok := w.holding[h.Endpoint]; ok {
			continue
		}
		w.holding[h.Endpoint] = now
		args := []any{"endpoint", h.Endpoint, "state", "holding", "messages", h.Messages, "recipients", h.Recipients}
		if !h.Oldest.IsZero() {
			args = append(args, "oldest", h.Oldest.UTC().Format(time.RFC3339), "age", h.Age(now).Round(time.Second).String())
		}
		w.Log.Warn("held-mail", append(args, "cause", h.Cause.String(), "reason", h.Reason)...)
	}
	for _, ep := range slices.Sorted(maps.Keys(w.holding)) {
		if seen[ep] {
			continue
		}
		w.Log.Info("held-mail", "endpoint", ep, "state", "released", "held_for", now.Sub(w.holding[ep]).Round(time.Second).String())
		delete(w.holding, ep)
	}
	if w.OnRound != nil {
		w.OnRound(held, true, now)
	}
	return nil
}
