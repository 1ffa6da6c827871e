package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// assembler puts the units of a configuration together into a policy:
// the endpoints of all files in order, their names, the index of their
// host patterns, exceptions and nesting. Its problems involve more than
// one endpoint, maybe in different files.
type assembler struct {
	p         *Policy
	refs      []epRef // where each of p.Endpoints comes from
	problems  []*Problem
	firsts    map[int32]map[string]int // see firstHost
	suggested int                      // closestName calls
}

// epRef is an endpoint's unit and its position there.
type epRef struct {
	u *unit
	k int32
}

// problem records a problem at file:line.
func (a *assembler) problem(file string, line int, format string, args ...any) {
	a.problems = append(a.problems, &Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// assemble builds the policy of units (the main file's first). Every
// unit's own problems come first, in file order, then those found
// between endpoints; with any, the error lists them all.
func assemble(units []*unit) (*Policy, error) {
	m := units[0]
	var sizes indexSizes
	n := 0
	for _, u := range units {
		n += len(u.eps)
		sizes.add(&u.sizes)
	}
	p := &Policy{File: m.file, MTA: m.mta, PostfixVersion: m.postfixVersion, Settings: m.settings, lines: m.lines,
		ix: newIndexes(sizes), units: units}
	a := &assembler{p: p}
	for _, u := range units {
		a.problems = append(a.problems, u.problems...)
		p.warnings = append(p.warnings, u.warnings...)
	}
	p.Endpoints = make([]*Endpoint, 0, n)
	a.refs = make([]epRef, 0, n)
	names := make(map[string]int32, n)
	for _, u := range units {
		for k, ep := range u.eps {
			name := lowerASCII(ep.Name)
			if j, dup := names[name]; dup {
				o := p.Endpoints[j]
				a.problem(ep.File, u.line(int32(k), lineName), "endpoint name %q is already used by the endpoint on %s; names must be unique", ep.Name, lineIn(o.File, o.Line, ep.File))
				continue
			}
			i := int32(len(p.Endpoints))
			names[name] = i
			p.Endpoints = append(p.Endpoints, ep)
			a.refs = append(a.refs, epRef{u, int32(k)})
			a.addHosts(i)
			if ep.Inbound.RequestCert && !p.askEveryClient {
				for _, h := range ep.Hosts {
					if h.Kind == PatternName || h.Kind == PatternSubdomains {
						p.askEveryClient = true
						break
					}
				}
			}
		}
	}
	a.exceptions(names)
	a.precedence()
	if len(a.problems) > 0 {
		return nil, &LoadError{Problems: a.problems}
	}
	return p, nil
}

// lineIn names line of file for a message about from: "line N" in the
// same file, "line N of FILE" in another.
func lineIn(file string, line int, from string) string {
	if file == from {
		return "line " + strconv.Itoa(line)
	}
	return "line " + strconv.Itoa(line) + " of " + file
}

// hostLine returns the line of the j-th host of the endpoint at position
// i.
func (a *assembler) hostLine(i int32, j int) int {
	r := a.refs[i]
	return r.u.hostLine(r.k, j)
}

// addHosts puts the patterns of the endpoint at position i (the last so
// far) in the index, for each direction it defines. A pattern may belong
// to one endpoint per direction.
func (a *assembler) addHosts(i int32) {
	p := a.p
	ep := p.Endpoints[i]
	type owner struct {
		ep  int32
		dir string
	}
	for k, h := range ep.Hosts {
		prev := p.ix[0].add(h, i, ep.defines())
		var taken []owner // other endpoints that have h, in direction order
		for _, d := range directions {
			o := prev[d]
			if o == i {
				text, line := a.firstHost(i, h)
				a.problem(ep.File, a.hostLine(i, k), "host %q is listed twice in endpoint %q (as %q; first as %q on line %d)", h.Text, ep.Name, h.Canonical(), text, line)
				break
			}
			if o >= 0 {
				taken = append(taken, owner{o, d.String()})
			}
		}
		for t := 0; t < len(taken); {
			dirs := []string{taken[t].dir}
			u := t + 1
			for ; u < len(taken) && taken[u].ep == taken[t].ep; u++ {
				dirs = append(dirs, taken[u].dir)
			}
			a.hostTaken(i, k, taken[t].ep, dirs)
			t = u
		}
	}
}

// hostTaken reports that the k-th host of the endpoint at position i is
// already listed by the endpoint at position other for the directions
// dirs.
func (a *assembler) hostTaken(i int32, k int, other int32, dirs []string) {
	ep, o := a.p.Endpoints[i], a.p.Endpoints[other]
	h := ep.Hosts[k]
	text, line := a.firstHost(other, h)
	a.problem(ep.File, a.hostLine(i, k),
		"host %q of endpoint %q is already listed by endpoint %q for %s (as %q; there as %q on %s); a host may belong to one endpoint per direction",
		h.Text, ep.Name, o.Name, strings.Join(dirs, " and "), h.Canonical(), text, lineIn(o.File, line, ep.File))
}

// firstHost returns the text and line of the first of the host patterns
// of the endpoint at position i that is the same pattern as h. The
// per-endpoint lookup is built on the first duplicate only, so a file of
// many duplicates stays linear.
func (a *assembler) firstHost(i int32, h Pattern) (string, int) {
	ep := a.p.Endpoints[i]
	key := func(p Pattern) string { return strconv.Itoa(int(p.Kind)) + p.Canonical() }
	m := a.firsts[i]
	if m == nil {
		m = make(map[string]int, len(ep.Hosts))
		for k, q := range ep.Hosts {
			if _, ok := m[key(q)]; !ok {
				m[key(q)] = k
			}
		}
		if a.firsts == nil {
			a.firsts = map[int32]map[string]int{}
		}
		a.firsts[i] = m
	}
	k, ok := m[key(h)]
	if !ok {
		return h.Text, 0
	}
	return ep.Hosts[k].Text, a.hostLine(i, k)
}
