package discovery

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// maxMXHosts bounds the MX hosts examined for DANE.
const maxMXHosts = 10

// The reasons for DANENone that do not name a host, shared by every
// record that has them (intern).
const (
	reasonMXInsecure = "MX RRset is not DNSSEC-signed (insecure)"
	reasonNXInsecure = "domain does not exist (insecure)"
	reasonNX         = "domain does not exist"
	reasonNullMX     = "null MX: the domain accepts no mail"
)

// intern returns the shared copy of a reason read from the cache file,
// so that the thousands of domains without DNSSEC (most) do not each
// hold their own copy of the same words.
func intern(reason string) string {
	for _, r := range [...]string{reasonMXInsecure, reasonNXInsecure, reasonNX, reasonNullMX} {
		if reason == r {
			return r
		}
	}
	return reason
}

// daneOutcome is the result of one DANE evaluation of a domain.
type daneOutcome struct {
	state  DANEState // DANENone, DANEUsable or DANEUnknown
	ttl    uint32    // how long the state may be cached (not for Unknown)
	reason string    // why (for None/Unknown), or the usable hosts
	err    error     // the DNS failure for Unknown
	// allMX (with DANEUsable): every MX host of the domain was examined
	// and each has usable DANE. Postfix's "dane" gives a host without it
	// opportunistic TLS ("may": no TLSA records, or insecure addresses)
	// or unauthenticated TLS ("encrypt": only unusable records).
	allMX bool
}

// evalDANE decides whether domain gets "dane" (RFC 7672 §2.2): its MX
// RRset is secure and at least one MX host has secure address records
// and a secure TLSA RRset with a usable record. An insecure answer
// anywhere on that path means DANENone (never "dane" for an unsigned
// domain, whatever TLSA records it has); a DNS failure (SERVFAIL, bogus,
// timeout) where it matters means DANEUnknown. With DANEUsable it also
// says whether every MX host is usable (allMX): not when one is not, when
// one's state is unknown, or when the domain has more MX hosts than are
// examined.
func evalDANE(ctx context.Context, dnsc lookuper, domain string) daneOutcome {
	mx, err := dnsc.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return daneOutcome{state: DANEUnknown, reason: "MX lookup failed", err: err}
	}
	if !mx.secure {
		why := reasonMXInsecure
		if mx.nxdomain {
			why = reasonNXInsecure
		}
		return daneOutcome{state: DANENone, ttl: mx.ttl, reason: why}
	}
	if mx.nxdomain {
		return daneOutcome{state: DANENone, ttl: mx.ttl, reason: reasonNX}
	}
	var hosts []string
	truncated := false // more MX hosts than maxMXHosts: not all examined
	if len(mx.rrs) == 0 {
		// No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
		hosts = []string{dns.Fqdn(domain)}
	} else {
		recs := make([]*dns.MX, 0, len(mx.rrs))
		for _, rr := range mx.rrs {
			recs = append(recs, rr.(*dns.MX))
		}
		sort.SliceStable(recs, func(i, j int) bool { return recs[i].Preference < recs[j].Preference })
		seen := map[string]bool{}
		for _, r := range recs {
			h := strings.ToLower(r.Mx)
			if h == "." {
				if len(recs) == 1 {
					return daneOutcome{state: DANENone, ttl: mx.ttl, reason: reasonNullMX}
				}
				continue
			}
			if seen[h] {
				continue
			}
			if len(hosts) == maxMXHosts {
				truncated = true
				break
			}
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	results := make([]hostOutcome, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = evalHost(ctx, dnsc, h)
		}()
	}
	wg.Wait()

	ttl := mx.ttl
	var usable, unknown, other []string
	var firstErr error
	for i, r := range results {
		host := strings.TrimSuffix(hosts[i], ".")
		switch r.state {
		case DANEUsable:
			usable = append(usable, host)
			ttl = min(ttl, r.ttl)
		case DANEUnknown:
			unknown = append(unknown, host+": "+r.reason)
			if firstErr == nil {
				firstErr = r.err
			}
		default:
			other = append(other, host+": "+r.reason)
		}
	}
	if len(usable) > 0 {
		// The TTL is that of the usable hosts and the MX RRset: a usable
		// host that loses DANE, or a new MX host, is seen in time; a
		// host that gains DANE only relaxes the answer later.
		reason := "usable TLSA on " + strings.Join(usable, ", ")
		all := len(usable) == len(hosts) && !truncated
		if !all {
			not := append(other, unknown...)
			if truncated {
				not = append(not, fmt.Sprintf("MX hosts after the first %d not examined", maxMXHosts))
			}
			reason += "; not on every MX host (" + strings.Join(not, "; ") + ")"
		}
		return daneOutcome{state: DANEUsable, ttl: ttl, reason: reason, allMX: all}
	}
	if len(unknown) > 0 {
		return daneOutcome{state: DANEUnknown, reason: strings.Join(unknown, "; "), err: firstErr}
	}
	var why []string
	for i, r := range results {
		ttl = min(ttl, r.ttl)
		why = append(why, strings.TrimSuffix(hosts[i], ".")+": "+r.reason)
	}
	return daneOutcome{state: DANENone, ttl: ttl, reason: strings.Join(why, "; ")}
}

