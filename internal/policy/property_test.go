package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// The property: whatever the policy and whatever the destination or
// session, the requirement in effect is at least as strict as every
// enforcing endpoint whose patterns match it in that direction (found
// by brute force over the generated endpoints, not with the index), unless
// an unexpired exception that also matches it relaxes that endpoint.
//
// Policies are generated as TOML text and loaded with Parse: endpoints
// with names, .domain patterns, IPv4 and IPv6 addresses and ranges, one
// or both directions, enforce or monitor, nested in one another, and
// exceptions that have ended or not at the instant asked. Outbound, the
// walk each MTA makes is simulated with the model's walks (Postfix: the
// next hop, then parent domains; Sendmail: the TLS_Rcpt and TLS_Srv
// keys) and the answer in effect is parsed back into requirements here,
// independently of the code that wrote it. Inbound, the verdict must
// refuse whenever a matching enforcing endpoint would refuse the facts,
// judged here independently, and may refuse only then.
//
// TLSGATE_PROPERTY_SEED=N reruns the cases of a failure (every failure
// message names it); without it the seed is new on every run.

const (
	propertyPolicies = 1000 // policies per run
	propertyCases    = 105  // destinations and sessions per policy
)

func TestNeverWeaker(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TLSGATE_PROPERTY_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TLSGATE_PROPERTY_SEED=%q: %v", s, err)
		}
		seed = n
	}
	start := time.Now()
	var stats propertyStats
	for i := range propertyPolicies {
		ps := seed + uint64(i)*0x9e3779b97f4a7c15
		if !checkPolicy(t, ps, propertyCases, &stats, fmt.Sprintf("TLSGATE_PROPERTY_SEED=%d, policy %d", seed, i)) {
			return
		}
	}
	t.Logf("seed %d: %d policies (%d exceptions; %d weakened copies refused), %d cases (%d Postfix next hops, %d Sendmail deliveries, %d inbound sessions; %d refused, %d under an exception, %d exceptions ended; %d discovered: %d answered by discovery (%d dane-only), %d by an endpoint over it, %d TEMP) in %v",
		seed, propertyPolicies, stats.exceptions, stats.weakened, stats.cases, stats.postfix, stats.sendmail, stats.inbound, stats.refused, stats.excused, stats.ended,
		stats.discovered, stats.replaced, stats.daneOnly, stats.overridden, stats.temp, time.Since(start).Round(time.Millisecond))
	if stats.cases < 100000 {
		t.Errorf("only %d cases", stats.cases)
	}
	if stats.excused == 0 || stats.ended == 0 || stats.refused == 0 || stats.replaced == 0 || stats.daneOnly == 0 || stats.overridden == 0 || stats.temp == 0 {
		t.Errorf("the generator missed a kind of case: %+v", stats)
	}
}

// FuzzNeverWeaker runs the property for one generated policy per input.
func FuzzNeverWeaker(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42, 1 << 40} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		var stats propertyStats
		checkPolicy(t, seed, 200, &stats, fmt.Sprintf("fuzz seed %d", seed))
	})
}

type propertyStats struct {
	cases, postfix, sendmail, inbound, refused, excused, ended int
	exceptions, weakened                                       int
	// Postfix next hops with a discovered policy: answered by it (over
	// an endpoint below authenticated or none), by an authenticating
	// endpoint over it, TEMP; and answered "dane-only" (a discovered
	// "dane" without usable TLSA records on every MX host, over an
	// endpoint that demands encryption).
	discovered, replaced, overridden, temp, daneOnly int
}

// checkWeakened makes one endpoint nested in another demand less than it,
// without an exception to it, and checks that the policy is refused
// for it. It restores the policy.
func (g *generated) checkWeakened(r *rand.Rand, stats *propertyStats) string {
	type cand struct {
		e, o *genEndpoint
		d    Direction
	}
	var cands []cand
	for _, e := range g.eps {
		for j, o := range g.eps {
			for _, d := range directions {
				if e != o && e.excTo != j && nested(o, e, d) && (o.level[d] > 0 || !o.monitor) {
					cands = append(cands, cand{e, o, d})
				}
			}
		}
	}
	if len(cands) == 0 {
		return ""
	}
	stats.weakened++
	c := pick(r, cands)
	saved, savedMon, savedText := c.e.toml[c.d], c.e.monitor, g.toml
	defer func() { c.e.toml[c.d], c.e.monitor, g.toml = saved, savedMon, savedText }()
	if c.o.level[c.d] > 0 && (c.o.monitor || r.IntN(2) == 0) {
		c.e.toml[c.d] = g.ladder(c.d, c.e.pinLadder[c.d], c.e.family[c.d])[r.IntN(c.o.level[c.d])].toml
	} else {
		c.e.monitor = true
	}
	g.write()
	_, err := Parse("gen.toml", []byte(g.toml))
	want := fmt.Sprintf("endpoint %q is nested in endpoint %q", c.e.name, c.o.name)
	if err == nil || !strings.Contains(err.Error(), want) {
		return fmt.Sprintf("%s demands less than %s for %s, but the policy loads with %v\n%s", c.e.name, c.o.name, c.d, err, g.toml)
	}
	return ""
}

