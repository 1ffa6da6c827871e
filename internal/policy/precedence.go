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

// exceptions resolves each endpoint's exception_to, once every endpoint
// is known.
func (c *compiler) exceptions(p *Policy, names map[string]int) {
	for i, ep := range p.Endpoints {
		raw := c.pending[ep]
		if raw == nil || raw.to == "" || raw.expires == nil {
			continue
		}
		path := endpointPath(p, i) + ".exception_to"
		j, ok := names[strings.ToLower(raw.to)]
		switch {
		case !ok:
			c.at(path, "endpoint %q: exception_to = %q names no endpoint%s", ep.Name, raw.to, closestName(p, raw.to))
			continue
		case p.Endpoints[j] == ep:
			c.at(path, "endpoint %q: exception_to names the endpoint itself; name the endpoint it is nested in and relaxes", ep.Name)
			continue
		}
		x := &Exception{Endpoint: ep, To: p.Endpoints[j], Reason: raw.reason, Line: c.loc.line(endpointPath(p, i) + ".expires")}
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

// closestName suggests an endpoint name close to s.
func closestName(p *Policy, s string) string {
	best, bd := "", 3
	for _, ep := range p.Endpoints {
		if d := editDistance(strings.ToLower(s), strings.ToLower(ep.Name)); d < bd {
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
func (c *compiler) precedence(p *Policy) {
	for _, d := range directions {
		ix := p.ix[d]
		for _, ep := range p.Endpoints {
			if !ep.Defines(d) {
				continue
			}
			var seen map[int32]bool
			for k, h := range ep.Hosts {
				ix.covers(h, func(o int32, by Pattern) {
					outer := p.Endpoints[o]
					if outer == ep || seen[o] {
						return
					}
					if seen == nil {
						seen = map[int32]bool{}
					}
					seen[o] = true
					short := ep.Rule(d).Shortfalls(outer.Rule(d))
					if len(short) == 0 {
						return
					}
					if x := ep.Exception; x != nil && x.To == outer {
						x.relaxes[d] = true
						return
					}
					c.problem(c.hostLine(ep, k), "%s", weakerMessage(ep, outer, d, h, by, short))
				})
			}
		}
	}
	for _, x := range p.exceptions {
		c.checkException(p, x)
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
	fmt.Fprintf(&b, "endpoint %q is nested in endpoint %q (line %d) for %s: %q there covers its %q, so %q decides for those hosts, but it demands less than %q: it lacks %s. ",
		ep.Name, outer.Name, outer.Line, d, by.Canonical(), h.Text, ep.Name, outer.Name, strings.Join(short, ", "))
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
func (c *compiler) checkException(p *Policy, x *Exception) {
	ep, to := x.Endpoint, x.To
	path := endpointPath(p, int(ep.pos)) + ".exception_to"
	covered := false
	for _, d := range directions {
		if ep.Defines(d) && to.Defines(d) && len(uncovered(p, d, ep, to)) < len(ep.Hosts) {
			covered = true
		}
	}
	if !covered {
		c.at(path, "endpoint %q is an exception to %q, but %q covers none of its hosts in a direction both define: an exception relaxes an endpoint it is nested in (as mx1.company-b.example is in .company-b.example)", ep.Name, to.Name, to.Name)
		return
	}
	if !x.relaxes[Inbound] && !x.relaxes[Outbound] {
		c.at(path, "endpoint %q is an exception to %q but demands at least as much wherever %q covers it: it relaxes nothing; remove exception_to, reason and expires", ep.Name, to.Name, to.Name)
		return
	}
	for _, d := range directions {
		if !x.relaxes[d] {
			continue
		}
		if left := uncovered(p, d, ep, to); len(left) > 0 {
			c.problem(c.hostLine(ep, left[0]), "endpoint %q relaxes %q for %s until %s; from then on %q's rules apply to its hosts, but %q does not cover %s: put it in an endpoint of its own, so that it keeps its rules", ep.Name, to.Name, d, x.Expires(), to.Name, to.Name, hostList(ep, left))
		}
	}
}

// uncovered returns the positions of ep's hosts that no pattern of to
// covers in direction d.
func uncovered(p *Policy, d Direction, ep, to *Endpoint) []int {
	var out []int
	for k, h := range ep.Hosts {
		found := false
		p.ix[d].covers(h, func(o int32, _ Pattern) {
			if p.Endpoints[o] == to {
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
func (c *compiler) postfixOutboundHosts(ep *Endpoint) {
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
	line := c.loc.line("endpoint." + strconv.Itoa(ep.index) + ".hosts")
	if !names {
		c.problem(line, "endpoint %q outbound: Postfix looks up its TLS policy with the next-hop domain (example.com, [mx.example.com]), never with the MX host's address, so hosts that are only addresses and ranges (%s) would apply to no mail routed by MX, only to next hops written as an address ([203.0.113.25] in transport or relayhost); list the partner's domain (and .domain) or its MX host names in hosts", ep.Name, hostList(ep, addrs))
		return
	}
	c.warn(line, "endpoint %q outbound: Postfix looks up its TLS policy with the next-hop domain, never with the MX host's address, so for outbound mail its addresses and ranges (%s) match only next hops written as an address ([203.0.113.25] in transport or relayhost); for mail routed by MX the names in hosts decide", ep.Name, hostList(ep, addrs))
}
