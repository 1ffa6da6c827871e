package discovery

// Tests against real DNS and HTTPS: the dnslab lab's nsd (zones signed by
// ldns-signzone at test start), validating unbound on 127.0.0.53 and an
// HTTPS server for mta-sts.<zone>, inside a private network namespace.

import (
	"context"
	"crypto/x509/pkix"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
	"github.com/tlsgate/tlsgate/internal/lab/dnslab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

func TestMain(m *testing.M) { dnslab.Main(m) }

// labCerts are the MX certificate whose TLSA records the DANE zones
// publish, and another one for wrong records.
type labCerts struct{ mx, other *testpki.Cert }

func newLabCerts(t testing.TB) labCerts {
	t.Helper()
	dir := t.TempDir()
	ca, err := testpki.Issue(dir, testpki.Options{Name: "mxca", KeyType: testpki.ECDSAP256, IsCA: true, Subject: pkix.Name{CommonName: "MX CA"}})
	if err != nil {
		t.Fatal(err)
	}
	mx, err := testpki.Issue(dir, testpki.Options{Name: "mx", KeyType: testpki.ECDSAP256, Signer: ca, Subject: pkix.Name{CommonName: "mx"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.Issue(dir, testpki.Options{Name: "other", KeyType: testpki.ECDSAP256, Signer: ca, Subject: pkix.Name{CommonName: "other"}})
	if err != nil {
		t.Fatal(err)
	}
	return labCerts{mx, other}
}

// mxZone returns the records of a zone with one MX host mx.<zone> at ip,
// plus extra.
func mxZone(zone, ip string, extra ...string) []string {
	return append(dnslab.MXHost(zone, "mx."+zone, ip), extra...)
}

func (c labCerts) tlsa(zone string) string { return dnslab.TLSA311("mx."+zone, c.mx.Cert) }

// stsZone is an unsigned zone with an MTA-STS record (id) and one MX.
func stsZone(name, id, ip string) dnslab.Zone {
	return dnslab.Zone{Name: name, Signing: dnslab.Unsigned,
		Records: mxZone(name, ip, dnslab.STSRecords(name, id)...)}
}

// labDiscoverer is a Discoverer on the lab with a settable clock.
func labDiscoverer(t testing.TB, l *dnslab.Lab, cfg Config) (*Discoverer, *clock) {
	t.Helper()
	cfg.MTASTS, cfg.DANE = true, true
	if cfg.Resolver == "" {
		cfg.Resolver = dnslab.ResolverAddr
	}
	cfg.STSCAFile = l.CA.CertFile
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	d.now = c.now
	return d, c
}

func labLookup(t testing.TB, d *Discoverer, domain string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := d.Lookup(ctx, domain)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", domain, err)
	}
	return r
}

func TestLabAnswers(t *testing.T) {
	certs := newLabCerts(t)
	pkix, err := dnslab.TLSARecord("mx.danepkix.test", 25, 1, 1, 1, certs.mx.Cert)
	if err != nil {
		t.Fatal(err)
	}
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{
		{Name: "dane.test", Records: mxZone("dane.test", dnslab.SinkIP(0), certs.tlsa("dane.test"))},
		// The TLSA record matches another certificate: still "dane" here;
		// Postfix refuses the MX itself ("Server certificate not verified").
		{Name: "danewrong.test", Records: mxZone("danewrong.test", dnslab.SinkIP(1), dnslab.TLSA311("mx.danewrong.test", certs.other.Cert))},
		{Name: "danepkix.test", Records: mxZone("danepkix.test", dnslab.SinkIP(2), pkix)},
		{Name: "plain.test", Signing: dnslab.Unsigned, Records: mxZone("plain.test", dnslab.SinkIP(3), certs.tlsa("plain.test"))},
		{Name: "bogus.test", Signing: dnslab.Bogus, Records: mxZone("bogus.test", dnslab.SinkIP(4), certs.tlsa("bogus.test"))},
		{Name: "bogussts.test", Signing: dnslab.Bogus, Records: mxZone("bogussts.test", dnslab.SinkIP(5), dnslab.STSRecords("bogussts.test", "1")...)},
		{Name: "expired.test", Signing: dnslab.Expired, Records: mxZone("expired.test", dnslab.SinkIP(6), certs.tlsa("expired.test"))},
		stsZone("sts.test", "20260101", dnslab.SinkIP(7)),
		stsZone("ststesting.test", "1", dnslab.SinkIP(8)),
		stsZone("sts302.test", "1", dnslab.SinkIP(9)),
		stsZone("sts404.test", "1", dnslab.SinkIP(9)),
		stsZone("ststype.test", "1", dnslab.SinkIP(9)),
		stsZone("stsbig.test", "1", dnslab.SinkIP(9)),
		stsZone("ststls.test", "1", dnslab.SinkIP(9)),
		{Name: "stsdane.test", Records: mxZone("stsdane.test", dnslab.SinkIP(10), append(dnslab.STSRecords("stsdane.test", "1"), certs.tlsa("stsdane.test"))...)},
	}})
	l.SetPolicy("bogussts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.bogussts.test")})
	l.SetPolicy("sts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test", "*.STS.test", "192.0.2.25")})
	l.SetPolicy("ststesting.test", dnslab.Response{Body: dnslab.Policy("testing", 86400, "mx.ststesting.test")})
	l.SetPolicy("sts302.test", dnslab.Response{Status: 302, Location: "https://mta-sts.sts.test/.well-known/mta-sts.txt"})
	l.SetPolicy("sts404.test", dnslab.Response{Status: 404, Body: "not here"})
	l.SetPolicy("ststype.test", dnslab.Response{ContentType: "text/html", Body: dnslab.Policy("enforce", 86400, "mx.ststype.test")})
	l.SetPolicy("stsbig.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsbig.test") + strings.Repeat("x: y\n", 65<<10/5)})
	l.SetPolicy("ststls.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.ststls.test"), CertName: "www.ststls.test"})
	l.SetPolicy("stsdane.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsdane.test")})

	var mu sync.Mutex
	var events []Event
	d, _ := labDiscoverer(t, l, Config{OnEvent: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
	if err := d.SelfCheck(context.Background()); err != nil {
		t.Fatalf("SelfCheck against the lab's unbound: %v", err)
	}

	secure := func(m string) Answer { return Answer{Kind: Found, Text: "secure match=" + m + " servername=hostname"} }
	none := Answer{}
	tests := []struct {
		domain    string
		postfix   Answer
		sendmail  Answer
		dane      DANEState
		reasonHas string
	}{
		{"dane.test", Answer{Found, "dane"}, none, DANEUsable, ""},
		{"danewrong.test", Answer{Found, "dane"}, none, DANEUsable, ""},
		{"danepkix.test", none, none, DANENone, "no usable TLSA record"},
		{"plain.test", none, none, DANENone, "insecure"},
		{"bogus.test", none, none, DANEUnknown, "bogus"},
		{"bogussts.test", Answer{Kind: Temp}, secure("mx.bogussts.test"), DANEUnknown, "MTA-STS policy in mode enforce"},
		{"expired.test", none, none, DANEUnknown, "MX lookup failed"},
		{"sts.test", secure("mx.sts.test:.sts.test"), secure("mx.sts.test:.sts.test"), DANENone, ""},
		{"ststesting.test", none, none, DANENone, "mode testing"},
		{"sts302.test", none, none, DANENone, "redirect"},
		{"sts404.test", none, none, DANENone, "HTTP 404"},
		{"ststype.test", none, none, DANENone, "content_type"},
		{"stsbig.test", none, none, DANENone, "too_large"},
		{"ststls.test", none, none, DANENone, "tls"},
		{"stsdane.test", Answer{Found, "dane"}, secure("mx.stsdane.test"), DANEUsable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			r := labLookup(t, d, tt.domain)
			if r.Postfix != tt.postfix || r.Sendmail != tt.sendmail || r.DANE != tt.dane || !strings.Contains(r.Reason, tt.reasonHas) {
				t.Fatalf("%s: postfix %+v sendmail %+v dane %v reason %q\nwant %+v %+v %v reason containing %q",
					tt.domain, r.Postfix, r.Sendmail, r.DANE, r.Reason, tt.postfix, tt.sendmail, tt.dane, tt.reasonHas)
			}
			if r.Cache != CacheMiss {
				t.Errorf("cache %v, want miss", r.Cache)
			}
		})
	}
	// A domain that publishes nothing.
	if r := labLookup(t, d, "nothing.test"); r.Postfix.Kind != NotFound || r.DANE != DANENone {
		t.Errorf("nothing.test: %+v", r)
	}
	st := d.Stats()
	if st.DNSFailures[DNSBogus] == 0 || st.FetchFailures[mtasts.FetchRedirect] != 1 || st.FetchFailures[mtasts.FetchTLS] != 1 ||
		st.FetchFailures[mtasts.FetchTooLarge] != 1 || st.FetchFailures[mtasts.FetchContentType] != 1 || st.FetchFailures[mtasts.FetchStatus] != 1 {
		t.Errorf("stats %+v", st)
	}
	// The redirect was not followed: sts.test was fetched once, for itself.
	if n := l.PolicyHits("sts.test"); n != 1 {
		t.Errorf("sts.test policy fetched %d times, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	changes := 0
	for _, e := range events {
		if e.Kind == EventChange {
			changes++
		}
	}
	// dane, danewrong, sts, stsdane (dane + sts-new, one event),
	// bogussts (sts-new), ststesting (sts-new: a policy, in mode testing).
	if changes != 6 {
		t.Errorf("%d change events, want 6: %+v", changes, events)
	}
}

func TestLabSTSCache(t *testing.T) {
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{stsZone("sts.test", "1", dnslab.SinkIP(0))}})
	l.SetPolicy("sts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test")})
	d, c := labDiscoverer(t, l, Config{STSRetry: 10 * time.Minute})
	want1 := "secure match=mx.sts.test servername=hostname"
	if r := labLookup(t, d, "sts.test"); r.Postfix.Text != want1 || r.PolicyID != "1" {
		t.Fatalf("first: %+v", r)
	}

	// The TXT record vanishes: the cached policy is served (stale), no
	// fetch.
	if err := l.SetZone(dnslab.Zone{Name: "sts.test", Signing: dnslab.Unsigned, Records: mxZone("sts.test", dnslab.SinkIP(0))}); err != nil {
		t.Fatal(err)
	}
	c.advance(301 * time.Second)
	r := labLookup(t, d, "sts.test")
	if r.Postfix.Text != want1 || r.Cache != CacheStale || !strings.Contains(r.Reason, "cached policy applies") {
		t.Fatalf("TXT vanished: %+v", r)
	}
	if n := l.PolicyHits("sts.test"); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}

	// It comes back with a new id and a new policy: refetched.
	if err := l.SetZone(stsZone("sts.test", "2", dnslab.SinkIP(0))); err != nil {
		t.Fatal(err)
	}
	l.SetPolicy("sts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test", "mx2.sts.test")})
	c.advance(301 * time.Second)
	r = labLookup(t, d, "sts.test")
	if r.Postfix.Text != "secure match=mx.sts.test:mx2.sts.test servername=hostname" || r.PolicyID != "2" || r.Change != ChangeSTSNew {
		t.Fatalf("id change: %+v", r)
	}
	if n := l.PolicyHits("sts.test"); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	if r := labLookup(t, d, "sts.test"); r.Cache != CacheHit {
		t.Fatalf("then: %+v", r)
	}

	// Another id, but now the server answers 404: the policy of id 2 stays
	// until its max_age.
	if err := l.SetZone(stsZone("sts.test", "3", dnslab.SinkIP(0))); err != nil {
		t.Fatal(err)
	}
	l.SetPolicy("sts.test", dnslab.Response{Status: 404})
	c.advance(301 * time.Second)
	r = labLookup(t, d, "sts.test")
	if r.PolicyID != "2" || r.Cache != CacheStale || r.Postfix.Kind != Found || !strings.Contains(r.Reason, "404") {
		t.Fatalf("failed refetch: %+v", r)
	}
	c.advance(86400 * time.Second)
	if r := labLookup(t, d, "sts.test"); r.Postfix.Kind != NotFound || r.Change != ChangeSTSGone {
		t.Fatalf("after max_age with the server failing: %+v", r)
	}
}