// checkPolicy generates one policy from seed, loads it and checks n
// cases against it. It reports whether all held.
func checkPolicy(t *testing.T, seed uint64, n int, stats *propertyStats, where string) bool {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	g := generate(r)
	p, err := Parse("gen.toml", []byte(g.toml))
	if err != nil {
		t.Errorf("%s: a generated policy does not load:\n%v\n%s", where, err, g.toml)
		return false
	}
	if len(p.Endpoints) != len(g.eps) {
		t.Errorf("%s: %d endpoints loaded, %d generated", where, len(p.Endpoints), len(g.eps))
		return false
	}
	if msg := g.checkWeakened(r, stats); msg != "" {
		t.Errorf("%s: %s", where, msg)
		return false
	}
	stats.exceptions += len(p.Exceptions())
	for range n {
		at := g.instant(r)
		var msg string
		switch {
		case g.mta == Postfix && r.IntN(2) == 0:
			msg = g.checkPostfix(p, r, at, stats)
		case g.mta == Sendmail && r.IntN(2) == 0:
			msg = g.checkSendmail(p, r, at, stats)
		default:
			msg = g.checkInbound(p, r, at, stats)
		}
		stats.cases++
		if msg != "" {
			t.Errorf("%s, at %s: %s\n--- policy\n%s", where, at.Format(time.RFC3339), msg, g.toml)
			return false
		}
	}
	return true
}

// ---- generation ----

// genEndpoint is an endpoint as the generator made it: its patterns and,
// per direction, the requirements it wrote (with everything they imply).
type genEndpoint struct {
	name      string
	hosts     []string
	read      []genHost // hosts, read
	defines   [2]bool
	monitor   bool
	req       [2]Requirements
	toml      [2][]string
	excTo     int // index of the endpoint it relaxes, -1 if none
	relaxes   [2]bool
	expiry    string // as written
	expDate   bool   // expiry is a date (ends at local midnight)
	expAt     time.Time
	level     [2]int // step of the ladder
	family    [2]int // ladder family (component) per direction
	pinLadder [2]bool
}

type generated struct {
	mta  MTA
	eps  []*genEndpoint
	toml string
	// tafile maps a trust-anchor file to the issuer it stands for.
	tafile map[string]string
}

