package main

import (
	"log/slog"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// exceptionCheckMax is the longest serve waits between two looks at the
// exceptions, so that a clock that jumps (NTP, a suspended machine) delays
// the line that an exception has ended by at most this much. Decisions do
// not wait for it: every lookup and judgement asks the policy at its own
// instant (policy.Policy.At).
const exceptionCheckMax = time.Minute

// exceptionWatch tells the administrator when an exception ends: serve
// logs one line per exception at the instant it ends (or at start or
// reload if it already has), and keeps tlsgate_exception_expiry_timestamp_seconds
// equal to the exceptions of the policy in force.
//
// It runs in serve's main loop on a timer set to the next expiry, not in
// the decision paths: an exception ends at an instant of the clock, not
// when some mail happens to come, and the line must not depend on which
// part (milter, socketmap, delegation) sees traffic first, nor cost the
// hot paths a shared lock. What is enforced changes exactly at the
// instant whatever the line's delay, since every decision asks the policy
// at its own time.
type exceptionWatch struct {
	log   *slog.Logger
	m     *metrics.Metrics
	timer *time.Timer
	seen  *policy.Policy        // the policy the metric shows
	ended map[exceptionKey]bool // exceptions whose end was logged
}

// exceptionKey names an exception across reloads: the same endpoint,
// relaxing the same endpoint until the same date, is the same exception;
// a new date makes it a new one.
type exceptionKey struct{ endpoint, to, expires string }

func newExceptionWatch(log *slog.Logger, m *metrics.Metrics) *exceptionWatch {
	return &exceptionWatch{log: log, m: m, timer: time.NewTimer(0), ended: map[exceptionKey]bool{}}
}

// C fires when the exceptions should be looked at again.
func (w *exceptionWatch) C() <-chan time.Time { return w.timer.C }

// tick looks at p's exceptions at now: it refreshes the metric for a new
// policy, logs each exception that has ended and was not logged before,
// and sets the timer to the next end (at most exceptionCheckMax away),
// which it returns.
func (w *exceptionWatch) tick(p *policy.Policy, now time.Time) time.Duration {
	if p != w.seen {
		w.seen = p
		if w.m != nil {
			w.m.SetExceptions(p, now.Location())
		}
	}
	wait := exceptionCheckMax
	for _, x := range p.Exceptions() {
		k := exceptionKey{x.Endpoint.Name, x.To.Name, x.Expires()}
		if !x.Expired(now) {
			wait = min(wait, x.ExpiresAt(now.Location()).Sub(now))
			continue
		}
		if w.ended[k] {
			continue
		}
		w.ended[k] = true
		var dirs []string
		for _, d := range []policy.Direction{policy.Inbound, policy.Outbound} {
			if x.Relaxes(d) {
				dirs = append(dirs, d.String())
			}
		}
		w.log.Warn("exception-ended",
			"endpoint", x.Endpoint.Name, "exception_to", x.To.Name, "expires", x.Expires(),
			"directions", strings.Join(dirs, ","),
			"effect", x.To.Name+"'s rules apply to "+x.Endpoint.Name+"'s hosts; remove exception_to, reason and expires, or the endpoint",
			"file", p.File, "line", x.Line, "reason", x.Reason)
	}
	wait = max(wait, 0)
	w.timer.Reset(wait)
	return wait
}

// stop stops the timer.
func (w *exceptionWatch) stop() { w.timer.Stop() }
