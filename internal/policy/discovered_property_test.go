package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// The property extended to discovered policies (MTA-STS, DANE): for a
// bare-domain next hop with a random discovered answer, the answer in
// effect of Postfix's walk is never weaker than any enforcing endpoint
// that matches the destination (as TestNeverWeaker checks without
// discovery) nor than the discovered policy: with a discovered policy
// it is an authenticated level, either the discovered one (only where no
// matching enforcing endpoint authenticates, with the protocols/ciphers/
// exclude attributes of the endpoint it replaces) or the authenticating
// endpoint's own answer (which then names the source it overrides);
// TEMP only where discovery is undecided and no endpoint authenticates;
// and with nothing discovered the walk is the one without discovery.
//
// "dane" is judged per MX host, as Postfix applies it: a discovered
// "dane" whose domain has MX hosts without usable TLSA records (AllMX
// false) gives those hosts opportunistic TLS ("may": smtp_tls_policy.c,
// dane_incompat), so it does not meet an endpoint that demands
// encryption; "dane-only" uses only DANE-authenticated hosts. The merge
// must answer "dane-only" exactly there, and "dane" elsewhere.

// randomDiscovered draws what discovery finds for domain d.
func randomDiscovered(r *rand.Rand, d string) Discovered {
	switch r.IntN(4) {
	case 0:
		return Discovered{}
	case 1:
		return Discovered{Source: SourceDANE, Text: "dane", AllMX: r.IntN(2) == 0}
	case 2:
		return Discovered{Source: SourceMTASTS, Text: "secure match=mx." + d + ":." + d + " servername=hostname"}
	}
	return Discovered{Temp: true, Reason: "DANE state unknown (MX lookup failed: servfail) while an MTA-STS policy in mode enforce is held"}
}

// authenticates reports whether requirements authenticate the peer (a
// validated certificate or a pin): rank "authenticated", judged from the
// generated requirements, independently of the text the model wrote.
func authenticates(q Requirements) bool { return q.ValidateCert || len(q.Fingerprints) > 0 }

func (g *generated) checkPostfixDiscovered(p *Policy, r *rand.Rand, at time.Time, key, host string, stats *propertyStats) string {
	stats.discovered++
	domain := strings.ToLower(host)
	d := randomDiscovered(r, domain)
	v := p.At(at)
	w := v.PostfixWalkDiscovered(key, func(k string) Discovered {
		if k == key {
			return d
		}
		return Discovered{}
	})
	plain := v.PostfixWalk(key)
	what := fmt.Sprintf("Postfix next hop %q with discovered %+v", key, d)
	s, found := w.Effective()
	ps, pfound := plain.Effective()
	ms := g.matching(Outbound, at, host, netip.Addr{})
	// The enforcing endpoints that must be met, and whether one of them
	// authenticates.
	var must []*genEndpoint
	authEndpoint := false
	for _, b := range ms {
		if b.monitor || g.excused(ms, b, Outbound) {
			continue
		}
		must = append(must, b)
		authEndpoint = authEndpoint || authenticates(b.req[Outbound])
	}

	if d.Text == "" && !d.Temp {
		if walkString(w) != walkString(plain) {
			return fmt.Sprintf("%s: nothing discovered, but the walk %s differs from %s without discovery", what, walkString(w), walkString(plain))
		}
		return ""
	}
	if len(w.Steps) != 1 && found {
		return fmt.Sprintf("%s: with a discovered policy the exact key must decide, but the walk is %s", what, walkString(w))
	}
	if found && s.Err != nil {
		if !IsTemp(s.Err) || !d.Temp {
			return fmt.Sprintf("%s: TEMP %v", what, s.Err)
		}
		if authEndpoint {
			return fmt.Sprintf("%s: TEMP although an enforcing endpoint authenticates the peer", what)
		}
		stats.temp++
		stats.refused++
		return ""
	}
	if !found {
		return fmt.Sprintf("%s: the walk %s finds nothing", what, walkString(w))
	}
	a := s.Answer
	if postfixRank(a.Text) != rankAuthenticated {
		return fmt.Sprintf("%s: answer %q is below authenticated", what, a.Text)
	}
	stats.refused++
	if a.Source == SourceEndpoint {
		// The endpoint wins: its answer exactly, and it must authenticate
		// (by the generated requirements).
		if !authEndpoint {
			return fmt.Sprintf("%s: an endpoint answer %q wins although no matching enforcing endpoint authenticates", what, a.Text)
		}
		if !pfound || ps.Err != nil || ps.Answer.Text != a.Text || ps.Key != s.Key {
			return fmt.Sprintf("%s: the endpoint's answer %q differs from the walk without discovery %s", what, a.Text, walkString(plain))
		}
		if d.Text != "" && a.Overrides != d.Source {
			return fmt.Sprintf("%s: endpoint answer %q overrides %v, want %v", what, a.Text, a.Overrides, d.Source)
		}
		eff, _, _, err := g.effective(w, at)
		if err != "" {
			return what + ": " + err
		}
		stats.overridden++
		return g.judgeOutbound(what, w, ms, nil, eff, true, false, true, stats)
	}
	// The discovered level answers: only where no enforcing endpoint
	// authenticates, with each enforcing endpoint's session attributes.
	if d.Temp {
		return fmt.Sprintf("%s: answer %q from %v although discovery is undecided", what, a.Text, a.Source)
	}
	level, _, _ := strings.Cut(a.Text, " ")
	if a.Source != d.Source || !strings.HasPrefix(a.Text, d.Text) {
		return fmt.Sprintf("%s: answer %q from %v, want the discovered %q", what, a.Text, a.Source, d.Text)
	}
	if authEndpoint {
		return fmt.Sprintf("%s: the discovered %q replaces an enforcing endpoint that authenticates", what, a.Text)
	}
	// What the weakest MX host gets under the answer: "dane" without
	// usable TLSA records on every MX host is "may" for the others.
	weakest := Requirements{Encryption: true, ValidateCert: true}
	if level == "dane" && !d.AllMX {
		weakest = Requirements{}
	}
	encrypting := false // an enforcing endpoint demands encryption
	for _, b := range must {
		if b.req[Outbound].Encryption && !weakest.Encryption {
			return fmt.Sprintf("%s: endpoint %s demands encryption, but the answer %q gives the MX hosts without usable TLSA records opportunistic TLS (may)", what, b.name, a.Text)
		}
		encrypting = encrypting || b.req[Outbound].Encryption
		if b.req[Outbound].MinBits > 112 && !strings.Contains(a.Text, " ciphers=high") {
			return fmt.Sprintf("%s: endpoint %s demands min_bits %d, but the answer %q drops ciphers=high", what, b.name, b.req[Outbound].MinBits, a.Text)
		}
	}
	// No surprise: "dane-only" only where "dane" would be weaker than an
	// endpoint; the domain's own "dane" elsewhere.
	want := d.Text
	if d.Source == SourceDANE && !d.AllMX && encrypting {
		want = "dane-only"
		stats.daneOnly++
	}
	if level != want && !strings.HasPrefix(want, level+" ") {
		return fmt.Sprintf("%s: answer %q, want the level of %q", what, a.Text, want)
	}
	if extra := strings.TrimPrefix(a.Text, want); extra != "" && extra != " ciphers=high" {
		return fmt.Sprintf("%s: answer %q adds %q to %q", what, a.Text, extra, want)
	}
	stats.replaced++
	return ""
}
