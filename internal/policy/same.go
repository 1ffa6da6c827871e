package policy

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
)

// Same reports the first difference between two compiled policies, or
// nil when they are the same policy: the same main file, settings and
// files, the same endpoints in the same order (Endpoint.Equal, and
// written in the same file and line), the same exceptions, warnings and
// index of host patterns. It is how the tests and the benchmark prove
// that a policy assembled from what a Loader kept equals one compiled
// from scratch.
func Same(a, b *Policy) error {
	if a.File != b.File || a.MTA != b.MTA || a.PostfixVersion != b.PostfixVersion {
		return fmt.Errorf("main file, mta or postfix_version: %s %s %s, %s %s %s", a.File, a.MTA, a.PostfixVersion, b.File, b.MTA, b.PostfixVersion)
	}
	if !reflect.DeepEqual(a.Settings, b.Settings) || !maps.Equal(a.lines, b.lines) {
		return fmt.Errorf("settings: %+v, %+v", a.Settings, b.Settings)
	}
	if fa, fb := a.Files(), b.Files(); !slices.Equal(fa, fb) {
		return fmt.Errorf("files: %d, %d", len(fa), len(fb))
	}
	if len(a.Endpoints) != len(b.Endpoints) {
		return fmt.Errorf("%d endpoints, %d", len(a.Endpoints), len(b.Endpoints))
	}
	for i, x := range a.Endpoints {
		y := b.Endpoints[i]
		if !x.Equal(y) || x.File != y.File || x.Line != y.Line {
			return fmt.Errorf("endpoint %d: %s (%s:%d), %s (%s:%d)", i, x.Name, x.File, x.Line, y.Name, y.File, y.Line)
		}
		if ex, ey := x.Exception, y.Exception; ex != nil && (ex.Line != ey.Line || ex.pos != ey.pos || ex.To.position(a) != ey.To.position(b)) {
			return fmt.Errorf("endpoint %d: exception of %s", i, x.Name)
		}
	}
	if len(a.exceptions) != len(b.exceptions) || a.relaxes != b.relaxes || a.askEveryClient != b.askEveryClient {
		return fmt.Errorf("exceptions: %d, %d (relaxes %v, %v; asks every client %v, %v)", len(a.exceptions), len(b.exceptions), a.relaxes, b.relaxes, a.askEveryClient, b.askEveryClient)
	}
	for i, x := range a.exceptions {
		if x.pos != b.exceptions[i].pos {
			return fmt.Errorf("exception %d: at %d, %d", i, x.pos, b.exceptions[i].pos)
		}
	}
	if len(a.warnings) != len(b.warnings) {
		return fmt.Errorf("%d warnings, %d", len(a.warnings), len(b.warnings))
	}
	for i, w := range a.warnings {
		if x, y := w.problem(), b.warnings[i].problem(); *x != *y {
			return fmt.Errorf("warning %d: %v, %v", i, x, y)
		}
	}
	posA, posB := a.positions(), b.positions()
	for k, p := range []*Policy{a, b} {
		for i, pos := range [][]int32{posA, posB}[k] {
			if (pos >= 0) != (p.byID[i] != nil) || pos >= 0 && p.byID[i] != p.Endpoints[pos] {
				return fmt.Errorf("%s: endpoint ID %d is not the endpoint at its position", p.File, i)
			}
		}
	}
	if err := a.ix[0].same(b.ix[0].hostIndex, posA, posB); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// position returns ep's position in p.Endpoints (an exception's own), or
// -1.
func (ep *Endpoint) position(p *Policy) int {
	if ep.Exception != nil {
		return int(ep.Exception.pos)
	}
	return slices.Index(p.Endpoints, ep)
}

// positions maps each endpoint ID of p to its position in Endpoints (-1
// for none): p's endpoints are those of its units, in order.
func (p *Policy) positions() []int32 {
	pos := make([]int32, len(p.byID))
	for i := range pos {
		pos[i] = -1
	}
	n := int32(0)
	for _, u := range p.units {
		for _, id := range u.ids {
			pos[id] = n
			n++
		}
	}
	return pos
}

// same reports the first difference between two indexes, whose owners
// are IDs of two policies: posA and posB map them to positions.
func (ix *hostIndex) same(o *hostIndex, posA, posB []int32) error {
	at := func(pos []int32, w owners) owners {
		for d, id := range w {
			if id >= 0 {
				w[d] = pos[id]
			}
		}
		return w
	}
	eq := func(x, y owners) bool { return at(posA, x) == at(posB, y) }
	switch {
	case !maps.EqualFunc(ix.names, o.names, eq):
		return fmt.Errorf("names differ (%d, %d)", len(ix.names), len(o.names))
	case !maps.EqualFunc(ix.suffixes, o.suffixes, eq):
		return fmt.Errorf("subdomain patterns differ (%d, %d)", len(ix.suffixes), len(o.suffixes))
	case !maps.EqualFunc(ix.addrs, o.addrs, eq):
		return fmt.Errorf("addresses differ (%d, %d)", len(ix.addrs), len(o.addrs))
	case !maps.EqualFunc(ix.prefixes, o.prefixes, eq):
		return fmt.Errorf("ranges differ (%d, %d)", len(ix.prefixes), len(o.prefixes))
	case !slices.Equal(ix.bits4, o.bits4) || !slices.Equal(ix.bits6, o.bits6) || ix.depths != o.depths:
		return fmt.Errorf("range lengths or subdomain depths differ")
	}
	return nil
}
