package policy

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
)

// assembler puts the units of a configuration together into a policy:
// the endpoints of all files in order, their names, the index of their
// host patterns, exceptions and nesting. Its problems involve more than
// one endpoint, maybe in different files. It works with positions in
// Policy.Endpoints; the index holds IDs (Policy.byID).
type assembler struct {
	p         *Policy
	refs      []epRef // where each of p.Endpoints comes from
	posOf     []int32 // the position of each ID, -1 for none
	problems  []*Problem
	firsts    map[int32]map[string]int // see firstHost
	suggested int                      // closestName calls
}

// epRef is an endpoint's unit and its position there.
type epRef struct {
	u *unit
	k int32
}

// id returns the ID of the endpoint at position i.
func (a *assembler) id(i int32) int32 {
	r := a.refs[i]
	return r.u.ids[r.k]
}

// problem records a problem at file:line.
func (a *assembler) problem(file string, line int, format string, args ...any) {
	a.problems = append(a.problems, &Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// assembly is what an assembled policy is made of besides its units:
// kept by a Loader, so that the next policy can be patched from it.
type assembly struct {
	p     *Policy
	names map[string]int32 // lower-cased endpoint name → ID
}

// newPolicy returns the policy of units without endpoints yet, with the
// units' warnings.
func newPolicy(units []*unit, ix [2]*index) *Policy {
	m := units[0]
	p := &Policy{File: m.file, MTA: m.mta, PostfixVersion: m.postfixVersion, Settings: m.settings, lines: m.lines, ix: ix, units: units}
	for _, u := range units {
		p.warnings = append(p.warnings, u.warnings...)
		p.askEveryClient = p.askEveryClient || u.asks
	}
	return p
}

// maxID returns the largest ID of the units' endpoints, or -1.
func maxID(units []*unit) int32 {
	m := int32(-1)
	for _, u := range units {
		for _, id := range u.ids {
			m = max(m, id)
		}
	}
	return m
}

// setEndpoints puts the units' endpoints, but those whose ID is dropped,
// in p.Endpoints and p.byID (sized by the caller) and records where each
// comes from.
func (a *assembler) setEndpoints(units []*unit, n int, dropped map[int32]bool) {
	p := a.p
	p.Endpoints = make([]*Endpoint, 0, n)
	a.refs = make([]epRef, 0, n)
	a.posOf = make([]int32, len(p.byID))
	for i := range a.posOf {
		a.posOf[i] = -1
	}
	for _, u := range units {
		for k, ep := range u.eps {
			id := u.ids[k]
			if dropped[id] {
				continue
			}
			a.posOf[id] = int32(len(p.Endpoints))
			p.byID[id] = ep
			p.Endpoints = append(p.Endpoints, ep)
			a.refs = append(a.refs, epRef{u, int32(k)})
		}
	}
}

// assemble builds the policy of units (the main file's first; their
// endpoints have IDs). Every unit's own problems come first, in file
// order, then those found between endpoints; with any, the error lists
// them all.
func assemble(units []*unit) (*Policy, *assembly, error) {
	var sizes indexSizes
	n := 0
	for _, u := range units {
		n += len(u.eps)
		sizes.add(&u.sizes)
	}
	p := newPolicy(units, newIndexes(sizes))
	p.byID = make([]*Endpoint, maxID(units)+1)
	a := &assembler{p: p}
	for _, u := range units {
		a.problems = append(a.problems, u.problems...)
	}
	// An endpoint whose name is already used is left out of the policy
	// (and its index); the problem says so.
	var dropped map[int32]bool
	names := make(map[string]int32, n)
	for _, u := range units {
		for k, ep := range u.eps {
			name := lowerASCII(ep.Name)
			if j, dup := names[name]; dup {
				o := p.byID[j]
				a.problem(ep.File, u.line(int32(k), lineName), "endpoint name %q is already used by the endpoint on %s; names must be unique", ep.Name, lineIn(o.File, o.Line, ep.File))
				if dropped == nil {
					dropped = map[int32]bool{}
				}
				dropped[u.ids[k]] = true
				continue
			}
			names[name] = u.ids[k]
			p.byID[u.ids[k]] = ep
		}
	}
	a.setEndpoints(units, n, dropped)
	for i := range p.Endpoints {
		a.addHosts(int32(i))
	}
	p.ix[0].finish()
	a.exceptions(names)
	a.watch(names)
	a.precedence()
	if len(a.problems) > 0 {
		return nil, nil, &LoadError{Problems: a.problems}
	}
	return p, &assembly{p: p, names: names}, nil
}

// patch builds the policy of units from last, the policy assembled before,
// when units differ from its units only by units compiled again (the main
// file's head the same object): the index and the names are copied (not
// rebuilt), the endpoints of the units that changed leave them and the
// new ones enter, each under its own ID, so that the other entries stay
// as they are; exceptions and nesting are checked again in full. It
// returns ok false when it cannot (and the policy must be assembled in
// full), and also when the new endpoints clash with others or the checks
// find problems: assemble then says them as it always does. The policy is
// the one assemble would give.
func patch(last *assembly, units []*unit) (*Policy, *assembly, bool) {
	old := last.p.units
	if len(units) == 0 || len(old) == 0 || units[0] != old[0] {
		return nil, nil, false
	}
	inOld := make(map[*unit]bool, len(old))
	for _, u := range old {
		inOld[u] = true
	}
	inNew := make(map[*unit]bool, len(units))
	var added, removed []*unit
	n := 0
	for _, u := range units {
		inNew[u] = true
		n += len(u.eps)
		if !inOld[u] {
			if len(u.problems) > 0 {
				return nil, nil, false
			}
			added = append(added, u)
		}
	}
	for _, u := range old {
		if !inNew[u] {
			removed = append(removed, u)
		}
	}
	if len(added) == 0 && len(removed) == 0 && len(units) == len(old) {
		same := true
		for i := range units {
			same = same && units[i] == old[i]
		}
		if same {
			return last.p, last, true
		}
	}
	h := last.p.ix[0].clone()
	p := newPolicy(units, [2]*index{{h, Inbound}, {h, Outbound}})
	p.byID = make([]*Endpoint, max(int(maxID(units))+1, len(last.p.byID)))
	copy(p.byID, last.p.byID)
	names := maps.Clone(last.names)
	for _, u := range removed {
		for k, ep := range u.eps {
			id := u.ids[k]
			if name := lowerASCII(ep.Name); names[name] == id {
				delete(names, name)
			}
			for _, hp := range ep.Hosts {
				h.release(hp, id)
			}
			p.byID[id] = nil
		}
	}
	for _, u := range added {
		for k, ep := range u.eps {
			id := u.ids[k]
			name := lowerASCII(ep.Name)
			if _, dup := names[name]; dup {
				return nil, nil, false
			}
			names[name] = id
			defines := ep.defines()
			for _, hp := range ep.Hosts {
				if prev := h.add(hp, id, defines); prev != noOwners {
					return nil, nil, false
				}
			}
		}
	}
	h.finish()
	a := &assembler{p: p}
	a.setEndpoints(units, n, nil)
	a.exceptions(names)
	a.watch(names)
	a.precedence()
	if len(a.problems) > 0 {
		return nil, nil, false
	}
	return p, &assembly{p: p, names: names}, true
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

// addHosts puts the patterns of the endpoint at position i in the
// index, for each direction it defines. A pattern may belong to one
// endpoint per direction.
func (a *assembler) addHosts(i int32) {
	p := a.p
	ep := p.Endpoints[i]
	id := a.id(i)
	type owner struct {
		pos int32
		dir string
	}
	for k, h := range ep.Hosts {
		prev := p.ix[0].add(h, id, ep.defines())
		var taken []owner // other endpoints that have h, in direction order
		for _, d := range directions {
			o := prev[d]
			if o == id {
				text, line := a.firstHost(i, h)
				a.problem(ep.File, a.hostLine(i, k), "host %q is listed twice in endpoint %q (as %q; first as %q on line %d)", h.Text, ep.Name, h.Canonical(), text, line)
				break
			}
			if o >= 0 {
				taken = append(taken, owner{a.posOf[o], d.String()})
			}
		}
		for t := 0; t < len(taken); {
			dirs := []string{taken[t].dir}
			u := t + 1
			for ; u < len(taken) && taken[u].pos == taken[t].pos; u++ {
				dirs = append(dirs, taken[u].dir)
			}
			a.hostTaken(i, k, taken[t].pos, dirs)
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
