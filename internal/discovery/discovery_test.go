package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/dns"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

func TestBareDomain(t *testing.T) {
	tests := []struct {
		in, want, errHas string
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM.", want: "example.com"},
		{in: "a-b.c0.example", want: "a-b.c0.example"},
		{in: ".example.com", errHas: "parent-domain"},
		{in: "[mx.example.com]", errHas: "explicit next hop"},
		{in: "[mx.example.com]:587", errHas: "explicit next hop"},
		{in: "mx.example.com:25", errHas: "host:port"},
		{in: "192.0.2.1", errHas: "IP address"},
		{in: "2001:db8::1", errHas: "IP address"},
		{in: "localhost", errHas: "single label"},
		{in: "", errHas: "empty"},
		{in: ".", errHas: "empty"},
		{in: "a..b", errHas: "empty label"},
		{in: "-a.b", errHas: "'-'"},
		{in: "a_b.example", errHas: "not allowed"},
		{in: "a b.example", errHas: "not allowed"},
		{in: strings.Repeat("a", 64) + ".example", errHas: "63"},
	}
	for _, tt := range tests {
		got, err := BareDomain(tt.in)
		if tt.errHas != "" {
			if err == nil || !errors.Is(err, ErrNotDomain) || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("BareDomain(%q) = %q, %v; want an ErrNotDomain containing %q", tt.in, got, err, tt.errHas)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("BareDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { BareDomain("mx.example.com") }); n != 0 {
		t.Errorf("BareDomain allocates %v times for a normalized key", n)
	}
}

func TestConfig(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, []byte("not a certificate"), 0o644)
	tests := []struct {
		name   string
		cfg    Config
		errHas string
	}{
		{name: "nothing enabled", cfg: Config{}, errHas: "neither mta_sts nor dane"},
		{name: "defaults", cfg: Config{DANE: true, MTASTS: true}},
		{name: "remote resolver with DANE", cfg: Config{DANE: true, Resolver: "192.0.2.53:53"}, errHas: "not on a loopback address"},
		{name: "remote resolver trusted", cfg: Config{DANE: true, Resolver: "192.0.2.53", TrustRemoteAD: true}},
		{name: "remote resolver, STS only", cfg: Config{MTASTS: true, Resolver: "192.0.2.53:53"}},
		{name: "IPv6 loopback", cfg: Config{DANE: true, Resolver: "[::1]:5353"}},
		{name: "resolver by name", cfg: Config{DANE: true, Resolver: "localhost:53"}, errHas: "not an IP address"},
		{name: "bad port", cfg: Config{DANE: true, Resolver: "127.0.0.1:x"}, errHas: "bad port"},
		{name: "ca file missing", cfg: Config{MTASTS: true, STSCAFile: "/nonexistent/ca.pem"}, errHas: "sts_ca_file"},
		{name: "ca file not PEM", cfg: Config{MTASTS: true, STSCAFile: ca}, errHas: "no PEM certificate"},
		{name: "cache dir missing", cfg: Config{MTASTS: true, CacheFile: "/nonexistent/dir/cache"}, errHas: "cache_file"},
		{name: "negative entries", cfg: Config{MTASTS: true, CacheEntries: -1}, errHas: "cache_entries"},
		{name: "negative bytes", cfg: Config{MTASTS: true, CacheBytes: -1}, errHas: "cache_bytes"},
		{name: "negative horizon", cfg: Config{MTASTS: true, RefreshHorizon: -time.Second}, errHas: "refresh_horizon"},
		{name: "bad selfcheck name", cfg: Config{DANE: true, SelfCheckName: "a..b"}, errHas: "selfcheck_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("New = %v; want error containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "defaults" {
				c := d.cfg
				if c.resolverAddr != "127.0.0.53:53" || c.CacheEntries != DefaultCacheEntries || c.CacheBytes != DefaultCacheBytes ||
					c.RefreshHorizon != DefaultRefreshHorizon || c.SelfCheckName != "." || !d.res.trustAD {
					t.Fatalf("defaults not applied: %+v", c)
				}
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	f := newFixture(t, Config{})
	f.daneDomain("dane.example", 3600)
	f.stsDomain("sts.example", "1", enforce("mx.sts.example", "*.Sts.Example.", "192.0.2.1"), 3600)
	f.daneDomain("both.example", 3600)
	f.stsDomain("both.example", "1", enforce("mx.both.example"), 3600)
	f.stsDomain("testing.example", "1", strings.Replace(enforce("mx.testing.example"), "enforce", "testing", 1), 3600)
	f.stsDomain("none.example", "1", "version: STSv1\nmode: none\nmax_age: 86400\n", 3600)
	// Unsigned domain with a TLSA record: never dane.
	f.dns.set("plain.example", dns.TypeMX, false, 3600, "plain.example. 300 IN MX 10 mx.plain.example.")
	f.dns.set("mx.plain.example", dns.TypeA, false, 3600, "mx.plain.example. 300 IN A 192.0.2.25")
	f.dns.set("_25._tcp.mx.plain.example", dns.TypeTLSA, false, 3600, "_25._tcp.mx.plain.example. 300 IN TLSA 3 1 1 "+tlsaHash)
	// Secure MX, but only PKIX usages: not usable for SMTP.
	f.daneDomain("pkix.example", 3600)
	f.dns.set("_25._tcp.mx.pkix.example", dns.TypeTLSA, true, 3600,
		"_25._tcp.mx.pkix.example. 300 IN TLSA 1 1 1 "+tlsaHash, "_25._tcp.mx.pkix.example. 300 IN TLSA 0 0 1 "+tlsaHash)
	// Secure MX and TLSA, insecure address: not usable.
	f.daneDomain("insecurea.example", 3600)
	f.dns.set("mx.insecurea.example", dns.TypeA, false, 3600, "mx.insecurea.example. 300 IN A 192.0.2.25")
	// Bogus MX (SERVFAIL) with an STS policy: TEMP; without: NOTFOUND.
	f.dns.fail("bogus.example", dns.TypeMX, DNSBogus)
	f.dns.fail("bogussts.example", dns.TypeMX, DNSBogus)
	f.stsDomain("bogussts.example", "1", enforce("mx.bogussts.example"), 3600)
	// Two MX hosts, the first failing, the second usable: dane.
	f.daneDomain("two.example", 3600)
	f.dns.set("two.example", dns.TypeMX, true, 3600, "two.example. 300 IN MX 5 mx0.two.example.", "two.example. 300 IN MX 10 mx.two.example.")
	f.dns.fail("_25._tcp.mx0.two.example", dns.TypeTLSA, DNSServFail)
	// Null MX.
	f.dns.set("nullmx.example", dns.TypeMX, true, 3600, "nullmx.example. 300 IN MX 0 .")
	// STS with only IP mx entries: invalid policy, no answer.
	f.stsDomain("iponly.example", "1", enforce("192.0.2.1"), 3600)

	secure := func(m string) Answer { return Answer{Kind: Found, Text: "secure match=" + m + " servername=hostname"} }
	tests := []struct {
		domain   string
		postfix  Answer
		sendmail Answer
		source   Source
		dane     DANEState
	}{
		{"dane.example", Answer{Found, "dane"}, Answer{}, SourceDANE, DANEUsable},
		{"sts.example", secure("mx.sts.example:.sts.example"), secure("mx.sts.example:.sts.example"), SourceMTASTS, DANENone},
		{"both.example", Answer{Found, "dane"}, secure("mx.both.example"), SourceDANE, DANEUsable},
		{"testing.example", Answer{}, Answer{}, SourceNone, DANENone},
		{"none.example", Answer{}, Answer{}, SourceNone, DANENone},
		{"plain.example", Answer{}, Answer{}, SourceNone, DANENone},
		{"pkix.example", Answer{}, Answer{}, SourceNone, DANENone},
		{"insecurea.example", Answer{}, Answer{}, SourceNone, DANENone},
		{"bogus.example", Answer{}, Answer{}, SourceNone, DANEUnknown},
		{"bogussts.example", Answer{Kind: Temp}, secure("mx.bogussts.example"), SourceNone, DANEUnknown},
		{"two.example", Answer{Found, "dane"}, Answer{}, SourceDANE, DANEUsable},
		{"nullmx.example", Answer{}, Answer{}, SourceNone, DANENone},
		{"iponly.example", Answer{}, Answer{}, SourceNone, DANENone},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			r := f.lookup(t, tt.domain)
			if r.Postfix != tt.postfix || r.Sendmail != tt.sendmail || r.Source != tt.source || r.DANE != tt.dane {
				t.Fatalf("Lookup(%s) = postfix %+v sendmail %+v source %v dane %v (reason %q); want %+v %+v %v %v",
					tt.domain, r.Postfix, r.Sendmail, r.Source, r.DANE, r.Reason, tt.postfix, tt.sendmail, tt.source, tt.dane)
			}
			if r.Cache != CacheMiss {
				t.Errorf("first lookup: cache %v, want miss", r.Cache)
			}
			if r.Postfix.Kind == NotFound && r.Reason == "" {
				t.Errorf("no reason for NOTFOUND")
			}
			// The second lookup is a hit unless the answer depends on a
			// DNS failure (TEMP, unknown DANE): those are never cached.
			r2 := f.lookup(t, tt.domain)
			wantCache := CacheHit
			if tt.dane == DANEUnknown {
				wantCache = CacheRefreshed
			}
			if r2.Cache != wantCache || r2.Postfix != r.Postfix {
				t.Fatalf("second lookup: %v %+v; want %v %+v", r2.Cache, r2.Postfix, wantCache, r.Postfix)
			}
		})
	}
	if n := len(f.eventsOf(EventFetchFailed)); n != 1 {
		t.Errorf("%d fetch-failed events, want 1 (iponly.example)", n)
	}
}

func TestRecentDANETemp(t *testing.T) {
	f := newFixture(t, Config{})
	f.daneDomain("dane.example", 600)
	if r := f.lookup(t, "dane.example"); r.Postfix.Text != "dane" {
		t.Fatalf("got %+v", r)
	}
	f.dns.fail("dane.example", dns.TypeMX, DNSTimeout)
	f.clock.advance(601 * time.Second)
	r := f.lookup(t, "dane.example")
	if r.Postfix.Kind != Temp || !strings.Contains(r.Reason, "DANE seen usable") || r.Change != 0 {
		t.Fatalf("after a DNS failure with DANE usable 10 min ago: %+v", r)
	}
	f.clock.advance(DefaultDANEGrace)
	r = f.lookup(t, "dane.example")
	if r.Postfix.Kind != NotFound || r.DANE != DANEUnknown {
		t.Fatalf("beyond the grace: %+v, want NOTFOUND", r)
	}
	// DNS comes back and says: no more TLSA.
	f.dns.set("dane.example", dns.TypeMX, true, 600, "dane.example. 300 IN MX 10 mx.dane.example.")
	f.dns.del("_25._tcp.mx.dane.example", dns.TypeTLSA)
	r = f.lookup(t, "dane.example")
	if r.Postfix.Kind != NotFound || r.DANE != DANENone || r.Change != ChangeDANEVanished {
		t.Fatalf("TLSA gone: %+v, want NOTFOUND with change dane-vanished", r)
	}
}

func TestSTSLifecycle(t *testing.T) {
	f := newFixture(t, Config{MTASTS: true, STSRetry: 10 * time.Minute})
	f.stsDomain("sts.example", "1", enforce("mx1.sts.example"), 300)
	r := f.lookup(t, "sts.example")
	if r.Postfix.Text != "secure match=mx1.sts.example servername=hostname" || r.PolicyID != "1" || r.Change != ChangeSTSNew {
		t.Fatalf("first: %+v", r)
	}
	if ev := f.eventsOf(EventChange); len(ev) != 1 || ev[0].Change != ChangeSTSNew {
		t.Fatalf("change events %+v", ev)
	}
	// TXT vanishes: the policy is still applied (RFC 8461 §3.1), stale.
	f.dns.del("_mta-sts.sts.example", dns.TypeTXT)
	f.clock.advance(301 * time.Second)
	r = f.lookup(t, "sts.example")
	if r.Postfix.Text != "secure match=mx1.sts.example servername=hostname" || r.Cache != CacheStale || r.Change != 0 {
		t.Fatalf("TXT vanished: %+v", r)
	}
	if f.fetch.fetches.Load() != 1 {
		t.Fatalf("%d fetches, want 1", f.fetch.fetches.Load())
	}
	// A new id: refetch, new answer, one change event.
	f.stsDomain("sts.example", "2", enforce("mx2.sts.example"), 300)
	f.clock.advance(601 * time.Second)
	r = f.lookup(t, "sts.example")
	if r.Postfix.Text != "secure match=mx2.sts.example servername=hostname" || r.PolicyID != "2" || r.Change != ChangeSTSNew || r.Cache != CacheRefreshed {
		t.Fatalf("new id: %+v", r)
	}
	if f.fetch.fetches.Load() != 2 || len(f.eventsOf(EventChange)) != 2 {
		t.Fatalf("fetches %d, change events %d; want 2, 2", f.fetch.fetches.Load(), len(f.eventsOf(EventChange)))
	}
	// Another id whose fetch fails: the old policy stays (stale), no
	// fetch again before the back-off.
	f.dns.set("_mta-sts.sts.example", dns.TypeTXT, false, 300, "_mta-sts.sts.example. 300 IN TXT \"v=STSv1; id=3\"")
	f.fetch.fail("sts.example", mtasts.FetchStatus)
	f.clock.advance(301 * time.Second)
	r = f.lookup(t, "sts.example")
	if r.Postfix.Text != "secure match=mx2.sts.example servername=hostname" || r.Cache != CacheStale || r.PolicyID != "2" ||
		!strings.Contains(r.Reason, "applies until it expires") {
		t.Fatalf("failed refetch: %+v", r)
	}
	f.clock.advance(301 * time.Second)
	f.lookup(t, "sts.example")
	if n := f.fetch.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3 (no refetch before STSRetry)", n)
	}
	// At max_age the policy goes, and with it the answer.
	f.clock.advance(86400 * time.Second)
	r = f.lookup(t, "sts.example")
	if r.Postfix.Kind != NotFound || r.Change != ChangeSTSGone {
		t.Fatalf("after max_age: %+v", r)
	}
	st := f.d.Stats()
	if st.FetchFailures[mtasts.FetchStatus] < 2 || st.Fetches < 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFetchFailureNothingCached(t *testing.T) {
	f := newFixture(t, Config{MTASTS: true})
	f.dns.set("_mta-sts.x.example", dns.TypeTXT, false, 3600, "_mta-sts.x.example. 300 IN TXT \"v=STSv1; id=1\"")
	for _, k := range []mtasts.FetchErrorKind{mtasts.FetchRedirect, mtasts.FetchStatus, mtasts.FetchContentType, mtasts.FetchTooLarge, mtasts.FetchTLS} {
		f.fetch.fail("x.example", k)
		r, err := f.d.Refresh(context.Background(), "x.example")
		if err != nil || r.Postfix.Kind != NotFound || r.Sendmail.Kind != NotFound || !strings.Contains(r.Reason, k.String()) {
			t.Fatalf("%v: %+v %v", k, r, err)
		}
	}
	// Cached as "no policy" until the back-off ends, not until the TXT
	// TTL.
	n := f.fetch.fetches.Load()
	if r := f.lookup(t, "x.example"); r.Cache != CacheHit {
		t.Fatalf("within back-off: %+v", r)
	}
	f.fetch.set("x.example", enforce("mx.x.example"))
	f.clock.advance(DefaultSTSRetry + time.Second)
	if r := f.lookup(t, "x.example"); r.Postfix.Kind != Found || f.fetch.fetches.Load() != n+1 {
		t.Fatalf("after back-off: %+v, fetches %d", r, f.fetch.fetches.Load())
	}
}

func TestTempNeverCached(t *testing.T) {
	f := newFixture(t, Config{})
	f.dns.fail("t.example", dns.TypeMX, DNSServFail)
	f.stsDomain("t.example", "1", enforce("mx.t.example"), 3600)
	for i := 0; i < 3; i++ {
		q := f.dns.queries.Load()
		r := f.lookup(t, "t.example")
		if r.Postfix.Kind != Temp || r.Cache == CacheHit || f.dns.queries.Load() == q {
			t.Fatalf("lookup %d: %+v, %d queries; want TEMP from a new DNS lookup", i, r, f.dns.queries.Load()-q)
		}
	}
	if f.fetch.fetches.Load() != 1 {
		t.Fatalf("%d fetches: the policy itself is cached, want 1", f.fetch.fetches.Load())
	}
	f.dns.set("t.example", dns.TypeMX, false, 3600, "t.example. 300 IN MX 10 mx.t.example.")
	if r := f.lookup(t, "t.example"); r.Postfix.Kind != Found || r.Source != SourceMTASTS {
		t.Fatalf("after DNS recovered: %+v", r)
	}
	if r := f.lookup(t, "t.example"); r.Cache != CacheHit {
		t.Fatalf("then cached: %+v", r)
	}
}

func TestKeysRefused(t *testing.T) {
	f := newFixture(t, Config{})
	for _, k := range []string{".example.com", "[mx.example.com]", "[mx.example.com]:25", "mx.example.com:25", "192.0.2.1", "[2001:db8::1]"} {
		if _, err := f.d.Lookup(context.Background(), k); !errors.Is(err, ErrNotDomain) {
			t.Errorf("Lookup(%q) = %v; want ErrNotDomain", k, err)
		}
	}
	if f.dns.queries.Load() != 0 {
		t.Errorf("%d DNS queries for refused keys", f.dns.queries.Load())
	}
}

func TestSingleflight(t *testing.T) {
	f := newFixture(t, Config{MTASTS: true})
	f.stsDomain("sf.example", "1", enforce("mx.sf.example"), 3600)
	f.fetch.gate = make(chan struct{})
	const n = 50
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = f.lookup(t, "sf.example")
		}()
	}
	// Let them all pile up on the one fetch.
	deadline := time.Now().Add(5 * time.Second)
	for f.fetch.fetches.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(f.fetch.gate)
	wg.Wait()
	if got := f.fetch.fetches.Load(); got != 1 {
		t.Fatalf("%d fetches for %d concurrent lookups, want 1", got, n)
	}
	for _, r := range results {
		if r.Postfix.Text != "secure match=mx.sf.example servername=hostname" {
			t.Fatalf("result %+v", r)
		}
	}
}

