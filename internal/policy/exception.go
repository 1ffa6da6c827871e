package policy

import (
	"fmt"
	"strings"
	"time"
)

// Exception is an endpoint's declaration that, until a date, it relaxes
// the rules of an endpoint it is nested in:
//
//	exception_to = "company-b"
//	reason       = "CHG-4711: their new MX gets a certificate by January"
//	expires      = 2027-01-31
//
// A more specific endpoint must demand at least what every endpoint it is
// nested in demands (see Rule); an exception may demand less than the one
// it names, in the directions where it does (Relaxes). There it applies
// until it expires; from then on it is absent in those directions and the
// named endpoint's rules apply to its hosts, without a reload: every
// lookup takes the time from its caller (Policy.At).
type Exception struct {
	// Endpoint is the endpoint that is the exception.
	Endpoint *Endpoint
	// To is the endpoint it relaxes (exception_to); it covers every host
	// of Endpoint in the directions relaxed.
	To *Endpoint
	// Reason is the administrator's reason (reason).
	Reason string
	// Line is the line of expires.
	Line int

	date    time.Time // expires as a date: year, month and day in UTC; zero for an instant
	instant time.Time // expires as a date and time with an offset
	relaxes [2]bool
	pos     int32 // Endpoint's position in Policy.Endpoints
}

// ExceptionWarning is how long before an exception ends `tlsgate check`
// warns about it (Policy.Warnings).
const ExceptionWarning = 14 * 24 * time.Hour

// Relaxes reports whether the exception demands less than To in
// direction d. Only there does it expire: in a direction where it is at
// least as strict as To it applies like any other endpoint, also after
// its date.
func (x *Exception) Relaxes(d Direction) bool { return x.relaxes[d] }

// ExpiresAt returns the instant the exception ends. A date (expires =
// 2027-01-31) ends at 00:00 of that day in loc: from that day on the
// covering endpoint applies. A date and time with an offset (expires =
// 2027-01-31T12:00:00+01:00) ends at that instant, whatever loc.
func (x *Exception) ExpiresAt(loc *time.Location) time.Time {
	if x.date.IsZero() {
		return x.instant
	}
	if loc == nil {
		loc = time.UTC
	}
	y, m, d := x.date.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// Expired reports whether the exception has ended at now, that is whether
// now is at or after ExpiresAt(now.Location()).
func (x *Exception) Expired(now time.Time) bool {
	return !now.Before(x.ExpiresAt(now.Location()))
}

// Expires returns the expiry as the file writes it: "2027-01-31" or
// "2027-01-31T12:00:00+01:00".
func (x *Exception) Expires() string {
	if x.date.IsZero() {
		return x.instant.Format(time.RFC3339)
	}
	return x.date.Format(time.DateOnly)
}

// relaxed names the directions the exception relaxes: "inbound",
// "outbound" or "inbound and outbound".
func (x *Exception) relaxed() string {
	var ds []string
	for _, d := range directions {
		if x.relaxes[d] {
			ds = append(ds, d.String())
		}
	}
	return strings.Join(ds, " and ")
}

// Exceptions returns the policy's exceptions in file order, expired ones
// included: for a metric of their expiry and for the line the daemon logs
// once when one ends.
func (p *Policy) Exceptions() []*Exception { return p.exceptions }

// Warnings returns what `tlsgate check` should tell the administrator
// about the policy at now, each at its line: what load found questionable
// (outbound addresses Postfix never asks for, ...), exceptions that end
// within ExceptionWarning, and exceptions that have ended (their endpoint
// no longer applies in the directions they relax, and the lines can go).
func (p *Policy) Warnings(now time.Time) []*Problem {
	out := make([]*Problem, 0, len(p.warnings))
	for _, w := range p.warnings {
		out = append(out, w.problem())
	}
	for _, x := range p.exceptions {
		end := x.ExpiresAt(now.Location())
		switch left := end.Sub(now); {
		case left <= 0:
			out = append(out, &Problem{File: x.Endpoint.File, Line: x.Line, Warning: true, Msg: fmt.Sprintf(
				"the exception of endpoint %q to %q ended on %s: %s, %q's rules apply to its hosts again (%s); remove exception_to, reason and expires, or the endpoint",
				x.Endpoint.Name, x.To.Name, x.Expires(), x.relaxed(), x.To.Name, x.Reason)})
		case left <= ExceptionWarning:
			out = append(out, &Problem{File: x.Endpoint.File, Line: x.Line, Warning: true, Msg: fmt.Sprintf(
				"the exception of endpoint %q to %q ends on %s (in %s): from then on, %s, %q's rules apply to its hosts (%s)",
				x.Endpoint.Name, x.To.Name, x.Expires(), daysLeft(left), x.relaxed(), x.To.Name, x.Reason)})
		}
	}
	return out
}

// daysLeft says "3 days", "1 day" or "less than a day".
func daysLeft(d time.Duration) string {
	switch n := int(d / (24 * time.Hour)); n {
	case 0:
		return "less than a day"
	case 1:
		return "1 day"
	default:
		return fmt.Sprintf("%d days", n)
	}
}