var (
	genBases = []string{"a.example", "b.example", "c.test"}
	genSubs  = []string{"", "mx.", "x.", "y.x.", "mx.x.", "z.x.", "mx.z.x."}
	genAddrs = []string{
		"192.0.2.0/24", "192.0.2.0/26", "192.0.2.64/26", "192.0.2.128/25", "192.0.2.16/28", "198.51.100.0/24",
		"192.0.2.10", "192.0.2.70", "192.0.2.130", "198.51.100.7",
		"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::/64", "2001:db8:2::/48",
		"2001:db8::1", "2001:db8:1::5",
	}
	genPins = []string{
		"0101010101010101010101010101010101010101010101010101010101010101",
		"0202020202020202020202020202020202020202020202020202020202020202",
	}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// generate makes a policy whose nested endpoints are at least as strict
// as the endpoints they are nested in, or declared exceptions to one of
// them, so that it loads.
func generate(r *rand.Rand) *generated {
	g := &generated{mta: pick(r, []MTA{Postfix, Sendmail}), tafile: map[string]string{}}
	used := map[string][2]bool{}
	n := 1 + r.IntN(7)
	for i := range n {
		e := &genEndpoint{name: fmt.Sprintf("e%d", i), excTo: -1, monitor: r.IntN(5) == 0}
		switch r.IntN(4) {
		case 0:
			e.defines = [2]bool{true, false}
		case 1:
			e.defines = [2]bool{false, true}
		default:
			e.defines = [2]bool{true, true}
		}
		extra := 1 + r.IntN(3)
		if len(g.eps) > 0 && r.IntN(2) == 0 {
			// Nest it in an earlier endpoint, for exceptions to name.
			o := pick(r, g.eps)
			e.defines = o.defines
			for _, h := range o.hosts {
				if r.IntN(3) != 0 {
					if in := inside(r, h); in != "" {
						e.addHost(in, used)
					}
				}
			}
			if len(e.hosts) > 0 {
				extra = r.IntN(3) / 2
			}
		}
		for range extra {
			var h string
			if r.IntN(3) == 0 {
				h = pick(r, genAddrs)
			} else {
				h = pick(r, genSubs) + pick(r, genBases)
				if r.IntN(2) == 0 {
					h = "." + h
				}
			}
			e.addHost(h, used)
		}
		if g.mta == Postfix && e.defines[Outbound] && !slices.ContainsFunc(e.hosts, isNamePattern) {
			// Postfix asks with names only: an outbound endpoint needs one.
			for _, b := range genBases {
				if e.addHost(b, used) {
					break
				}
			}
			if !slices.ContainsFunc(e.hosts, isNamePattern) {
				if !e.defines[Inbound] {
					continue
				}
				e.defines[Outbound] = false
			}
		}
		if len(e.hosts) == 0 {
			continue
		}
		g.eps = append(g.eps, e)
	}
	for i, e := range g.eps {
		e.name = fmt.Sprintf("e%d", i)
		for _, h := range e.hosts {
			e.read = append(e.read, readHost(h))
		}
	}
	g.assign(r)
	g.write()
	return g
}

// inside returns a pattern strictly inside pattern h, or "".
func inside(r *rand.Rand, h string) string {
	if p, err := netip.ParsePrefix(h); err == nil {
		if r.IntN(2) == 0 && p.Bits()+2 < p.Addr().BitLen() {
			q, _ := p.Addr().Next().Prefix(p.Bits() + 2)
			return q.String()
		}
		a := p.Addr()
		for range 1 + r.IntN(40) {
			a = a.Next()
		}
		if p.Contains(a) {
			return a.String()
		}
		return ""
	}
	if strings.HasPrefix(h, ".") {
		return pick(r, []string{"mx", "z", ".z", ".mx"}) + h
	}
	return ""
}

func isNamePattern(h string) bool { _, err := netip.ParsePrefix(h); return err != nil && !isAddr(h) }

func isAddr(h string) bool { _, err := netip.ParseAddr(h); return err == nil }

// addHost adds h unless another endpoint has it in a direction e defines.
func (e *genEndpoint) addHost(h string, used map[string][2]bool) bool {
	u := used[h]
	for d := range 2 {
		if e.defines[d] && u[d] {
			return false
		}
	}
	for d := range 2 {
		u[d] = u[d] || e.defines[d]
	}
	used[h] = u
	e.hosts = append(e.hosts, h)
	return true
}

// covers reports whether pattern a strictly covers pattern b, by the
// definitions (independent of the index).
func covers(a, b string) bool {
	if pa, err := netip.ParsePrefix(a); err == nil {
		if isAddr(b) {
			return pa.Contains(netip.MustParseAddr(b))
		}
		pb, err := netip.ParsePrefix(b)
		return err == nil && pb.Bits() > pa.Bits() && pa.Contains(pb.Addr())
	}
	if isAddr(a) || !strings.HasPrefix(a, ".") || !isNamePattern(b) {
		return false
	}
	return strings.HasSuffix(strings.TrimPrefix(b, "."), a)
}

// nested reports whether endpoint o covers endpoint e in direction d.
func nested(o, e *genEndpoint, d Direction) bool {
	if !o.defines[d] || !e.defines[d] {
		return false
	}
	for _, a := range o.hosts {
		for _, b := range e.hosts {
			if covers(a, b) {
				return true
			}
		}
	}
	return false
}

// coversAll reports whether o covers every host of e in direction d.
func coversAll(o, e *genEndpoint, d Direction) bool {
	if !o.defines[d] || !e.defines[d] {
		return false
	}
	for _, b := range e.hosts {
		if !slices.ContainsFunc(o.hosts, func(a string) bool { return covers(a, b) }) {
			return false
		}
	}
	return true
}

// assign chooses exceptions, ladders and levels: a nested endpoint's level
// is raised to that of every endpoint it is nested in except the one it
// is an exception to, until nothing changes.
func (g *generated) assign(r *rand.Rand) {
	eps := g.eps
	// Exceptions: to an endpoint that covers all of its hosts in every
	// direction both define.
	for i, e := range eps {
		if r.IntN(3) != 0 {
			continue
		}
		var cands []int
		for j, o := range eps {
			ok, any := j != i, false
			for _, d := range directions {
				if o.defines[d] && e.defines[d] {
					any = true
					ok = ok && coversAll(o, e, d)
				}
			}
			if ok && any {
				cands = append(cands, j)
			}
		}
		if len(cands) > 0 {
			e.excTo = pick(r, cands)
		}
	}
	// Ladder families: one per group of endpoints tied by nesting.
	parent := make([]int, len(eps))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			i = parent[i]
		}
		return i
	}
	for _, d := range directions {
		for i, e := range eps {
			for j, o := range eps {
				if i != j && (nested(o, e, d) || e.excTo == j) {
					parent[find(i)] = find(j)
				}
			}
		}
	}
	famPins := map[int]bool{}
	for i := range eps {
		if f := find(i); f == i {
			famPins[f] = r.IntN(4) == 0
		}
	}
	level := make([][2]int, len(eps))
	for i, e := range eps {
		for _, d := range directions {
			e.family[d] = find(i)
			e.pinLadder[d] = famPins[find(i)] && g.hasPins(d)
			level[i][d] = r.IntN(len(g.ladder(d, e.pinLadder[d], 0)))
		}
	}
	for changed := true; changed; {
		changed = false
		for i, e := range eps {
			for j, o := range eps {
				if i == j || e.excTo == j {
					continue
				}
				for _, d := range directions {
					if !nested(o, e, d) {
						continue
					}
					if level[i][d] < level[j][d] {
						level[i][d], changed = level[j][d], true
					}
					if e.monitor && !o.monitor {
						e.monitor, changed = false, true
					}
				}
			}
		}
	}
	for i, e := range eps {
		for _, d := range directions {
			if !e.defines[d] {
				continue
			}
			e.level[d] = level[i][d]
			step := g.ladder(d, e.pinLadder[d], e.family[d])[level[i][d]]
			e.toml[d], e.req[d] = step.toml, step.req
		}
	}
	// Which directions each exception relaxes; one that relaxes nothing
	// is no exception.
	for i, e := range eps {
		if e.excTo < 0 {
			continue
		}
		o := eps[e.excTo]
		for _, d := range directions {
			if nested(o, e, d) && (level[i][d] < level[e.excTo][d] || e.monitor && !o.monitor) {
				e.relaxes[d] = true
			}
		}
		if !e.relaxes[Inbound] && !e.relaxes[Outbound] {
			e.excTo = -1
			continue
		}
		switch r.IntN(4) {
		case 0:
			e.expiry, e.expDate, e.expAt = "2025-06-01", true, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
		case 1:
			e.expiry, e.expDate, e.expAt = "2030-01-01", true, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		case 2:
			e.expiry, e.expDate, e.expAt = "2027-01-31", true, time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
		default:
			e.expiry, e.expAt = "2027-01-31T12:00:00+01:00", time.Date(2027, 1, 31, 11, 0, 0, 0, time.UTC)
		}
	}
}

// hasPins reports whether the MTA can enforce pins in direction d with
// the settings the generator writes.
func (g *generated) hasPins(d Direction) bool { return !(g.mta == Sendmail && d == Outbound) }

type ladderStep struct {
	toml []string
	req  Requirements
}

