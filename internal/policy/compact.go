package policy

import (
	"slices"
	"strings"
)

// compact moves what the unit's endpoints keep into a few large blocks,
// one per kind: the endpoints themselves, their host patterns, their
// requirements, fingerprints, and all their strings (answers once each) in
// one.
// They were allocated one by one among the decoder's garbage, so that
// after a load each page of the heap held a few of them and could not be
// given back; packed, a policy of 10,000 endpoints takes its own size in
// memory, not three times that. It also saves the rounding of many small
// allocations. The old objects become garbage.
func (u *unit) compact() {
	if len(u.eps) == 0 {
		return
	}
	var s stringPack
	nHosts := 0
	reqs := map[*Requirements]*Requirements{}
	var reqOrder []*Requirements
	nFP := 0
	for _, ep := range u.eps {
		nHosts += len(ep.Hosts)
		for _, r := range []*Requirements{ep.Inbound, ep.Outbound} {
			if r != &noRequirements {
				if _, ok := reqs[r]; !ok {
					reqs[r] = nil
					reqOrder = append(reqOrder, r)
					nFP += len(r.Fingerprints)
				}
			}
		}
	}

	// Strings: packed into one text, cut at the end.
	size := 0
	for _, ep := range u.eps {
		size += len(ep.Name) + len(ep.Notes)
		for _, h := range ep.Hosts {
			size += len(h.Text) + len(h.Name)
		}
	}
	for _, r := range reqOrder {
		size += len(r.CN) + len(r.IssuerCN) + len(r.TrustAnchorFile)
	}
	answers := map[string]bool{} // packed once each: endpoints share them
	for _, ep := range u.eps {
		if !answers[ep.out] {
			answers[ep.out] = true
			size += len(ep.out)
		}
	}
	s.b.Grow(size)
	for _, ep := range u.eps {
		s.add(&ep.Name)
		s.add(&ep.Notes)
		for k := range ep.Hosts {
			s.addPattern(&ep.Hosts[k])
		}
	}
	fps := make([]Fingerprint, 0, nFP)
	reqArena := make([]Requirements, len(reqOrder))
	for i, r := range reqOrder {
		reqArena[i] = *r
		nr := &reqArena[i]
		s.add(&nr.CN)
		s.add(&nr.IssuerCN)
		s.add(&nr.TrustAnchorFile)
		if len(nr.Fingerprints) > 0 {
			start := len(fps)
			fps = append(fps, nr.Fingerprints...)
			nr.Fingerprints = fps[start:len(fps):len(fps)]
		}
		reqs[r] = nr
	}
	for _, ep := range u.eps {
		s.addShared(&ep.out)
	}

	hosts := make([]Pattern, 0, nHosts)
	eps := make([]Endpoint, len(u.eps))
	moved := make(map[*Endpoint]*Endpoint, len(u.warnings))
	for k, ep := range u.eps {
		eps[k] = *ep
		ne := &eps[k]
		start := len(hosts)
		hosts = append(hosts, ep.Hosts...)
		ne.Hosts = hosts[start:len(hosts):len(hosts)]
		if r := reqs[ep.Inbound]; r != nil {
			ne.Inbound = r
		}
		if r := reqs[ep.Outbound]; r != nil {
			ne.Outbound = r
		}
		moved[ep] = ne
		u.eps[k] = ne
	}
	for i := range u.warnings {
		u.warnings[i].ep = moved[u.warnings[i].ep]
	}
	// Slices grown by append have room to spare: keep them exact.
	u.eps = slices.Clone(u.eps)
	u.at = slices.Clone(u.at)
	u.lineTab = slices.Clone(u.lineTab)
	u.warnings = slices.Clone(u.warnings)
	// The strings last: the fields packed above now live in the arenas.
	s.cut(eps, reqArena)
}

// stringPack packs strings into one text: add and addPattern append them
// in some order; cut, called with the same fields in the same order (on
// the copies of the structs that held them), points each into the text.
type stringPack struct {
	b      strings.Builder
	spans  []span
	shared map[string]span // see addShared
}

// span is where a packed string lies in the text.
type span struct{ start, end int }

func (s *stringPack) add(f *string) {
	if *f != "" {
		start := s.b.Len()
		s.b.WriteString(*f)
		s.spans = append(s.spans, span{start, s.b.Len()})
	}
}

// addShared packs a string that many fields hold (an answer): once.
func (s *stringPack) addShared(f *string) {
	if *f == "" {
		return
	}
	if sp, ok := s.shared[*f]; ok {
		s.spans = append(s.spans, sp)
		return
	}
	s.add(f)
	if s.shared == nil {
		s.shared = map[string]span{}
	}
	s.shared[*f] = s.spans[len(s.spans)-1]
}

// addPattern packs a pattern's Text and its Name, which is a part of Text
// (not packed twice) when Text holds it.
func (s *stringPack) addPattern(h *Pattern) {
	s.add(&h.Text)
	if h.Name == "" {
		return
	}
	if i := strings.Index(h.Text, h.Name); h.Text != "" && i >= 0 {
		t := s.spans[len(s.spans)-1]
		s.spans = append(s.spans, span{t.start + i, t.start + i + len(h.Name)})
		return
	}
	s.add(&h.Name)
}

// cut makes the text and points the fields into it, in the order they
// were packed.
func (s *stringPack) cut(eps []Endpoint, reqs []Requirements) {
	text := s.b.String()
	i := 0
	next := func(f *string) {
		if *f != "" {
			*f = text[s.spans[i].start:s.spans[i].end]
			i++
		}
	}
	for k := range eps {
		ep := &eps[k]
		next(&ep.Name)
		next(&ep.Notes)
		for j := range ep.Hosts {
			next(&ep.Hosts[j].Text)
			next(&ep.Hosts[j].Name)
		}
	}
	for k := range reqs {
		next(&reqs[k].CN)
		next(&reqs[k].IssuerCN)
		next(&reqs[k].TrustAnchorFile)
	}
	for k := range eps {
		next(&eps[k].out)
	}
}