func TestLabRestartFromCacheFile(t *testing.T) {
	certs := newLabCerts(t)
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{
		{Name: "dane.test", Records: mxZone("dane.test", dnslab.SinkIP(0), certs.tlsa("dane.test"))},
		stsZone("sts.test", "1", dnslab.SinkIP(1)),
	}})
	l.SetPolicy("sts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test")})
	path := filepath.Join(t.TempDir(), "discovery.cache")
	d, _ := labDiscoverer(t, l, Config{CacheFile: path})
	before := map[string]Result{}
	for _, dom := range []string{"dane.test", "sts.test", "nothing.test"} {
		before[dom] = labLookup(t, d, dom)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run saving at exit: %v", err)
	}

	// The network is down: no resolver, no HTTPS.
	if err := l.StopResolver(); err != nil {
		t.Fatal(err)
	}
	if err := l.StopSTS(); err != nil {
		t.Fatal(err)
	}
	var evs []Event
	d2, _ := labDiscoverer(t, l, Config{CacheFile: path, OnEvent: func(e Event) { evs = append(evs, e) }})
	if err := d2.SelfCheck(context.Background()); err == nil {
		t.Fatal("SelfCheck passed with the resolver stopped")
	}
	for dom, want := range before {
		r := labLookup(t, d2, dom)
		if r.Postfix != want.Postfix || r.Sendmail != want.Sendmail || r.Cache != CacheHit {
			t.Errorf("after restart %s: %+v, want %+v from the cache", dom, r, want.Postfix)
		}
	}
	if st := d2.Stats(); st.Fetches != 0 {
		t.Errorf("%d fetches after restart", st.Fetches)
	}
}