func TestLookupCanceled(t *testing.T) {
	f := newFixture(t, Config{MTASTS: true})
	f.stsDomain("slow.example", "1", enforce("mx.slow.example"), 3600)
	f.fetch.gate = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.d.Lookup(ctx, "slow.example"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup = %v, want the context's deadline", err)
	}
	close(f.fetch.gate)
	// The discovery went on and is cached.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok, _ := f.d.Show("slow.example"); ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the canceled lookup's discovery was not cached")
}

func TestEvictionBounds(t *testing.T) {
	f := newFixture(t, Config{MTASTS: true, CacheEntries: 100})
	for i := range 250 {
		f.clock.advance(time.Second)
		f.lookup(t, fmt.Sprintf("d%d.example", i))
	}
	st := f.d.Stats()
	if st.Entries > 100 || st.Evictions < 150 {
		t.Fatalf("entries %d, evictions %d; want <= 100 and >= 150", st.Entries, st.Evictions)
	}
	// The most recent survive, the oldest went.
	if _, ok, _ := f.d.Show("d249.example"); !ok {
		t.Error("the most recent domain was evicted")
	}
	if _, ok, _ := f.d.Show("d0.example"); ok {
		t.Error("the oldest domain was kept")
	}

	f = newFixture(t, Config{MTASTS: true, CacheBytes: 20000})
	for i := range 200 {
		f.clock.advance(time.Second)
		f.stsDomain(fmt.Sprintf("s%d.example", i), "1", enforce(fmt.Sprintf("mx.s%d.example", i)), 3600)
		f.lookup(t, fmt.Sprintf("s%d.example", i))
	}
	if st := f.d.Stats(); st.Bytes > 20000 || st.Entries >= 200 || st.Evictions == 0 {
		t.Fatalf("bytes %d entries %d evictions %d; want within 20000 bytes", st.Bytes, st.Entries, st.Evictions)
	}
}

func TestCacheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.cache")
	f := newFixture(t, Config{CacheFile: path})
	f.daneDomain("dane.example", 3600)
	f.stsDomain("sts.example", "7", enforce("mx.sts.example", "*.sts.example"), 3600)
	f.lookup(t, "dane.example")
	f.lookup(t, "sts.example")
	f.lookup(t, "nothing.example")
	if err := f.d.Save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v, want mode 0600", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".discovery.cache.*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// A new Discoverer on the same file answers without network.
	g := newFixture(t, Config{CacheFile: path})
	g.clock.t = f.clock.now().Add(10 * time.Second)
	g.dns.fail(".", dns.TypeDNSKEY, DNSNetwork)
	for domain, want := range map[string]string{"dane.example": "dane", "sts.example": "secure match=mx.sts.example:.sts.example servername=hostname"} {
		r := g.lookup(t, domain)
		if r.Postfix.Text != want || r.Cache != CacheHit {
			t.Errorf("after restart %s: %+v, want %q from the cache", domain, r, want)
		}
	}
	if r := g.lookup(t, "sts.example"); r.PolicyID != "7" {
		t.Errorf("policy id %q after restart", r.PolicyID)
	}
	if g.fetch.fetches.Load() != 0 {
		t.Errorf("%d fetches after restart", g.fetch.fetches.Load())
	}

	// A corrupt file is moved aside, and the cache starts empty.
	os.WriteFile(path, []byte("garbage\n"), 0o600)
	h := newFixture(t, Config{CacheFile: path})
	if evs := h.eventsOf(EventCache); len(evs) != 1 || !strings.Contains(evs[0].Err.Error(), ".bad") {
		t.Fatalf("events %+v, want one cache event naming the .bad file", evs)
	}
	if st := h.d.Stats(); st.Entries != 0 {
		t.Fatalf("%d entries from a corrupt file", st.Entries)
	}
	if _, err := os.Stat(path + ".bad"); err != nil {
		t.Fatalf("corrupt file not kept: %v", err)
	}
}

