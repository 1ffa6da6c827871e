package policy

import "time"

// View is the policy as it applies at one instant: an exception that has
// expired by then is absent in the directions it relaxes, so that the
// endpoint it relaxes applies to its hosts. The policy itself has no
// clock; every lookup and judgement goes through a View made with the
// time the caller trusts (the daemon's clock, or a test's).
//
// A View is two words; make one per decision.
type View struct {
	p   *Policy
	now time.Time
}

// At returns the policy as it applies at now.
func (p *Policy) At(now time.Time) View { return View{p: p, now: now} }

// Policy returns the policy the view looks at.
func (v View) Policy() *Policy { return v.p }

// Time returns the view's instant.
func (v View) Time() time.Time { return v.now }

// Active reports whether ep takes part in direction d at the view's
// instant: it defines d and is not an exception that relaxes d and has
// expired.
func (v View) Active(ep *Endpoint, d Direction) bool {
	if !ep.Defines(d) {
		return false
	}
	x := ep.Exception
	return x == nil || !x.relaxes[d] || !x.Expired(v.now)
}

// gone returns the index filter for direction d at the view's instant,
// nil when no exception relaxes d.
func (v View) gone(d Direction) gone {
	if !v.p.relaxes[d] {
		return nil
	}
	return func(i int32) bool {
		x := v.p.byID[i].Exception
		return x != nil && x.relaxes[d] && x.Expired(v.now)
	}
}

// withoutExceptions returns the index filter for direction d as if every
// exception relaxing d had expired: what the covering endpoints decide.
func (v View) withoutExceptions(d Direction) gone {
	if !v.p.relaxes[d] {
		return nil
	}
	return func(i int32) bool {
		x := v.p.byID[i].Exception
		return x != nil && x.relaxes[d]
	}
}

// exceptionIn returns ep's exception if it applies as one in direction d
// (it relaxes d and, ep having been found, has not expired), else nil.
func exceptionIn(ep *Endpoint, d Direction) *Exception {
	if ep == nil || ep.Exception == nil || !ep.Exception.relaxes[d] {
		return nil
	}
	return ep.Exception
}