func TestLabSingleflight(t *testing.T) {
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{stsZone("sts.test", "1", dnslab.SinkIP(0))}})
	l.SetPolicy("sts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test"), Delay: 300 * time.Millisecond})
	d, _ := labDiscoverer(t, l, Config{})
	const n = 20
	var wg sync.WaitGroup
	res := make([]Result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = labLookup(t, d, "sts.test")
		}()
	}
	wg.Wait()
	if hits := l.PolicyHits("sts.test"); hits != 1 {
		t.Fatalf("the HTTPS server saw %d requests for %d concurrent lookups, want 1", hits, n)
	}
	for _, r := range res {
		if r.Postfix.Text != "secure match=mx.sts.test servername=hostname" {
			t.Fatalf("result %+v", r)
		}
	}
}

func TestLabSelfCheckNonValidating(t *testing.T) {
	certs := newLabCerts(t)
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{
		{Name: "dane.test", Records: mxZone("dane.test", dnslab.SinkIP(0), certs.tlsa("dane.test"))},
	}})
	// nsd answers authoritatively and validates nothing: no AD bit.
	d, _ := labDiscoverer(t, l, Config{Resolver: dnslab.AuthAddr})
	err := d.SelfCheck(context.Background())
	if err == nil || !strings.Contains(err.Error(), "without the AD bit") {
		t.Fatalf("SelfCheck against nsd = %v, want the AD-bit error", err)
	}
	if r := labLookup(t, d, "dane.test"); r.Postfix.Kind != NotFound || r.DANE != DANEOff {
		t.Fatalf("with DANE off: %+v", r)
	}
	// The same name validates through unbound; a self-check name of the
	// lab passes too.
	d2, _ := labDiscoverer(t, l, Config{SelfCheckName: "dane.test"})
	if err := d2.SelfCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLabTempNeverCached(t *testing.T) {
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{
		{Name: "bogussts.test", Signing: dnslab.Bogus, Records: mxZone("bogussts.test", dnslab.SinkIP(0), dnslab.STSRecords("bogussts.test", "1")...)},
	}})
	l.SetPolicy("bogussts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.bogussts.test")})
	d, _ := labDiscoverer(t, l, Config{})
	for i := range 3 {
		q := d.Stats().DNSQueries
		r := labLookup(t, d, "bogussts.test")
		if r.Postfix.Kind != Temp || r.Cache == CacheHit || d.Stats().DNSQueries == q {
			t.Fatalf("lookup %d: %+v; want TEMP from a new DNS lookup", i, r)
		}
	}
	// The zone is repaired: the policy answer, then cached.
	if err := l.SetZone(dnslab.Zone{Name: "bogussts.test", Records: mxZone("bogussts.test", dnslab.SinkIP(0), dnslab.STSRecords("bogussts.test", "1")...)}); err != nil {
		t.Fatal(err)
	}
	if r := labLookup(t, d, "bogussts.test"); r.Postfix.Text != "secure match=mx.bogussts.test servername=hostname" || r.DANE != DANENone {
		t.Fatalf("repaired: %+v", r)
	}
	if r := labLookup(t, d, "bogussts.test"); r.Cache != CacheHit {
		t.Fatalf("then: %+v", r)
	}
	if n := l.PolicyHits("bogussts.test"); n != 1 {
		t.Fatalf("%d policy fetches, want 1 (the policy is cached, only TEMP is not)", n)
	}
}