// ladder returns a direction's requirement steps for family fam, each at
// least as strict as the one before, within what the MTA can enforce.
func (g *generated) ladder(d Direction, pins bool, fam int) []ladderStep {
	cn := fmt.Sprintf("mx.f%d.example", fam)
	ca := fmt.Sprintf("CA f%d", fam)
	subject := fmt.Sprintf("CN=%s, O=F%d, C=DE", cn, fam)
	issuer := fmt.Sprintf("CN=%s, O=F%d, C=DE", ca, fam)
	mustDN := func(s string) DN {
		dn, err := certid.ParseDN(s)
		if err != nil {
			panic(err)
		}
		return dn
	}
	fp := func(s string) Fingerprint {
		f, err := certid.ParseFingerprint(s)
		if err != nil {
			panic(err)
		}
		return f
	}
	in := d == Inbound
	enc := Requirements{Encryption: true}
	req := Requirements{Encryption: true, RequestCert: in}
	valid := Requirements{Encryption: true, RequestCert: in, ValidateCert: true}
	with := func(r Requirements, f func(*Requirements)) Requirements { f(&r); return r }
	if pins {
		p12 := with(req, func(r *Requirements) { r.Fingerprints = []Fingerprint{fp(genPins[0]), fp(genPins[1])} })
		p1 := with(req, func(r *Requirements) { r.Fingerprints = []Fingerprint{fp(genPins[0])} })
		steps := []ladderStep{
			{[]string{"validate_cert = false", `fingerprints = ["` + genPins[0] + `", "` + genPins[1] + `"]`}, p12},
			{[]string{"validate_cert = false", `fingerprints = ["` + genPins[0] + `"]`}, p1},
		}
		if in {
			steps = append(steps, ladderStep{[]string{"validate_cert = true", `fingerprints = ["` + genPins[0] + `"]`}, with(p1, func(r *Requirements) { r.ValidateCert = true })})
		} else {
			steps = append(steps, ladderStep{[]string{"validate_cert = false", `fingerprints = ["` + genPins[0] + `"]`, "min_bits = 128"}, with(p1, func(r *Requirements) { r.MinBits = 128 })})
		}
		return steps
	}
	bits := 128
	if in {
		bits = 256
	}
	steps := []ladderStep{
		{[]string{"encryption = true"}, enc},
		{[]string{"encryption = true", "min_bits = " + strconv.Itoa(bits)}, with(enc, func(r *Requirements) { r.MinBits = bits })},
	}
	if in {
		steps = append(steps, ladderStep{[]string{"encryption = true", "min_bits = 256", "request_cert = true"}, with(req, func(r *Requirements) { r.MinBits = 256 })})
	}
	vb := with(valid, func(r *Requirements) { r.MinBits = bits })
	vcn := with(vb, func(r *Requirements) { r.MatchCN, r.CN = true, cn })
	base := []string{"validate_cert = true", "min_bits = " + strconv.Itoa(bits)}
	steps = append(steps,
		ladderStep{base, vb},
		ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`), vcn},
	)
	switch {
	case g.mta == Postfix:
		// Inbound Postfix reports CNs; outbound the issuer becomes a
		// trust-anchor file.
		steps = append(steps, ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`, `issuer_cn = "`+ca+`"`), with(vcn, func(r *Requirements) { r.IssuerCN = ca })})
	case in:
		vs := with(vcn, func(r *Requirements) { r.SubjectDN = mustDN(subject) })
		steps = append(steps,
			ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`, `subject_dn = "`+subject+`"`), vs},
			ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`, `subject_dn = "`+subject+`"`, `issuer_cn = "`+ca+`"`), with(vs, func(r *Requirements) { r.IssuerCN = ca })},
			ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`, `subject_dn = "`+subject+`"`, `issuer_cn = "`+ca+`"`, `issuer_dn = "`+issuer+`"`), with(vs, func(r *Requirements) { r.IssuerCN, r.IssuerDN = ca, mustDN(issuer) })},
		)
	default:
		vs := with(vcn, func(r *Requirements) { r.SubjectDN = mustDN(subject) })
		steps = append(steps,
			ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`, `subject_dn = "`+subject+`"`), vs},
			ladderStep{append(slices.Clone(base), `cn = "`+cn+`"`, `subject_dn = "`+subject+`"`, `issuer_dn = "`+issuer+`"`), with(vs, func(r *Requirements) { r.IssuerDN = mustDN(issuer) })},
		)
	}
	return steps
}

// write renders the policy as TOML.
func (g *generated) write() {
	var b strings.Builder
	fmt.Fprintf(&b, "mta = %q\n", g.mta)
	if g.mta == Postfix {
		b.WriteString("[policyd]\ndelegation_listen = \"unix:/run/tlsgate/delegation.sock\"\n[certs]\nca_store = \"/etc/tlsgate/ca\"\ntrust_anchor_dir = \"/etc/tlsgate/ta\"\n")
	}
	for _, e := range g.eps {
		fmt.Fprintf(&b, "\n[[endpoint]]\nname = %q\nhosts = [", e.name)
		for i, h := range e.hosts {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", h)
		}
		b.WriteString("]\n")
		if e.monitor {
			b.WriteString("mode = \"monitor\"\n")
		}
		if e.excTo >= 0 {
			fmt.Fprintf(&b, "exception_to = %q\nreason = \"generated\"\nexpires = %s\n", g.eps[e.excTo].name, e.expiry)
		}
		for _, d := range directions {
			if !e.defines[d] {
				continue
			}
			fmt.Fprintf(&b, "  [endpoint.%s]\n", d)
			for _, l := range e.toml[d] {
				b.WriteString("  " + l + "\n")
			}
			if g.mta == Postfix && d == Outbound && e.req[d].IssuerCN != "" {
				g.tafile["/etc/tlsgate/ta/"+e.name+".pem"] = e.req[d].IssuerCN
			}
		}
	}
	g.toml = b.String()
}