func TestSelfCheck(t *testing.T) {
	f := newFixture(t, Config{})
	f.daneDomain("dane.example", 3600)
	f.dns.set(".", dns.TypeDNSKEY, false, 3600, ". 3600 IN DNSKEY 257 3 13 AAAA")
	err := f.d.SelfCheck(context.Background())
	if err == nil || !strings.Contains(err.Error(), "without the AD bit") || !strings.Contains(err.Error(), "DANE is off") {
		t.Fatalf("SelfCheck = %v", err)
	}
	if on, e := f.d.DANEStatus(); on || e == nil {
		t.Fatalf("DANEStatus = %v, %v", on, e)
	}
	if r := f.lookup(t, "dane.example"); r.Postfix.Kind != NotFound || r.DANE != DANEOff {
		t.Fatalf("with DANE off: %+v", r)
	}
	if n := len(f.eventsOf(EventSelfCheck)); n != 1 {
		t.Fatalf("%d self-check events, want 1", n)
	}
	// The resolver is fixed; 5 minutes later a lookup checks again and
	// DANE comes back for cached domains too.
	f.dns.set(".", dns.TypeDNSKEY, true, 3600, ". 3600 IN DNSKEY 257 3 13 AAAA")
	f.clock.advance(selfCheckRetry + time.Second)
	f.lookup(t, "dane.example") // starts the self-check in the background
	f.d.waitBackground()
	if r := f.lookup(t, "dane.example"); r.Postfix.Text != "dane" {
		t.Fatalf("after the resolver recovered: %+v", r)
	}
	if ev := f.eventsOf(EventSelfCheck); len(ev) != 2 || ev[1].Err != nil {
		t.Fatalf("self-check events %+v", ev)
	}
}