func TestLabRecentDANE(t *testing.T) {
	certs := newLabCerts(t)
	recs := mxZone("dane.test", dnslab.SinkIP(0), certs.tlsa("dane.test"))
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{{Name: "dane.test", Records: recs}}})
	d, c := labDiscoverer(t, l, Config{DANEGrace: time.Hour})
	if r := labLookup(t, d, "dane.test"); r.Postfix.Text != "dane" {
		t.Fatalf("first: %+v", r)
	}
	// The MX signatures go bogus.
	if err := l.SetZone(dnslab.Zone{Name: "dane.test", Signing: dnslab.Bogus, Records: recs}); err != nil {
		t.Fatal(err)
	}
	c.advance(301 * time.Second)
	if r := labLookup(t, d, "dane.test"); r.Postfix.Kind != Temp || !strings.Contains(r.Reason, "DANE seen usable") {
		t.Fatalf("bogus after recent DANE: %+v, want TEMP", r)
	}
	c.advance(2 * time.Hour)
	if r := labLookup(t, d, "dane.test"); r.Postfix.Kind != NotFound || r.DANE != DANEUnknown {
		t.Fatalf("bogus beyond the grace: %+v, want NOTFOUND", r)
	}
	// Unsigned now (TLSA still there): never dane.
	if err := l.SetZone(dnslab.Zone{Name: "dane.test", Signing: dnslab.Unsigned, Records: recs}); err != nil {
		t.Fatal(err)
	}
	if r := labLookup(t, d, "dane.test"); r.Postfix.Kind != NotFound || r.DANE != DANENone || r.Change != ChangeDANEVanished {
		t.Fatalf("unsigned: %+v", r)
	}
}

