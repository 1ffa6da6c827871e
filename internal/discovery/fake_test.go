package discovery

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// fakeDNS answers from a table; unknown names are secure NXDOMAIN.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string]fakeAnswer // "name TYPE"
	queries atomic.Int64
}

type fakeAnswer struct {
	rs  rrset
	err error
}

func newFakeDNS() *fakeDNS { return &fakeDNS{answers: map[string]fakeAnswer{}} }

func qkey(name string, qtype uint16) string {
	return strings.ToLower(dns.Fqdn(name)) + " " + dns.TypeToString[qtype]
}

// set records the answer to name/qtype: rrs in zone-file syntax, secure
// or not, with ttl.
func (f *fakeDNS) set(name string, qtype uint16, secure bool, ttl uint32, rrs ...string) {
	var out []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		out = append(out, rr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[qkey(name, qtype)] = fakeAnswer{rs: rrset{secure: secure, rrs: out, ttl: ttl}}
}

func (f *fakeDNS) fail(name string, qtype uint16, kind DNSErrorKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[qkey(name, qtype)] = fakeAnswer{err: &DNSError{Name: name, Type: qtype, Kind: kind, Detail: "fake " + kind.String()}}
}

func (f *fakeDNS) del(name string, qtype uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.answers, qkey(name, qtype))
}

func (f *fakeDNS) lookup(ctx context.Context, name string, qtype uint16) (rrset, error) {
	f.queries.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.answers[qkey(name, qtype)]
	if !ok {
		return rrset{nxdomain: true, secure: true, ttl: 600}, nil
	}
	return a.rs, a.err
}

// fakeFetch serves policies from a table.
type fakeFetch struct {
	mu      sync.Mutex
	byName  map[string]fakePolicy
	fetches atomic.Int64
	gate    chan struct{} // if set, Fetch waits for it to be closed
}

type fakePolicy struct {
	body string
	err  error
}

func newFakeFetch() *fakeFetch { return &fakeFetch{byName: map[string]fakePolicy{}} }

func (f *fakeFetch) set(domain, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byName[domain] = fakePolicy{body: body}
}

func (f *fakeFetch) fail(domain string, kind mtasts.FetchErrorKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byName[domain] = fakePolicy{err: &mtasts.FetchError{Kind: kind, URL: "https://mta-sts." + domain + "/.well-known/mta-sts.txt", Err: fmt.Errorf("fake %s", kind)}}
}

func (f *fakeFetch) Fetch(ctx context.Context, domain string) (*mtasts.Policy, error) {
	f.fetches.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	p, ok := f.byName[domain]
	f.mu.Unlock()
	if !ok {
		return nil, &mtasts.FetchError{Kind: mtasts.FetchStatus, Err: fmt.Errorf("HTTP 404")}
	}
	if p.err != nil {
		return nil, p.err
	}
	pol, err := mtasts.ParsePolicy([]byte(p.body))
	if err != nil {
		return nil, &mtasts.FetchError{Kind: mtasts.FetchInvalid, Err: err}
	}
	return pol, nil
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a Discoverer on fakes.
type fixture struct {
	d      *Discoverer
	dns    *fakeDNS
	fetch  *fakeFetch
	clock  *clock
	mu     sync.Mutex
	events []Event
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	if !cfg.DANE && !cfg.MTASTS {
		cfg.DANE, cfg.MTASTS = true, true
	}
	f := &fixture{dns: newFakeDNS(), fetch: newFakeFetch(), clock: &clock{t: time.Unix(1_800_000_000, 0)}}
	user := cfg.OnEvent
	cfg.OnEvent = func(ev Event) {
		f.mu.Lock()
		f.events = append(f.events, ev)
		f.mu.Unlock()
		if user != nil {
			user(ev)
		}
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.dns, d.fetcher, d.now = f.dns, f.fetch, f.clock.now
	f.d = d
	// The root validates.
	f.dns.set(".", dns.TypeDNSKEY, true, 3600, ". 3600 IN DNSKEY 257 3 13 AAAA")
	return f
}

func (f *fixture) eventsOf(kind EventKind) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Event
	for _, e := range f.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (f *fixture) lookup(t *testing.T, domain string) Result {
	t.Helper()
	r, err := f.d.Lookup(context.Background(), domain)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", domain, err)
	}
	return r
}

const tlsaHash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// daneDomain publishes a secure MX with a usable TLSA record.
func (f *fixture) daneDomain(domain string, ttl uint32) {
	mx := "mx." + domain
	f.dns.set(domain, dns.TypeMX, true, ttl, domain+". 300 IN MX 10 "+mx+".")
	f.dns.set(mx, dns.TypeA, true, ttl, mx+". 300 IN A 192.0.2.25")
	f.dns.set(mx, dns.TypeAAAA, true, ttl)
	f.dns.set("_25._tcp."+mx, dns.TypeTLSA, true, ttl, "_25._tcp."+mx+". 300 IN TLSA 3 1 1 "+tlsaHash)
}

// stsDomain publishes an MTA-STS record with id and a policy body.
func (f *fixture) stsDomain(domain, id, body string, ttl uint32) {
	f.dns.set("_mta-sts."+domain, dns.TypeTXT, false, ttl, "_mta-sts."+domain+". 300 IN TXT \"v=STSv1; id="+id+"\"")
	f.fetch.set(domain, body)
}

func enforce(mx ...string) string {
	return "version: STSv1\nmode: enforce\n" + mxLines(mx) + "max_age: 86400\n"
}

func mxLines(mx []string) string {
	var b strings.Builder
	for _, m := range mx {
		b.WriteString("mx: " + m + "\n")
	}
	return b.String()
}