func TestShowRefreshPurge(t *testing.T) {
	f := newFixture(t, Config{})
	f.stsDomain("sts.example", "1", enforce("mx.sts.example"), 3600)
	if _, ok, err := f.d.Show("sts.example"); ok || err != nil {
		t.Fatalf("Show before lookup: %v %v", ok, err)
	}
	f.lookup(t, "sts.example")
	info, ok, err := f.d.Show("STS.example.")
	if !ok || err != nil || info.STSPolicyID != "1" || info.STSPolicy == nil || info.STSRecordID != "1" ||
		info.Result.Postfix.Kind != Found || info.DANE != DANENone {
		t.Fatalf("Show: %+v %v %v", info, ok, err)
	}
	n := f.fetch.fetches.Load()
	r, err := f.d.Refresh(context.Background(), "sts.example")
	if err != nil || r.Cache != CacheRefreshed || f.fetch.fetches.Load() != n+1 {
		t.Fatalf("Refresh: %+v %v, fetches %d", r, err, f.fetch.fetches.Load())
	}
	if ok, err := f.d.Purge("sts.example"); !ok || err != nil {
		t.Fatalf("Purge: %v %v", ok, err)
	}
	if r := f.lookup(t, "sts.example"); r.Cache != CacheMiss {
		t.Fatalf("after Purge: %+v", r)
	}
	if _, _, err := f.d.Show(".sts.example"); !errors.Is(err, ErrNotDomain) {
		t.Fatalf("Show(.parent) = %v", err)
	}
}