// TestLabDANEAllMX: through real DNSSEC, a domain whose two MX hosts both
// have TLSA 3 1 1 records says every MX is usable; one whose second MX
// host has none (a secure zone without TLSA) or lies in an unsigned zone
// (insecure addresses, TLSA records ignored) says not, and is still
// "dane"; a TLSA record added to the second host is seen at the refresh.
func TestLabDANEAllMX(t *testing.T) {
	certs := newLabCerts(t)
	twoMX := func(zone, second string, extra ...string) []string {
		return append([]string{
			zone + ". IN MX 10 mx." + zone + ".",
			zone + ". IN MX 20 " + second + ".",
			dnslab.A("mx."+zone, dnslab.SinkIP(0)),
			certs.tlsa(zone),
		}, extra...)
	}
	l := dnslab.Start(t, dnslab.Options{Zones: []dnslab.Zone{
		{Name: "daneall.test", Records: twoMX("daneall.test", "mx2.daneall.test",
			dnslab.A("mx2.daneall.test", dnslab.SinkIP(1)), dnslab.TLSA311("mx2.daneall.test", certs.mx.Cert))},
		{Name: "danepart.test", Records: twoMX("danepart.test", "mx2.danepart.test", dnslab.A("mx2.danepart.test", dnslab.SinkIP(1)))},
		{Name: "daneinsec.test", Records: twoMX("daneinsec.test", "mx.plainhost.test")},
		{Name: "plainhost.test", Signing: dnslab.Unsigned, Records: []string{dnslab.A("mx.plainhost.test", dnslab.SinkIP(2)), certs.tlsa("plainhost.test")}},
	}})
	d, _ := labDiscoverer(t, l, Config{})
	if err := d.SelfCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		domain    string
		all       bool
		reasonHas string
	}{
		{"daneall.test", true, "usable TLSA on mx.daneall.test, mx2.daneall.test"},
		{"danepart.test", false, "usable TLSA on mx.danepart.test; not on every MX host (mx2.danepart.test: no TLSA record)"},
		{"daneinsec.test", false, "usable TLSA on mx.daneinsec.test; not on every MX host (mx.plainhost.test: TLSA RRset insecure or absent)"},
	} {
		r := labLookup(t, d, tc.domain)
		info, _, _ := d.Show(tc.domain)
		if r.Postfix != (Answer{Found, "dane"}) || r.DANE != DANEUsable || r.DANEAllMX != tc.all || !strings.Contains(info.DANEReason, tc.reasonHas) {
			t.Errorf("%s: postfix %+v dane %v all %v reason %q; want dane, all %v, reason containing %q",
				tc.domain, r.Postfix, r.DANE, r.DANEAllMX, info.DANEReason, tc.all, tc.reasonHas)
		}
	}
	// mx2.danepart.test gets its TLSA record: every MX is usable now.
	if err := l.SetZone(dnslab.Zone{Name: "danepart.test", Records: twoMX("danepart.test", "mx2.danepart.test",
		dnslab.A("mx2.danepart.test", dnslab.SinkIP(1)), dnslab.TLSA311("mx2.danepart.test", certs.mx.Cert))}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := d.Refresh(ctx, "danepart.test"); err != nil || !r.DANEAllMX || r.Postfix.Text != "dane" {
		t.Errorf("after mx2 got TLSA: %+v %v", r, err)
	}
}