// instant picks a time to ask at: around the exceptions' ends, in a
// random zone, or far from them.
func (g *generated) instant(r *rand.Rand) time.Time {
	zone := pick(r, []*time.Location{time.UTC, time.FixedZone("CET", 3600), time.FixedZone("EST", -5*3600)})
	switch r.IntN(7) {
	case 0:
		return time.Date(2026, 6, 1, 12, 0, 0, 0, zone)
	case 1:
		return time.Date(2027, 1, 30, 23, 59, 59, 0, zone)
	case 2:
		return time.Date(2027, 1, 31, 0, 0, 0, 0, zone)
	case 3:
		return time.Date(2027, 1, 31, 10, 59, 59, 0, time.UTC).In(zone)
	case 4:
		return time.Date(2027, 1, 31, 11, 0, 0, 0, time.UTC).In(zone)
	case 5:
		return time.Date(2024, 1, 1, 0, 0, 0, 0, zone)
	}
	return time.Date(2031, 1, 1, 0, 0, 0, 0, zone)
}

// ended reports whether e's exception has ended at t, by the documented
// rule: a date ends at 00:00 of that day where t is, a date and time with
// an offset at that instant.
func (e *genEndpoint) ended(t time.Time) bool {
	if e.excTo < 0 {
		return false
	}
	end := e.expAt
	if e.expDate {
		end = time.Date(e.expAt.Year(), e.expAt.Month(), e.expAt.Day(), 0, 0, 0, 0, t.Location())
	}
	return !t.Before(end)
}

// active reports whether e takes part in direction d at t.
func (e *genEndpoint) active(d Direction, t time.Time) bool {
	return e.defines[d] && !(e.relaxes[d] && e.ended(t))
}

func (e *genEndpoint) rule(d Direction) Rule {
	m := Enforce
	if e.monitor {
		m = Monitor
	}
	return Rule{Mode: m, Req: e.req[d]}
}

// ---- destinations and matching ----

// genHost is a generated pattern, read once.
type genHost struct {
	name   string       // a name pattern as written (".x.a.example", "a.example")
	prefix netip.Prefix // an address (full length) or range
}

func readHost(h string) genHost {
	if p, err := netip.ParsePrefix(h); err == nil {
		return genHost{prefix: p}
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return genHost{prefix: netip.PrefixFrom(a, a.BitLen())}
	}
	return genHost{name: h}
}

// matchesName reports whether pattern h matches host name n.
func matchesName(h genHost, n string) bool {
	if h.name == "" || n == "" {
		return false
	}
	if h.name[0] == '.' {
		return strings.HasSuffix(n, h.name)
	}
	return n == h.name
}

// matchesAddr reports whether pattern h matches address a.
func matchesAddr(h genHost, a netip.Addr) bool {
	return a.IsValid() && h.prefix.IsValid() && h.prefix.Contains(a)
}

// matching returns the endpoints active in direction d at t with a
// pattern that matches name n or address a.
func (g *generated) matching(d Direction, t time.Time, n string, a netip.Addr) []*genEndpoint {
	var out []*genEndpoint
	for _, e := range g.eps {
		if !e.active(d, t) {
			continue
		}
		for _, h := range e.read {
			if matchesName(h, n) || matchesAddr(h, a) {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

// excused reports whether an active exception among ms relaxes b in d.
func (g *generated) excused(ms []*genEndpoint, b *genEndpoint, d Direction) bool {
	for _, e := range ms {
		if e.excTo >= 0 && g.eps[e.excTo] == b && e.relaxes[d] {
			return true
		}
	}
	return false
}

func (g *generated) randomName(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		// Under or at one of the policy's own patterns.
		h := pick(r, pick(r, g.eps).hosts)
		if isNamePattern(h) {
			if strings.HasPrefix(h, ".") {
				return pick(r, []string{"q", "mx.q", "mx"}) + h
			}
			return h
		}
	}
	n := pick(r, genSubs) + pick(r, genBases)
	switch r.IntN(6) {
	case 0:
		n = "z." + n
	case 1:
		n = "mx.z." + n
	case 2:
		n = pick(r, []string{"other.example", "example", "localhost", "company.test"})
	}
	return n
}

func (g *generated) randomAddr(r *rand.Rand) netip.Addr {
	if r.IntN(3) == 0 {
		h := pick(r, pick(r, g.eps).hosts)
		if p, err := netip.ParsePrefix(h); err == nil {
			a := p.Addr()
			for range r.IntN(70) {
				a = a.Next()
			}
			return a
		}
		if isAddr(h) {
			return netip.MustParseAddr(h)
		}
	}
	switch r.IntN(6) {
	case 0:
		return netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))})
	case 1:
		return netip.AddrFrom4([4]byte{198, 51, 100, byte(r.IntN(256))})
	case 2:
		return netip.MustParseAddr(pick(r, []string{"203.0.113.5", "2001:db9::1", "2001:db8:2::7"}))
	case 3:
		return netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::%x", r.IntN(3), r.IntN(300)))
	}
	for {
		if h := pick(r, genAddrs); isAddr(h) {
			return netip.MustParseAddr(h)
		}
	}
}

// upper writes s in mixed case now and then: the MTAs send any case.
func upper(r *rand.Rand, s string) string {
	if r.IntN(4) != 0 {
		return s
	}
	return strings.ToUpper(s[:len(s)/2]) + s[len(s)/2:]
}

// ---- outbound: Postfix ----

