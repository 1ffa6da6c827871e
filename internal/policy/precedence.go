package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Precedence. A key (a next hop, a recipient domain, a client's address,
// name or sender domain) is decided, in each direction, by the most
// specific pattern that matches it among the endpoints that define that
// direction: an exact name or address over the longest subdomain pattern
// or range above it. An endpoint without an [endpoint.outbound] table
// never decides an outbound key, and one without [endpoint.inbound] never
// decides who may connect to us.
//
// So that a more specific endpoint never lets through what a less
// specific one would refuse, load requires that an endpoint nested in
// another (a pattern of the other covers one of its patterns: .example.com
// covers mx.example.com and .sub.example.com, 192.0.2.0/24 covers
// 192.0.2.7 and 192.0.2.128/25) demands at least as much in each direction
// both define (Rule.AtLeastAsStrict), unless it is an exception to that
// endpoint (Exception). Then the most specific endpoint is at least as
// strict as every endpoint whose pattern matches the key, by construction.

// exceptions makes each endpoint that declares an exception_to an
// exception to the endpoint it names, once every endpoint of every file is
// known. The endpoint is copied for the policy first: its unit's copy is
// shared with other policies, and the Exception belongs to this one.
func (a *assembler) exceptions(names map[string]int32) {
	p := a.p
	var xs []int32
	for i, r := range a.refs {
		if raw := r.u.exc[r.k]; raw != nil && raw.to != "" && raw.expires != nil {
			cp := *p.Endpoints[i]
			p.Endpoints[i] = &cp
			p.byID[a.id(int32(i))] = &cp
			xs = append(xs, int32(i))
		}
	}
	for _, i := range xs {
		ep, r := p.Endpoints[i], a.refs[i]
		raw := r.u.exc[r.k]
		line := r.u.line(r.k, lineExceptionTo)
		j, ok := names[lowerASCII(raw.to)]
		switch {
		case !ok:
			a.problem(ep.File, line, "endpoint %q: exception_to = %q names no endpoint%s", ep.Name, raw.to, a.closestName(raw.to))
			continue
		case j == a.id(i):
			a.problem(ep.File, line, "endpoint %q: exception_to names the endpoint itself; name the endpoint it is nested in and relaxes", ep.Name)
			continue
		}
		x := &Exception{Endpoint: ep, To: p.byID[j], Reason: raw.reason, Line: r.u.line(r.k, lineExpires), pos: i}
		if t := raw.expires.t; t.Location().String() == "date-local" {
			y, m, d := t.Date()
			x.date = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		} else {
			x.instant = t
		}
		ep.Exception = x
		p.exceptions = append(p.exceptions, x)
	}
}

// maxSuggestions bounds how many unknown exception_to names get a "did
// you mean": each costs a pass over every endpoint's name.
const maxSuggestions = 20

// closestName suggests an endpoint name close to s.
func (a *assembler) closestName(s string) string {
	if a.suggested++; a.suggested > maxSuggestions {
		return ""
	}
	best, bd := "", 3
	ls := strings.ToLower(s)
	for _, ep := range a.p.Endpoints {
		if n := len(ep.Name) - len(ls); n > 2 || n < -2 {
			continue // too far apart to be close
		}
		if d := editDistance(ls, strings.ToLower(ep.Name)); d < bd {
			best, bd = ep.Name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// precedence refuses, per direction, an endpoint nested in another that
// demands less, unless it is an exception to that endpoint; it works out
// which directions each exception relaxes and checks the exceptions.
// Each host pattern is looked up once per label or prefix length above
// it, so the check is linear in the number of patterns.
func (a *assembler) precedence() {
	p := a.p
	var weaker [2][]*Problem // inbound's first, as the file is read per direction
	for i, ep := range p.Endpoints {
		var seen [2]map[int32]bool
		id := a.id(int32(i))
		for k, h := range ep.Hosts {
			p.ix[0].covers(h, func(o owners, by Pattern) {
				for _, d := range directions {
					outerID := o[d]
					if !ep.Defines(d) || outerID < 0 || outerID == id || seen[d][outerID] {
						continue
					}
					if seen[d] == nil {
						seen[d] = map[int32]bool{}
					}
					seen[d][outerID] = true
					outer := p.byID[outerID]
					short := ep.Rule(d).Shortfalls(outer.Rule(d))
					if len(short) == 0 {
						continue
					}
					if x := ep.Exception; x != nil && x.To == outer {
						x.relaxes[d] = true
						continue
					}
					weaker[d] = append(weaker[d], &Problem{File: ep.File, Line: a.hostLine(int32(i), k), Msg: weakerMessage(ep, outer, d, h, by, short)})
				}
			})
		}
	}
	a.problems = append(append(a.problems, weaker[Inbound]...), weaker[Outbound]...)
	for _, x := range p.exceptions {
		a.checkException(x)
		for _, d := range directions {
			p.relaxes[d] = p.relaxes[d] || x.relaxes[d]
		}
	}
}

// weakerMessage says, in an administrator's words, that ep is nested in
// outer for direction d (outer's pattern by covers ep's pattern h) but
// demands less, what it lacks, and the two ways out.
func weakerMessage(ep, outer *Endpoint, d Direction, h, by Pattern, short []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "endpoint %q is nested in endpoint %q (%s) for %s: %q there covers its %q, so %q decides for those hosts, but it demands less than %q: it lacks %s. ",
		ep.Name, outer.Name, lineIn(outer.File, outer.Line, ep.File), d, by.Canonical(), h.Text, ep.Name, outer.Name, strings.Join(short, ", "))
	b.WriteString("A more specific endpoint must demand at least what every endpoint it is nested in demands: add what it lacks")
	if x := ep.Exception; x != nil {
		fmt.Fprintf(&b, " (its exception_to names %q; an exception relaxes only the endpoint it names)", x.To.Name)
		return b.String()
	}
	fmt.Fprintf(&b, `, or relax %q for a while with an exception in endpoint %q: exception_to = %q, reason = "...", expires = %s`,
		outer.Name, ep.Name, outer.Name, "2027-01-31")
	return b.String()
}

// checkException refuses an exception to an endpoint that does not cover
// it, one that relaxes nothing, and one with hosts the endpoint it
// relaxes does not cover in a relaxed direction (they would lose every
// rule when it expires).
func (a *assembler) checkException(x *Exception) {
	ep, to := x.Endpoint, x.To
	r := a.refs[x.pos]
	line := r.u.line(r.k, lineExceptionTo)
	covered := false
	for _, d := range directions {
		if ep.Defines(d) && to.Defines(d) && len(a.uncovered(d, ep, to)) < len(ep.Hosts) {
			covered = true
		}
	}
	if !covered {
		a.problem(ep.File, line, "endpoint %q is an exception to %q, but %q covers none of its hosts in a direction both define: an exception relaxes an endpoint it is nested in (as mx1.company-b.example is in .company-b.example)", ep.Name, to.Name, to.Name)
		return
	}
	if !x.relaxes[Inbound] && !x.relaxes[Outbound] {
		a.problem(ep.File, line, "endpoint %q is an exception to %q but demands at least as much wherever %q covers it: it relaxes nothing; remove exception_to, reason and expires", ep.Name, to.Name, to.Name)
		return
	}
	for _, d := range directions {
		if !x.relaxes[d] {
			continue
		}
		if left := a.uncovered(d, ep, to); len(left) > 0 {
			a.problem(ep.File, a.hostLine(x.pos, left[0]), "endpoint %q relaxes %q for %s until %s; from then on %q's rules apply to its hosts, but %q does not cover %s: put it in an endpoint of its own, so that it keeps its rules", ep.Name, to.Name, d, x.Expires(), to.Name, to.Name, hostList(ep, left))
		}
	}
}

// uncovered returns the positions of ep's hosts that no pattern of to
// covers in direction d.
func (a *assembler) uncovered(d Direction, ep, to *Endpoint) []int {
	p := a.p
	var out []int
	for k, h := range ep.Hosts {
		found := false
		p.ix[0].covers(h, func(o owners, _ Pattern) {
			if o[d] >= 0 && p.byID[o[d]] == to {
				found = true
			}
		})
		if !found {
			out = append(out, k)
		}
	}
	return out
}

// hostList quotes ep's hosts at positions ks.
func hostList(ep *Endpoint, ks []int) string {
	q := make([]string, len(ks))
	for i, k := range ks {
		q[i] = strconv.Quote(ep.Hosts[k].Text)
	}
	return strings.Join(q, ", ")
}

// postfixOutboundHosts refuses, on Postfix, an outbound endpoint whose
// hosts are only addresses and ranges, and warns about the addresses of
// one that mixes them with names: Postfix looks up its TLS policy table
// with the next hop (the recipient domain, or the transport's or
// relayhost's destination), never with the MX host's address.
func (c *compiler) postfixOutboundHosts(ep *Endpoint, i int) {
	if !ep.Defines(Outbound) {
		return
	}
	var addrs []int
	names := false
	for k, h := range ep.Hosts {
		if h.Kind == PatternAddr || h.Kind == PatternPrefix {
			addrs = append(addrs, k)
		} else {
			names = true
		}
	}
	if len(addrs) == 0 {
		return
	}
	line := c.loc.line("endpoint." + strconv.Itoa(i) + ".hosts")
	if !names {
		c.problem(line, "endpoint %q outbound: Postfix looks up its TLS policy with the next-hop domain (example.com, [mx.example.com]), never with the MX host's address, so hosts that are only addresses and ranges (%s) would apply to no mail routed by MX, only to next hops written as an address ([203.0.113.25] in transport or relayhost); list the partner's domain (and .domain) or its MX host names in hosts", ep.Name, hostList(ep, addrs))
		return
	}
	c.warnings = append(c.warnings, warning{ep: ep, line: int32(line), kind: warnOutboundAddrs})
}

// warning is something to look at found at load time, said in words only
// when asked for (Policy.Warnings): a policy of many endpoints keeps no
// text it may never print.
type warning struct {
	ep   *Endpoint
	line int32
	kind warningKind
}

type warningKind uint8

const (
	// warnOutboundAddrs: a Postfix outbound endpoint lists addresses or
	// ranges besides names.
	warnOutboundAddrs warningKind = iota
)

// problem says the warning at its file and line.
func (w warning) problem() *Problem {
	var msg string
	switch w.kind {
	case warnOutboundAddrs:
		var addrs []int
		for k, h := range w.ep.Hosts {
			if h.Kind == PatternAddr || h.Kind == PatternPrefix {
				addrs = append(addrs, k)
			}
		}
		msg = fmt.Sprintf("endpoint %q outbound: Postfix looks up its TLS policy with the next-hop domain, never with the MX host's address, so for outbound mail its addresses and ranges (%s) match only next hops written as an address ([203.0.113.25] in transport or relayhost); for mail routed by MX the names in hosts decide", w.ep.Name, hostList(w.ep, addrs))
	}
	return &Problem{File: w.ep.File, Line: int(w.line), Warning: true, Msg: msg}
}
