package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/idna"
)

// PatternKind says what a host pattern matches.
type PatternKind int

const (
	// PatternName matches one host or domain name exactly.
	PatternName PatternKind = iota
	// PatternSubdomains matches any name below a domain (".example.com").
	PatternSubdomains
	// PatternAddr matches one IP address.
	PatternAddr
	// PatternPrefix matches an IP address range (CIDR).
	PatternPrefix
)

// Pattern is one compiled entry of an endpoint's hosts list.
type Pattern struct {
	// Text is the pattern as written in the file.
	Text string
	// Kind says what it matches.
	Kind PatternKind
	// Name is the normalised A-label name; for PatternSubdomains the
	// domain without the leading dot.
	Name string
	// Prefix is the address or range for PatternAddr and PatternPrefix.
	Prefix netip.Prefix
}

// Canonical returns the normalised form used to detect duplicates.
func (p Pattern) Canonical() string {
	switch p.Kind {
	case PatternName:
		return p.Name
	case PatternSubdomains:
		return "." + p.Name
	case PatternAddr:
		return p.Prefix.Addr().String()
	default:
		return p.Prefix.String()
	}
}

var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.StrictDomainName(false))

// NormalizeName lower-cases a host or domain name, removes one trailing
// dot, converts internationalised labels to A-labels and checks that the
// result is a syntactically valid DNS name (letters, digits, hyphens and,
// for SRV-like labels, underscores).
func NormalizeName(s string) (string, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" {
		return "", fmt.Errorf("empty host name")
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		s = strings.ToLower(s)
	} else {
		a, err := idnaProfile.ToASCII(s)
		if err != nil {
			return "", fmt.Errorf("%q is not a valid internationalised domain name: %v", s, err)
		}
		s = a
	}
	if len(s) > 253 {
		return "", fmt.Errorf("%q is longer than 253 characters", s)
	}
	for rest := s; rest != ""; {
		label := rest
		if dot := strings.IndexByte(rest, '.'); dot >= 0 {
			label, rest = rest[:dot], rest[dot+1:]
			if rest == "" {
				return "", fmt.Errorf("%q has an empty label", s)
			}
		} else {
			rest = ""
		}
		if label == "" {
			return "", fmt.Errorf("%q has an empty label", s)
		}
		if len(label) > 63 {
			return "", fmt.Errorf("%q has a label longer than 63 characters", s)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("%q has a label that starts or ends with '-'", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%q contains %q, which is not allowed in a host name", s, string(c))
			}
		}
	}
	return s, nil
}

