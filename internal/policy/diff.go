package policy

import (
	"reflect"
	"slices"
)

// Delta says how a policy differs from the one it replaces.
type Delta struct {
	// Files is how many files the new policy has (the main file
	// included); FilesChanged how many files were added, removed or have
	// another content.
	Files, FilesChanged int
	// Added, Changed and Removed count endpoints by name: new names, names
	// in both whose endpoint differs (see Endpoint.Equal), names gone.
	Added, Changed, Removed int
}

// Diff compares next with prev endpoint by endpoint. Only the endpoints
// of files that changed are compared: a file whose content is the same in
// both holds the same endpoints.
func Diff(prev, next *Policy) Delta {
	d := Delta{Files: len(next.Files())}
	prevUnits := make(map[string]*unit, len(prev.units))
	for _, u := range prev.units {
		prevUnits[u.key] = u
	}
	nextUnits := make(map[string]*unit, len(next.units))
	for _, u := range next.units {
		nextUnits[u.key] = u
	}
	// A unit is the same in both when it has the same content at the same
	// place, compiled on the same settings (a unit compiled again from
	// the same bytes holds equal endpoints).
	same := func(u *unit, other map[string]*unit) bool {
		o := other[u.key]
		return o != nil && o.sum == u.sum && o.ctx == u.ctx
	}
	changed := map[string]bool{} // files with a unit added, changed or removed
	inPrev := make(map[*unit]bool, len(next.units))
	for _, u := range next.units {
		if same(u, prevUnits) {
			inPrev[u] = true
		} else {
			changed[u.file] = true
		}
	}
	inNext := make(map[*unit]bool, len(prev.units))
	for _, u := range prev.units {
		if same(u, nextUnits) {
			inNext[u] = true
		} else {
			changed[u.file] = true
		}
	}
	d.FilesChanged = len(changed)
	// A policy's endpoints are its units' in order (an exception as its
	// own copy): a unit's start in Endpoints is the sum of the units
	// before it.
	gone := map[string]*Endpoint{}
	off := 0
	for _, u := range prev.units {
		if !inNext[u] {
			for k, ep := range u.eps {
				gone[lowerASCII(ep.Name)] = prev.Endpoints[off+k]
			}
		}
		off += len(u.eps)
	}
	off = 0
	for _, u := range next.units {
		if inPrev[u] {
			off += len(u.eps)
			continue
		}
		for k, ep := range u.eps {
			name := lowerASCII(ep.Name)
			old, ok := gone[name]
			switch {
			case !ok:
				d.Added++
			case !old.Equal(next.Endpoints[off+k]):
				d.Changed++
			}
			delete(gone, name)
		}
		off += len(u.eps)
	}
	d.Removed = len(gone)
	return d
}

// Equal reports whether ep and o demand the same of the same hosts under
// the same name: everything but where they are written (File, Line).
func (ep *Endpoint) Equal(o *Endpoint) bool {
	if ep.Name != o.Name || ep.Notes != o.Notes || ep.Mode != o.Mode || ep.Action != o.Action || ep.defines() != o.defines() ||
		ep.out != o.out ||
		!slices.Equal(ep.Hosts, o.Hosts) || !reflect.DeepEqual(ep.Inbound, o.Inbound) || !reflect.DeepEqual(ep.Outbound, o.Outbound) {
		return false
	}
	x, y := ep.Exception, o.Exception
	if x == nil || y == nil {
		return x == y
	}
	return x.To.Name == y.To.Name && x.Reason == y.Reason && x.Expires() == y.Expires() && x.relaxes == y.relaxes
}
