package discovery

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// mxSet publishes domain's secure MX RRset: hosts with preferences 10,
// 20, ...
func (f *fixture) mxSet(domain string, hosts ...string) {
	var rrs []string
	for i, h := range hosts {
		rrs = append(rrs, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, 10*(i+1), h))
	}
	f.dns.set(domain, dns.TypeMX, true, 3600, rrs...)
}

// mxHost publishes host's secure A record and, if tlsa is set, a secure
// TLSA RRset with it.
func (f *fixture) mxHost(host string, tlsa ...string) {
	f.dns.set(host, dns.TypeA, true, 3600, host+". 300 IN A 192.0.2.25")
	f.dns.set(host, dns.TypeAAAA, true, 3600)
	var rrs []string
	for _, t := range tlsa {
		rrs = append(rrs, "_25._tcp."+host+". 300 IN TLSA "+t)
	}
	f.dns.set("_25._tcp."+host, dns.TypeTLSA, true, 3600, rrs...)
}

// TestDANEAllMX: the answer is "dane" whenever one MX host has usable
// DANE, and Result.DANEAllMX says whether every MX host has: Postfix
// gives an MX host without it "may" (no TLSA records in a secure zone,
// insecure addresses) or "encrypt" (only unusable records), which the
// merge with an endpoint that requires encryption must not allow.
func TestDANEAllMX(t *testing.T) {
	f := newFixture(t, Config{})
	good := "3 1 1 " + tlsaHash
	// Every MX host usable.
	f.daneDomain("one.example", 3600)
	f.mxSet("all.example", "mx1.all.example", "mx2.all.example")
	f.mxHost("mx1.all.example", good)
	f.mxHost("mx2.all.example", "2 0 1 "+tlsaHash)
	// No MX: the domain itself is the implicit MX, usable.
	f.dns.set("implicit.example", dns.TypeMX, true, 3600)
	f.mxHost("implicit.example", good)
	// One usable, one without TLSA records (secure empty RRset).
	f.mxSet("notlsa.example", "mx1.notlsa.example", "mx2.notlsa.example")
	f.mxHost("mx1.notlsa.example", good)
	f.mxHost("mx2.notlsa.example")
	// One usable, one whose TLSA name does not exist (secure NXDOMAIN: the
	// fake's default).
	f.mxSet("nx.example", "mx1.nx.example", "mx2.nx.example")
	f.mxHost("mx1.nx.example", good)
	f.dns.set("mx2.nx.example", dns.TypeA, true, 3600, "mx2.nx.example. 300 IN A 192.0.2.26")
	f.dns.set("mx2.nx.example", dns.TypeAAAA, true, 3600)
	// One usable, one with only PKIX records (Postfix: "encrypt").
	f.mxSet("pkix.example", "mx1.pkix.example", "mx2.pkix.example")
	f.mxHost("mx1.pkix.example", good)
	f.mxHost("mx2.pkix.example", "1 1 1 "+tlsaHash)
	// The backup first: usable on the second host only.
	f.mxSet("backup.example", "mx1.backup.example", "mx2.backup.example")
	f.mxHost("mx1.backup.example")
	f.mxHost("mx2.backup.example", good)
	// One usable, one with insecure addresses.
	f.mxSet("insecure.example", "mx1.insecure.example", "mx2.insecure.example")
	f.mxHost("mx1.insecure.example", good)
	f.mxHost("mx2.insecure.example", good)
	f.dns.set("mx2.insecure.example", dns.TypeA, false, 3600, "mx2.insecure.example. 300 IN A 192.0.2.27")
	// One usable, one whose TLSA lookup fails: not known usable.
	f.mxSet("fail.example", "mx1.fail.example", "mx2.fail.example")
	f.mxHost("mx1.fail.example", good)
	f.dns.fail("_25._tcp.mx2.fail.example", dns.TypeTLSA, DNSServFail)
	// Eleven MX hosts, all usable: only ten are examined.
	var many []string
	for i := range maxMXHosts + 1 {
		h := fmt.Sprintf("mx%d.many.example", i)
		many = append(many, h)
		f.mxHost(h, good)
	}
	f.mxSet("many.example", many...)
	// Exactly ten, all usable, one listed twice.
	f.mxSet("ten.example", append(many[:maxMXHosts:maxMXHosts], many[0])...)

	for _, tc := range []struct {
		domain    string
		all       bool
		reasonHas string
	}{
		{"one.example", true, "usable TLSA on mx.one.example"},
		{"all.example", true, "usable TLSA on mx1.all.example, mx2.all.example"},
		{"implicit.example", true, "usable TLSA on implicit.example"},
		{"ten.example", true, "mx9.many.example"},
		{"notlsa.example", false, "not on every MX host (mx2.notlsa.example: no TLSA record)"},
		{"nx.example", false, "not on every MX host (mx2.nx.example: "},
		{"pkix.example", false, "not on every MX host (mx2.pkix.example: no usable TLSA record among 1"},
		{"backup.example", false, "usable TLSA on mx2.backup.example; not on every MX host (mx1.backup.example: no TLSA record)"},
		{"insecure.example", false, "mx2.insecure.example: address records insecure"},
		{"fail.example", false, "mx2.fail.example: TLSA lookup failed"},
		{"many.example", false, "MX hosts after the first 10 not examined"},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			r := f.lookup(t, tc.domain)
			if r.Postfix != (Answer{Found, "dane"}) || r.Source != SourceDANE || r.DANE != DANEUsable || r.DANEAllMX != tc.all {
				t.Fatalf("postfix %+v source %v dane %v all %v; want dane, all %v", r.Postfix, r.Source, r.DANE, r.DANEAllMX, tc.all)
			}
			info, _, _ := f.d.Show(tc.domain)
			if !strings.Contains(info.DANEReason, tc.reasonHas) || info.Result.DANEAllMX != tc.all {
				t.Fatalf("show: reason %q all %v; want reason containing %q", info.DANEReason, info.Result.DANEAllMX, tc.reasonHas)
			}
			if r := f.lookup(t, tc.domain); r.Cache != CacheHit || r.DANEAllMX != tc.all {
				t.Fatalf("from the cache: %+v", r)
			}
		})
	}

	// The flag follows the DNS: the second host gets a TLSA record, and
	// after the refresh every MX host is usable; it loses it again.
	f.mxHost("mx2.notlsa.example", good)
	if r, _ := f.d.Refresh(t.Context(), "notlsa.example"); !r.DANEAllMX {
		t.Fatalf("after mx2 got TLSA: %+v", r)
	}
	f.mxHost("mx2.notlsa.example")
	if r, _ := f.d.Refresh(t.Context(), "notlsa.example"); r.DANEAllMX || r.Postfix.Text != "dane" {
		t.Fatalf("after mx2 lost TLSA: %+v", r)
	}
	// A non-usable answer never says all.
	f.stsDomain("sts.example", "1", enforce("mx.sts.example"), 3600)
	if r := f.lookup(t, "sts.example"); r.DANEAllMX || r.Source != SourceMTASTS {
		t.Fatalf("sts.example: %+v", r)
	}
}