// ParsePattern compiles one hosts entry. The strings it keeps are copies,
// so that a loaded policy does not keep its whole file's text alive.
func ParsePattern(s string) (Pattern, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Pattern{}, fmt.Errorf("empty host pattern")
	}
	if strings.Contains(t, "/") {
		pfx, err := netip.ParsePrefix(t)
		if err != nil {
			return Pattern{}, fmt.Errorf("%q is not a CIDR range (like 198.51.100.0/24 or 2001:db8::/32)", s)
		}
		if pfx.Masked() != pfx {
			return Pattern{}, fmt.Errorf("%q has host bits set; write %s", s, pfx.Masked())
		}
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-unmapBits(pfx.Addr()))
		if pfx.IsSingleIP() {
			// A full-length range (/32, /128) is one address: compile it
			// as the address, so that it and the bare address are the same
			// pattern (a duplicate) instead of the address silently
			// winning over the range.
			return Pattern{Text: strings.Clone(s), Kind: PatternAddr, Prefix: pfx}, nil
		}
		return Pattern{Text: strings.Clone(s), Kind: PatternPrefix, Prefix: pfx}, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(t, "[]")); err == nil {
		if a.Zone() != "" {
			return Pattern{}, fmt.Errorf("%q: zoned addresses are not supported", s)
		}
		a = a.Unmap()
		return Pattern{Text: strings.Clone(s), Kind: PatternAddr, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if strings.HasPrefix(t, ".") {
		n, err := NormalizeName(t[1:])
		if err != nil {
			return Pattern{}, err
		}
		if numericName(n) {
			return Pattern{}, fmt.Errorf("%q: names below a number are no host names; write a range (192.0.2.0/24)", s)
		}
		text := strings.Clone(s)
		return Pattern{Text: text, Kind: PatternSubdomains, Name: shared(text, n)}, nil
	}
	if strings.HasPrefix(t, "*.") {
		return Pattern{}, fmt.Errorf("%q: write subdomain patterns as %q", s, t[1:])
	}
	n, err := NormalizeName(t)
	if err != nil {
		return Pattern{}, err
	}
	if _, err := netip.ParseAddr(n); err == nil || numericName(n) {
		return Pattern{}, fmt.Errorf("%q is neither a name nor an address; write an address (192.0.2.1) or a range (192.0.2.0/24)", s)
	}
	text := strings.Clone(s)
	return Pattern{Text: text, Kind: PatternName, Name: shared(text, n)}, nil
}

// shared returns name as a part of text (its own copy of what was
// written) when text holds it, as it does when the name was written in
// its normal form, else a copy of name: a pattern keeps one string, not
// two.
func shared(text, name string) string {
	if i := strings.Index(text, name); i >= 0 {
		return text[i : i+len(name)]
	}
	return strings.Clone(name)
}

func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// hostIndex maps normalised names and addresses to the endpoints that
// list them, in both directions at once: a pattern is stored once, with
// the position of its endpoint in Policy.Endpoints for each direction
// (-1 for none), which halves the entries and the probes of a lookup
// that asks both.
type hostIndex struct {
	names    map[string]owners
	suffixes map[string]owners
	addrs    map[netip.Addr]owners
	prefixes map[netip.Prefix]owners
	bits4    []int // distinct prefix lengths of IPv4 ranges, longest first
	bits6    []int
	// depths has bit k set when a subdomain pattern's domain has k
	// labels (k < 64; deeper ones set bit 63): a name's parent domains
	// of other depths need no probe.
	depths uint64
	// How many patterns there are of each depth and prefix length: the
	// counts bits4, bits6 and depths are made from (finish), kept so that
	// a copy of the index can lose patterns (patch).
	depthN [64]int32
	bitsN4 [33]int32
	bitsN6 [129]int32
}

// finish makes bits4, bits6 and depths from the counts.
func (ix *hostIndex) finish() {
	ix.bits4, ix.bits6, ix.depths = ix.bits4[:0], ix.bits6[:0], 0
	for b := len(ix.bitsN4) - 1; b >= 0; b-- {
		if ix.bitsN4[b] > 0 {
			ix.bits4 = append(ix.bits4, b)
		}
	}
	for b := len(ix.bitsN6) - 1; b >= 0; b-- {
		if ix.bitsN6[b] > 0 {
			ix.bits6 = append(ix.bits6, b)
		}
	}
	for k, n := range ix.depthN {
		if n > 0 {
			ix.depths |= 1 << k
		}
	}
}

// count adds delta to the count of p's depth or prefix length.
func (ix *hostIndex) count(p Pattern, delta int32) {
	switch p.Kind {
	case PatternSubdomains:
		ix.depthN[min(labels(p.Name), 63)] += delta
	case PatternPrefix:
		if p.Prefix.Addr().Is4() {
			ix.bitsN4[p.Prefix.Bits()] += delta
		} else {
			ix.bitsN6[p.Prefix.Bits()] += delta
		}
	}
}

// clone returns a copy of the index, its maps copied (not rebuilt).
func (ix *hostIndex) clone() *hostIndex {
	c := *ix
	c.names, c.suffixes = maps.Clone(ix.names), maps.Clone(ix.suffixes)
	c.addrs, c.prefixes = maps.Clone(ix.addrs), maps.Clone(ix.prefixes)
	c.bits4, c.bits6 = slices.Clone(ix.bits4), slices.Clone(ix.bits6)
	return &c
}

// release takes p away from endpoint i in every direction i has it.
func (ix *hostIndex) release(p Pattern, i int32) {
	var gone bool
	switch p.Kind {
	case PatternName:
		gone = unclaim(ix.names, p.Name, i)
	case PatternSubdomains:
		gone = unclaim(ix.suffixes, p.Name, i)
	case PatternAddr:
		gone = unclaim(ix.addrs, p.Prefix.Addr(), i)
	default:
		gone = unclaim(ix.prefixes, p.Prefix, i)
	}
	if gone {
		ix.count(p, -1)
	}
}

// unclaim takes key away from endpoint i; it reports whether the key
// left the map (no direction has an endpoint any more).
func unclaim[K comparable](m map[K]owners, key K, i int32) bool {
	o, ok := m[key]
	if !ok {
		return false
	}
	for d := range o {
		if o[d] == i {
			o[d] = -1
		}
	}
	if o == noOwners {
		delete(m, key)
		return true
	}
	m[key] = o
	return false
}

// owners are the IDs (Policy.byID) of the endpoints that list a pattern,
// by direction; -1 for none.
type owners [2]int32

var noOwners = owners{-1, -1}

// index is the hostIndex as one direction sees it.
type index struct {
	*hostIndex
	d Direction
}

// indexSizes are how many patterns of each kind an index will hold.
type indexSizes struct{ names, suffixes, addrs, prefixes int }

// count adds the patterns of hosts.
func (n *indexSizes) count(hosts []Pattern) {
	for _, h := range hosts {
		switch h.Kind {
		case PatternName:
			n.names++
		case PatternSubdomains:
			n.suffixes++
		case PatternAddr:
			n.addrs++
		default:
			n.prefixes++
		}
	}
}

// add adds o's counts.
func (n *indexSizes) add(o *indexSizes) {
	n.names += o.names
	n.suffixes += o.suffixes
	n.addrs += o.addrs
	n.prefixes += o.prefixes
}

// newIndexes returns the two directions' views of a new hostIndex sized
// for n.
func newIndexes(n indexSizes) [2]*index {
	h := &hostIndex{
		names:    make(map[string]owners, n.names),
		suffixes: make(map[string]owners, n.suffixes),
		addrs:    make(map[netip.Addr]owners, n.addrs),
		prefixes: make(map[netip.Prefix]owners, n.prefixes),
	}
	return [2]*index{{h, Inbound}, {h, Outbound}}
}

// labels counts the labels of a normalised name.
func labels(n string) int { return strings.Count(n, ".") + 1 }

// depthBit is the bit of depths for a domain of k labels.
func depthBit(k int) uint64 { return 1 << min(k, 63) }

// add records p for endpoint i in each direction it defines where no
// endpoint has p yet. It returns the owners p had before: the endpoints
// that keep it (-1 where i took it or does not define the direction).
// Call finish once every pattern is in.
func (ix *hostIndex) add(p Pattern, i int32, defines [2]bool) owners {
	var prev owners
	var created bool
	switch p.Kind {
	case PatternName:
		prev, created = claim(ix.names, p.Name, i, defines)
	case PatternSubdomains:
		prev, created = claim(ix.suffixes, p.Name, i, defines)
	case PatternAddr:
		prev, created = claim(ix.addrs, p.Prefix.Addr(), i, defines)
	default:
		prev, created = claim(ix.prefixes, p.Prefix, i, defines)
	}
	if created {
		ix.count(p, 1)
	}
	return prev
}

// claim gives key to endpoint i in the directions it defines that have
// no endpoint yet, with one lookup and at most one store; it reports
// whether the key was new.
func claim[K comparable](m map[K]owners, key K, i int32, defines [2]bool) (owners, bool) {
	o, ok := m[key]
	if !ok {
		o = noOwners
	}
	prev, changed := o, false
	for d, def := range defines {
		if def && o[d] < 0 {
			o[d], changed = i, true
		}
		if !def {
			prev[d] = -1
		}
	}
	if changed {
		m[key] = o
	}
	return prev, !ok && changed
}

// gone reports whether an indexed endpoint is absent at the moment of a
// lookup (an exception that has expired in the index's direction); nil
// means none is.
type gone func(int32) bool

func (g gone) has(i int32) bool { return g != nil && g(i) }

// name finds the endpoint for a normalised host name: the exact name, else
// the longest subdomain pattern above it, skipping absent endpoints.
func (ix *index) name(n string, g gone) (int32, bool) {
	if o, ok := ix.names[n]; ok {
		if i := o[ix.d]; i >= 0 && !g.has(i) {
			return i, true
		}
	}
	return ix.below(n, g)
}

// below finds the longest subdomain pattern strictly above name n.
func (ix *index) below(n string, g gone) (int32, bool) {
	if ix.depths == 0 {
		return 0, false
	}
	k := labels(n)
	for {
		dot := strings.IndexByte(n, '.')
		if dot < 0 {
			return 0, false
		}
		n = n[dot+1:]
		if k--; ix.depths&depthBit(k) == 0 {
			continue
		}
		if o, ok := ix.suffixes[n]; ok {
			if i := o[ix.d]; i >= 0 && !g.has(i) {
				return i, true
			}
		}
	}
}

// parent finds the endpoint for Postfix's parent-domain key ".d": names
// below d, i.e. a subdomain pattern for d or any domain above it.
func (ix *index) parent(d string, g gone) (int32, bool) {
	if o, ok := ix.suffixes[d]; ok {
		if i := o[ix.d]; i >= 0 && !g.has(i) {
			return i, true
		}
	}
	return ix.below(d, g)
}

// addr finds the endpoint for an address: exact, else the longest range.
func (ix *index) addr(a netip.Addr, g gone) (int32, bool) {
	a = a.Unmap().WithZone("")
	if o, ok := ix.addrs[a]; ok {
		if i := o[ix.d]; i >= 0 && !g.has(i) {
			return i, true
		}
	}
	return ix.ranges(a, 129, g)
}

// ranges finds the longest range shorter than bits that contains a.
func (ix *index) ranges(a netip.Addr, bits int, g gone) (int32, bool) {
	lens := ix.bits6
	if a.Is4() {
		lens = ix.bits4
	}
	for _, b := range lens {
		if b >= bits {
			continue
		}
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if o, ok := ix.prefixes[p]; ok {
			if i := o[ix.d]; i >= 0 && !g.has(i) {
				return i, true
			}
		}
	}
	return 0, false
}

// covers calls f for every pattern in the index that strictly covers p
// (is less specific and matches everything p matches), with its owners
// in both directions: subdomain patterns above p's name, ranges around
// p's address or range. Exact names and addresses cover nothing.
func (ix *hostIndex) covers(p Pattern, f func(o owners, by Pattern)) {
	switch p.Kind {
	case PatternName, PatternSubdomains:
		if ix.depths == 0 {
			return
		}
		n := p.Name
		k := labels(n)
		for {
			dot := strings.IndexByte(n, '.')
			if dot < 0 {
				return
			}
			n = n[dot+1:]
			if k--; ix.depths&depthBit(k) == 0 {
				continue
			}
			if o, ok := ix.suffixes[n]; ok {
				f(o, Pattern{Kind: PatternSubdomains, Name: n})
			}
		}
	case PatternAddr, PatternPrefix:
		a := p.Prefix.Addr()
		lens := ix.bits6
		if a.Is4() {
			lens = ix.bits4
		}
		for _, b := range lens {
			if b >= p.Prefix.Bits() {
				continue
			}
			q, err := a.Prefix(b)
			if err != nil {
				continue
			}
			if o, ok := ix.prefixes[q]; ok {
				f(o, Pattern{Kind: PatternPrefix, Prefix: q})
			}
		}
	}
}