// hostOutcome is the DANE state of one MX host.
type hostOutcome struct {
	state  DANEState
	ttl    uint32
	reason string
	err    error
}

// evalHost looks up host's A, AAAA and _25._tcp TLSA records in
// parallel and decides whether the host has usable DANE: the TLSA RRset
// secure with a usable record, and all address records secure.
func evalHost(ctx context.Context, dnsc lookuper, host string) hostOutcome {
	var (
		wg      sync.WaitGroup
		a, aaaa rrset
		tlsa    rrset
		errs    [3]error
	)
	wg.Add(3)
	go func() { defer wg.Done(); a, errs[0] = dnsc.lookup(ctx, host, dns.TypeA) }()
	go func() { defer wg.Done(); aaaa, errs[1] = dnsc.lookup(ctx, host, dns.TypeAAAA) }()
	go func() { defer wg.Done(); tlsa, errs[2] = dnsc.lookup(ctx, "_25._tcp."+host, dns.TypeTLSA) }()
	wg.Wait()
	if errs[2] != nil {
		return hostOutcome{state: DANEUnknown, reason: "TLSA lookup failed", err: errs[2]}
	}
	if !tlsa.secure {
		return hostOutcome{state: DANENone, ttl: tlsa.ttl, reason: "TLSA RRset insecure or absent"}
	}
	if len(tlsa.rrs) == 0 {
		return hostOutcome{state: DANENone, ttl: tlsa.ttl, reason: "no TLSA record"}
	}
	nUsable := 0
	for _, rr := range tlsa.rrs {
		if usableTLSA(rr.(*dns.TLSA)) {
			nUsable++
		}
	}
	if nUsable == 0 {
		return hostOutcome{state: DANENone, ttl: tlsa.ttl, reason: fmt.Sprintf("no usable TLSA record among %d (usage 2 or 3 with a valid selector and matching type needed)", len(tlsa.rrs))}
	}
	for i, err := range errs[:2] {
		if err != nil {
			return hostOutcome{state: DANEUnknown, reason: []string{"A", "AAAA"}[i] + " lookup failed", err: err}
		}
	}
	if !a.secure || !aaaa.secure {
		return hostOutcome{state: DANENone, ttl: min(a.ttl, aaaa.ttl), reason: "address records insecure"}
	}
	if len(a.rrs)+len(aaaa.rrs) == 0 {
		return hostOutcome{state: DANENone, ttl: min(a.ttl, aaaa.ttl), reason: "no address records"}
	}
	return hostOutcome{state: DANEUsable, ttl: min(tlsa.ttl, a.ttl, aaaa.ttl)}
}

// usableTLSA reports whether a TLSA record can authenticate an SMTP
// server (RFC 7672 §3.1): usage DANE-TA(2) or DANE-EE(3) (PKIX-TA(0) and
// PKIX-EE(1) are unusable for SMTP), selector Cert(0) or SPKI(1),
// matching type Full(0) with data, SHA2-256(1) with 32 bytes or
// SHA2-512(2) with 64 bytes.
func usableTLSA(t *dns.TLSA) bool {
	if t.Usage != 2 && t.Usage != 3 {
		return false
	}
	if t.Selector > 1 {
		return false
	}
	data, err := hex.DecodeString(t.Certificate)
	if err != nil {
		return false
	}
	switch t.MatchingType {
	case 0:
		return len(data) > 0
	case 1:
		return len(data) == 32
	case 2:
		return len(data) == 64
	}
	return false
}