// TestCacheFileAllMX: the flag survives a restart through cache_file; a
// file written without it (before it existed) is read, its usable DANE
// answered as "not every MX host" (the stricter merge), and the next
// lookup evaluates the domain's DANE again in the background.
func TestCacheFileAllMX(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.cache")
	f := newFixture(t, Config{CacheFile: path})
	f.daneDomain("all.example", 3600)
	f.mxSet("some.example", "mx1.some.example", "mx2.some.example")
	f.mxHost("mx1.some.example", "3 1 1 "+tlsaHash)
	f.mxHost("mx2.some.example")
	f.lookup(t, "all.example")
	f.lookup(t, "some.example")
	if err := f.d.Save(); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), `"domain":"all.example",`) || strings.Count(string(text), `"dane_all_mx":true`) != 1 || strings.Count(string(text), `"dane_all_mx":false`) != 1 {
		t.Fatalf("cache file:\n%s", text)
	}

	g := newFixture(t, Config{CacheFile: path})
	g.clock.t = f.clock.now().Add(10 * time.Second)
	for domain, all := range map[string]bool{"all.example": true, "some.example": false} {
		if r := g.lookup(t, domain); r.Cache != CacheHit || r.Postfix.Text != "dane" || r.DANEAllMX != all {
			t.Errorf("after restart %s: %+v, want all %v from the cache", domain, r, all)
		}
	}
	if n := g.dns.queries.Load(); n != 0 {
		t.Errorf("%d DNS queries after restart", n)
	}

	// The same file without dane_all_mx, as tlsgate wrote it before.
	var legacy strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(text)))
	for sc.Scan() {
		line := sc.Text()
		line = strings.Replace(line, `"dane_all_mx":true,`, "", 1)
		line = strings.Replace(line, `"dane_all_mx":false,`, "", 1)
		legacy.WriteString(line + "\n")
	}
	if strings.Contains(legacy.String(), "dane_all_mx") {
		t.Fatalf("legacy file still has the field:\n%s", legacy.String())
	}
	if err := os.WriteFile(path, []byte(legacy.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newFixture(t, Config{CacheFile: path})
	h.clock.t = f.clock.now().Add(10 * time.Second)
	h.daneDomain("all.example", 3600)
	if evs := h.eventsOf(EventCache); len(evs) != 0 {
		t.Fatalf("a file without dane_all_mx: %+v", evs)
	}
	r := h.lookup(t, "all.example")
	if r.Cache != CacheHit || r.Postfix.Text != "dane" || r.DANEAllMX {
		t.Fatalf("legacy all.example: %+v; want dane from the cache, not every MX known usable", r)
	}
	h.d.waitBackground()
	if r := h.lookup(t, "all.example"); r.Cache != CacheHit || !r.DANEAllMX {
		t.Fatalf("after the background refresh: %+v; want every MX usable", r)
	}
	// The flag, once known, is written again.
	if err := h.d.Save(); err != nil {
		t.Fatal(err)
	}
	if text, _ := os.ReadFile(path); !strings.Contains(string(text), `"dane_all_mx":true`) {
		t.Fatalf("after the refresh the file lacks the flag:\n%s", text)
	}
}