func (g *generated) checkPostfix(p *Policy, r *rand.Rand, at time.Time, stats *propertyStats) string {
	stats.postfix++
	var key, host string
	var addr netip.Addr
	if r.IntN(4) == 0 {
		addr = g.randomAddr(r)
		if addr.Is4() {
			key = pick(r, []string{"[%s]", "[%s]:25", "[%s]:smtp", "%s", "%s:587"})
			key = fmt.Sprintf(key, addr)
		} else {
			key = fmt.Sprintf(pick(r, []string{"[IPv6:%s]", "[ipv6:%s]:submission", "[%s]:25"}), addr)
		}
	} else {
		host = g.randomName(r)
		key = fmt.Sprintf(pick(r, []string{"%s", "%s", "[%s]", "[%s]:587", "[%s]:submission", "%s:smtp", "[%s]:"}), upper(r, host))
	}
	if host != "" && !strings.ContainsAny(key, "[]:") && strings.Contains(host, ".") && r.IntN(2) == 0 {
		return g.checkPostfixDiscovered(p, r, at, key, host, stats)
	}
	w := p.At(at).PostfixWalk(key)
	eff, found, temp, err := g.effective(w, at)
	if err != "" {
		return fmt.Sprintf("Postfix next hop %q: %s", key, err)
	}
	ms := g.matching(Outbound, at, host, addr)
	return g.judgeOutbound("Postfix next hop "+strconv.Quote(key), w, ms, nil, eff, found, temp, true, stats)
}

// effective parses the answer in effect of a walk: found, TEMP, or
// neither (the MTA default).
func (g *generated) effective(w Walk, at time.Time) (Rule, bool, bool, string) {
	s, ok := w.Effective()
	switch {
	case !ok:
		return Rule{}, false, false, ""
	case s.Err != nil:
		return Rule{}, false, true, ""
	}
	var req Requirements
	var err error
	if g.mta == Postfix {
		req, err = g.parsePostfix(s.Answer.Text)
	} else {
		req, err = parseSendmail(s.Answer.Text)
	}
	if err != nil {
		return Rule{}, false, false, fmt.Sprintf("answer %q of key %q: %v", s.Answer.Text, s.Key, err)
	}
	return Rule{Mode: Enforce, Req: req}, true, false, ""
}

// judgeOutbound checks the property for one walk: every enforcing
// endpoint in must (unless an exception among excuse relaxes it) is met
// by the answer in effect (or also by also, the other walk of the same
// delivery); with exact, an answer comes only when some enforcing
// endpoint matches, and from an endpoint that matches.
func (g *generated) judgeOutbound(what string, w Walk, must, also []*genEndpoint, eff Rule, found, temp, exact bool, stats *propertyStats) string {
	if temp {
		stats.refused++
		return ""
	}
	for _, b := range must {
		if b.monitor {
			continue
		}
		if g.excused(must, b, Outbound) {
			stats.excused++
			continue
		}
		if !found || !eff.AtLeastAsStrict(b.rule(Outbound)) {
			return fmt.Sprintf("%s: endpoint %s matches and demands %+v, but the walk %s gives %+v (found %v), which lacks %q",
				what, b.name, b.req[Outbound], walkString(w), eff.Req, found, eff.Shortfalls(b.rule(Outbound)))
		}
	}
	if found {
		stats.refused++
		if s, _ := w.Effective(); exact && !slices.ContainsFunc(must, func(e *genEndpoint) bool { return e.name == s.Answer.Endpoint.Name }) {
			return fmt.Sprintf("%s: the walk %s answers for endpoint %s, which does not match", what, walkString(w), s.Answer.Endpoint.Name)
		}
	} else if exact && slices.ContainsFunc(must, func(e *genEndpoint) bool { return !e.monitor && !g.excused(must, e, Outbound) }) {
		return fmt.Sprintf("%s: an enforcing endpoint matches but the walk %s finds nothing", what, walkString(w))
	}
	return ""
}