func TestRefreshAhead(t *testing.T) {
	f := newFixture(t, Config{MTASTS: true, RefreshHorizon: 30 * time.Minute})
	f.stsDomain("hot.example", "1", enforce("mx.hot.example"), 3600)
	f.stsDomain("cold.example", "1", enforce("mx.cold.example"), 3600)
	f.lookup(t, "hot.example")
	f.lookup(t, "cold.example")
	q := f.dns.queries.Load()
	// cold.example is not looked up again; hot.example is, now and then.
	for range 5 {
		f.clock.advance(10 * time.Minute)
		if r := f.lookup(t, "hot.example"); r.Cache != CacheHit {
			t.Fatalf("hot.example: %+v", r)
		}
		f.d.sweep()
		f.d.waitBackground()
	}
	// 50 min in: hot was refreshed ahead (3/4 of the hour), cold not.
	infoHot, _, _ := f.d.Show("hot.example")
	infoCold, _, _ := f.d.Show("cold.example")
	if !infoHot.STSRecordChecked.After(infoCold.STSRecordChecked) {
		t.Fatalf("hot checked %v, cold %v: want hot refreshed ahead", infoHot.STSRecordChecked, infoCold.STSRecordChecked)
	}
	f.clock.advance(2 * time.Hour)
	f.d.sweep()
	f.d.waitBackground()
	if f.dns.queries.Load()-q > 6 {
		t.Fatalf("%d queries: domains not used within the horizon must not be refreshed", f.dns.queries.Load()-q)
	}
	f.clock.advance(25 * time.Hour) // policies expired too
	f.d.sweep()
	if _, ok, _ := f.d.Show("cold.example"); ok {
		t.Fatal("cold.example kept although expired and unused")
	}
}

func TestHitPathAllocs(t *testing.T) {
	f := newFixture(t, Config{})
	f.daneDomain("dane.example", 3600)
	f.stsDomain("sts.example", "1", enforce("mx.sts.example"), 3600)
	ctx := context.Background()
	for _, d := range []string{"dane.example", "sts.example", "nothing.example"} {
		f.lookup(t, d)
		if n := testing.AllocsPerRun(200, func() { f.d.Lookup(ctx, d) }); n != 0 {
			t.Errorf("cache hit for %s allocates %v times", d, n)
		}
	}
}

// TestCacheEntrySize: a cached domain without MTA-STS costs a record of
// 64 bytes and an entry of 32 (Go's size classes): the cache holds up to
// hundreds of thousands, and the benchmark's memory target counts on it.
func TestCacheEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(record{}); n > 64 {
		t.Errorf("record is %d bytes, want at most 64", n)
	}
	if n := unsafe.Sizeof(entry{}); n > 32 {
		t.Errorf("entry is %d bytes, want at most 32", n)
	}
}