func walkString(w Walk) string {
	var parts []string
	for _, s := range w.Steps {
		a := "NOTFOUND"
		switch {
		case s.Err != nil:
			a = "TEMP"
		case s.Answer.Found:
			a = "OK " + s.Answer.Text
		}
		parts = append(parts, s.Key+" -> "+a)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// parsePostfix reads an smtp_tls_policy_maps entry back into the
// requirements Postfix enforces with it.
func (g *generated) parsePostfix(text string) (Requirements, error) {
	f := strings.Fields(text)
	if len(f) == 0 {
		return Requirements{}, fmt.Errorf("empty")
	}
	var q Requirements
	switch f[0] {
	case "encrypt":
		q.Encryption = true
	case "verify", "secure":
		q.Encryption, q.ValidateCert = true, true
	case "fingerprint":
		q.Encryption = true
	default:
		return q, fmt.Errorf("level %q", f[0])
	}
	for _, a := range f[1:] {
		k, v, _ := strings.Cut(a, "=")
		switch {
		case k == "match" && f[0] == "fingerprint":
			b := make([]byte, 0, 32)
			for _, h := range strings.Split(v, ":") {
				n, err := strconv.ParseUint(h, 16, 8)
				if err != nil {
					return q, err
				}
				b = append(b, byte(n))
			}
			if len(b) != 32 {
				return q, fmt.Errorf("fingerprint of %d bytes", len(b))
			}
			q.Fingerprints = append(q.Fingerprints, Fingerprint(b))
		case k == "match" && v == "hostname":
			q.MatchCN = true
		case k == "match":
			q.MatchCN, q.CN = true, v
		case k == "ciphers" && v == "high":
			q.MinBits = 128
		case k == "tafile":
			ca, ok := g.tafile[v]
			if !ok {
				return q, fmt.Errorf("unknown tafile %q", v)
			}
			q.IssuerCN = ca
		default:
			return q, fmt.Errorf("attribute %q", a)
		}
	}
	return q, nil
}

// parseSendmail reads an access-map RHS for TLS_Srv/TLS_Rcpt back into
// the requirements Sendmail's TLS_connection ruleset enforces with it.
func parseSendmail(text string) (Requirements, error) {
	var q Requirements
	rest, ok := strings.CutPrefix(text, "TEMP+")
	if !ok {
		return q, fmt.Errorf("no TEMP+")
	}
	main, exts, _ := strings.Cut(rest, "+")
	q.Encryption = true
	level, bits, _ := strings.Cut(main, ":")
	switch level {
	case "VERIFY":
		q.ValidateCert = true
	case "ENCR":
		if bits == "" {
			return q, fmt.Errorf("ENCR without bits")
		}
	default:
		return q, fmt.Errorf("level %q", main)
	}
	if bits != "" {
		n, err := strconv.Atoi(bits)
		if err != nil {
			return q, err
		}
		q.MinBits = n
	}
	if exts == "" {
		return q, nil
	}
	for _, x := range strings.Split(exts, "++") {
		k, v, _ := strings.Cut(x, ":")
		v = unxtext(v)
		switch k {
		case "CN":
			q.MatchCN, q.CN = true, v
		case "CS", "CI":
			dn, err := certid.ParseDN(v)
			if err != nil {
				return q, err
			}
			if k == "CS" {
				q.SubjectDN = dn
			} else {
				q.IssuerDN = dn
			}
		default:
			return q, fmt.Errorf("extension %q", x)
		}
	}
	return q, nil
}

// unxtext decodes +XX escapes.
func unxtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ---- outbound: Sendmail ----

func (g *generated) checkSendmail(p *Policy, r *rand.Rand, at time.Time, stats *propertyStats) string {
	stats.sendmail++
	local := pick(r, []string{"joe", "joe+lists", "Jane.Doe"})
	if r.IntN(8) == 0 {
		local = strings.Repeat("l", 200+r.IntN(100))
	}
	var dom string
	var domAddr netip.Addr
	if r.IntN(10) == 0 {
		domAddr = netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))})
		dom = "[" + domAddr.String() + "]"
	} else {
		dom = g.randomName(r)
		if r.IntN(10) == 0 {
			dom = strings.Repeat("d", 180+r.IntN(60)) + "." + dom
		}
	}
	rcpt := local + "@" + upper(r, dom)
	mx, mxAddr := g.randomName(r), g.randomAddr(r)
	v := p.At(at)
	rw, sw := v.SendmailRcptWalk(rcpt), v.SendmailServerWalk(mx, mxAddr)
	reff, rfound, rtemp, err := g.effective(rw, at)
	if err != "" {
		return "recipient " + rcpt + ": " + err
	}
	seff, sfound, stemp, err := g.effective(sw, at)
	if err != "" {
		return "server " + mx + ": " + err
	}
	name := ""
	if !domAddr.IsValid() {
		name = dom
	}
	rm := g.matching(Outbound, at, name, domAddr)
	cut := slices.ContainsFunc(rw.Steps, func(s Step) bool { return len(s.Key) >= SendmailMaxKey })
	what := fmt.Sprintf("Sendmail delivery to %s via %s [%s]", rcpt, mx, mxAddr)
	// The recipient's endpoints must be met by TLS_Rcpt (or TLS_Srv);
	// without a cut key, TLS_Rcpt answers exactly when one matches.
	if msg := g.judgeOutbound(what+", TLS_Rcpt", rw, rm, nil, reff, rfound, rtemp, !cut, stats); msg != "" {
		if !g.metByOther(rm, seff, sfound, stemp) {
			return msg
		}
	}
	// The server's endpoints: by name; by address only when no enforcing
	// endpoint answers a name key of its walk (Sendmail asks the address
	// only then: the documented limit of TLS_Srv).
	sm := g.matching(Outbound, at, mx, netip.Addr{})
	if !g.nameAnswers(at, mx) {
		sm = append(sm, g.matching(Outbound, at, "", mxAddr)...)
	}
	if msg := g.judgeOutbound(what+", TLS_Srv", sw, sm, nil, seff, sfound, stemp, false, stats); msg != "" {
		if !g.metByOther(sm, reff, rfound, rtemp) {
			return msg
		}
	}
	return ""
}

// metByOther reports whether the other walk of the same delivery meets
// every enforcing endpoint of ms that is not excused.
func (g *generated) metByOther(ms []*genEndpoint, eff Rule, found, temp bool) bool {
	if temp {
		return true
	}
	for _, b := range ms {
		if !b.monitor && !g.excused(ms, b, Outbound) && (!found || !eff.AtLeastAsStrict(b.rule(Outbound))) {
			return false
		}
	}
	return true
}

// nameAnswers reports whether an enforcing endpoint answers one of the
// name keys of Sendmail's TLS_Srv walk for server name n: it matches n,
// or names one of n's parent domains exactly (ruleset D asks them).
func (g *generated) nameAnswers(at time.Time, n string) bool {
	for _, e := range g.eps {
		if !e.active(Outbound, at) || e.monitor {
			continue
		}
		for _, h := range e.read {
			if matchesName(h, n) {
				return true
			}
			for p := n; strings.Contains(p, "."); {
				p = p[strings.IndexByte(p, '.')+1:]
				if h.name == p {
					return true
				}
			}
		}
	}
	return false
}

// ---- inbound ----

func (g *generated) checkInbound(p *Policy, r *rand.Rand, at time.Time, stats *propertyStats) string {
	stats.inbound++
	f := &Facts{FingerprintsKnown: r.IntN(4) != 0}
	if r.IntN(5) != 0 {
		f.ClientAddr = g.randomAddr(r)
	}
	switch r.IntN(4) {
	case 0:
		f.ClientName = "unknown"
	case 1:
	default:
		f.ClientName = upper(r, g.randomName(r))
	}
	if r.IntN(4) != 0 {
		f.Sender = "someone@" + upper(r, g.randomName(r))
	}
	if r.IntN(4) != 0 {
		f.TLSVersion, f.Cipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384"
		f.Bits = pick(r, []int{128, 256})
		f.Verify = pick(r, []Verify{VerifyNone, VerifyUntrusted, VerifyTrusted, VerifyTrusted, VerifyUnknown})
		fam := r.IntN(len(g.eps) + 1)
		if f.Verify != VerifyNone {
			f.SubjectCN = pick(r, []string{fmt.Sprintf("mx.f%d.example", fam), "mx.other.example"})
			f.IssuerCN = pick(r, []string{fmt.Sprintf("CA f%d", fam), "Other CA"})
			f.SubjectDN, _ = certid.ParseDN(fmt.Sprintf("CN=%s, O=F%d, C=DE", f.SubjectCN, fam))
			f.IssuerDN, _ = certid.ParseDN(fmt.Sprintf("CN=%s, O=F%d, C=DE", f.IssuerCN, fam))
			if r.IntN(2) == 0 {
				fp, _ := certid.ParseFingerprint(pick(r, genPins))
				f.Fingerprints = []Fingerprint{fp}
			}
		}
	}
	v := p.At(at).Judge(f)
	name := strings.ToLower(f.ClientName)
	if name == "unknown" {
		name = ""
	}
	sender := ""
	if at := strings.LastIndexByte(f.Sender, '@'); at >= 0 {
		sender = strings.ToLower(f.Sender[at+1:])
	}
	mustRefuse, mayRefuse := "", false
	for _, ms := range g.inboundMatches(at, f.ClientAddr, name, sender) {
		for _, b := range ms {
			if b.monitor || !refuses(b.req[Inbound], f) {
				continue
			}
			mayRefuse = true
			if g.excused(ms, b, Inbound) {
				stats.excused++
				continue
			}
			mustRefuse = b.name
		}
	}
	for _, e := range g.eps {
		if e.excTo >= 0 && e.ended(at) {
			stats.ended++
			break
		}
	}
	if v.Refuse {
		stats.refused++
	}
	if g.mta == Sendmail {
		if msg := g.checkSrvFeatures(p, at, f, name, sender); msg != "" {
			return msg
		}
	}
	switch {
	case mustRefuse != "" && !v.Refuse:
		return fmt.Sprintf("session %+v: endpoint %s matches and refuses it, but the verdict is %+v", *f, mustRefuse, v)
	case v.Refuse && !mayRefuse:
		return fmt.Sprintf("session %+v: the verdict %+v refuses, but no matching enforcing endpoint would", *f, v)
	}
	return ""
}

// inboundMatches returns, for the client address, its verified name and
// the sender domain, the inbound endpoints active at t that match it.
func (g *generated) inboundMatches(at time.Time, addr netip.Addr, name, sender string) [3][]*genEndpoint {
	return [3][]*genEndpoint{
		g.matching(Inbound, at, "", addr),
		g.matching(Inbound, at, name, netip.Addr{}),
		g.matching(Inbound, at, sender, netip.Addr{}),
	}
}

// checkSrvFeatures: Sendmail asks the client for a certificate (the
// srv_features walk answers v, or nothing and Sendmail's default asks)
// whenever an endpoint that needs one matches the session by its address,
// name or sender, in monitor mode too, unless an unexpired exception that
// matches the same way relaxes it. The sender is not known when
// Sendmail asks.
func (g *generated) checkSrvFeatures(p *Policy, at time.Time, f *Facts, name, sender string) string {
	w := p.At(at).SrvFeaturesWalk(name, f.ClientAddr)
	s, ok := w.Effective()
	if !ok || s.Err != nil || s.Answer.Text == "v" {
		return ""
	}
	for _, ms := range g.inboundMatches(at, f.ClientAddr, name, sender) {
		for _, b := range ms {
			if b.req[Inbound].RequestCert && !g.excused(ms, b, Inbound) {
				return fmt.Sprintf("session %+v: endpoint %s needs the client's certificate, but Sendmail's srv_features walk %s tells it not to ask", *f, b.name, walkString(w))
			}
		}
	}
	return ""
}

// refuses judges facts against requirements by the documented rules,
// independently of the model's judge.
func refuses(q Requirements, f *Facts) bool {
	if f.TLSVersion == "" {
		return q.Encryption
	}
	if f.Bits < q.MinBits {
		return true
	}
	trusted := f.Verify == VerifyTrusted
	if q.ValidateCert && !trusted {
		return true
	}
	if trusted {
		if q.MatchCN {
			want := q.CN
			if want == "" {
				want = f.ClientName
			}
			if want == "" || strings.EqualFold(want, "unknown") || !strings.EqualFold(want, f.SubjectCN) {
				return true
			}
		}
		if q.SubjectDN != nil && (f.SubjectDN == nil || q.SubjectDN.String() != f.SubjectDN.String()) {
			return true
		}
		if q.IssuerDN != nil && (f.IssuerDN == nil || q.IssuerDN.String() != f.IssuerDN.String()) {
			return true
		}
		if q.IssuerCN != "" && !strings.EqualFold(q.IssuerCN, f.IssuerCN) {
			return true
		}
	}
	if len(q.Fingerprints) > 0 && f.FingerprintsKnown {
		for _, w := range q.Fingerprints {
			if slices.Contains(f.Fingerprints, w) {
				return false
			}
		}
		return true
	}
	return false
}
