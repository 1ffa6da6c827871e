package policyd

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// fakeEngine stands in for the discovery engine in the socketmap's unit
// tests (the engine itself is tested against real DNS and HTTPS in
// internal/discovery, and with real MTAs in internal/lab/e2e/discovery).
// A domain in results answers at once (a cache hit); one in slow answers
// only when release is closed, or not at all while its context lasts.
type fakeEngine struct {
	mu      sync.Mutex
	results map[string]discovery.Result
	infos   map[string]discovery.Info
	slow    map[string]bool
	release chan struct{}
	calls   atomic.Int64
	asked   []string
	// waited lists the domains looked up with a context that was not
	// done, that is ones the lookup was prepared to wait for.
	waited []string
}

func (f *fakeEngine) Lookup(ctx context.Context, domain string) (discovery.Result, error) {
	f.calls.Add(1)
	f.mu.Lock()
	if ctx.Err() == nil {
		f.waited = append(f.waited, domain)
	} else {
		f.asked = append(f.asked, domain)
	}
	r, ok := f.results[domain]
	slow := f.slow[domain]
	f.mu.Unlock()
	if ok && !slow {
		r.Cache = discovery.CacheHit
		return r, nil
	}
	select {
	case <-ctx.Done():
		return discovery.Result{}, ctx.Err()
	case <-f.release:
		r.Cache = discovery.CacheMiss
		return r, nil
	}
}

func (f *fakeEngine) Show(domain string) (discovery.Info, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.infos[domain]
	return i, ok, nil
}

func stsResult(d string) discovery.Result {
	a := discovery.Answer{Kind: discovery.Found, Text: "secure match=mx." + d + ":." + d + " servername=hostname"}
	return discovery.Result{Domain: d, Postfix: a, Sendmail: a, Source: discovery.SourceMTASTS, STSMode: 1, PolicyID: "1"}
}

// daneResult is a domain with usable DANE on every MX host.
func daneResult(d string, sts bool) discovery.Result {
	r := discovery.Result{Domain: d, Postfix: discovery.Answer{Kind: discovery.Found, Text: "dane"}, Source: discovery.SourceDANE, DANE: discovery.DANEUsable, DANEAllMX: true}
	if sts {
		r.Sendmail = stsResult(d).Sendmail
	}
	return r
}

// danePartResult is a domain with usable DANE on some MX hosts, not all.
func danePartResult(d string) discovery.Result {
	r := daneResult(d, false)
	r.DANEAllMX = false
	return r
}

const discoveryPolicy = `
[policyd]
listen = "unix:/run/tlsgate-test/policy.sock"

[discovery]
mta_sts = true
dane = true

[[endpoint]]
name = "enc"
hosts = ["sts.test", "dane.test", "temp.test", "danepart.test"]
[endpoint.outbound]
encryption = true
min_bits = 128

[[endpoint]]
name = "pinned"
hosts = ["pinned.test"]
[endpoint.outbound]
validate_cert = true
cn = "mx.pinned.test"

[[endpoint]]
name = "watch"
hosts = ["watch.test", "watchpart.test"]
mode = "monitor"
[endpoint.outbound]
encryption = true
`

func discoveryMap(t *testing.T, mta string, eng *fakeEngine, dc *Discovery) (*TLSMap, *logBuf) {
	t.Helper()
	src := "mta = \"" + mta + "\"\n" + discoveryPolicy
	if mta == "sendmail" {
		src = strings.Replace(src, "dane = true\n", "", 1)
	}
	p, err := policy.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if dc == nil {
		dc = &Discovery{}
	}
	dc.Engine = eng
	var lb logBuf
	return &TLSMap{Policy: func() *policy.Policy { return p }, Logger: lb.logger(), Discovery: dc}, &lb
}

// TestDiscoveryPostfix: the merged answers for Postfix's keys, what the
// log line says, and that only bare-domain keys reach discovery.
func TestDiscoveryPostfix(t *testing.T) {
	eng := &fakeEngine{results: map[string]discovery.Result{
		"sts.test":    stsResult("sts.test"),
		"dane.test":   daneResult("dane.test", false),
		"pinned.test": daneResult("pinned.test", true),
		"watch.test":  stsResult("watch.test"),
		"open.test":   daneResult("open.test", true),
		"temp.test":   {Domain: "temp.test", Postfix: discovery.Answer{Kind: discovery.Temp}, DANE: discovery.DANEUnknown, Reason: "DANE state unknown (MX lookup failed: servfail) while an MTA-STS policy in mode enforce is held"},
		"none.test":   {Domain: "none.test", Reason: "MTA-STS policy in mode testing"},
		// Usable TLSA records on some MX hosts only.
		"danepart.test":  danePartResult("danepart.test"),
		"openpart.test":  danePartResult("openpart.test"),
		"watchpart.test": danePartResult("watchpart.test"),
	}}
	m, lb := discoveryMap(t, "postfix", eng, nil)
	ctx := context.Background()
	for _, tc := range []struct{ key, reply, log string }{
		{"sts.test", "OK secure match=mx.sts.test:.sts.test servername=hostname ciphers=high", "endpoint=enc source=mta-sts cache=hit"},
		{"DANE.test.", "OK dane ciphers=high", "endpoint=enc source=dane cache=hit"},
		{"pinned.test", "OK secure match=mx.pinned.test", `level=INFO msg=tls-policy-lookup answer="OK secure match=mx.pinned.test" endpoint=pinned source=endpoint cache=hit overrides=dane map=tlspolicy key=pinned.test`},
		{"watch.test", "OK secure match=mx.watch.test:.watch.test servername=hostname", "endpoint=watch source=mta-sts"},
		{"open.test", "OK dane", "source=dane cache=hit map=tlspolicy key=open.test"},
		{"temp.test", "TEMP discovered policy undecided: DANE state unknown", `level=WARN msg=tls-policy-lookup answer="TEMP discovered policy undecided`},
		{"none.test", "NOTFOUND ", `source=none cache=hit map=tlspolicy key=none.test reason="MTA-STS policy in mode testing"`},
		// "dane" where not every MX host has usable TLSA records: the
		// endpoint's "encrypt" makes it "dane-only" (Postfix would give
		// the others "may"), logged at info; no endpoint or one in monitor
		// mode: the domain's own "dane".
		{"danepart.test", "OK dane-only ciphers=high", `level=INFO msg=tls-policy-lookup answer="OK dane-only ciphers=high" endpoint=enc source=dane cache=hit merged=dane-only map=tlspolicy key=danepart.test reason="the endpoint requires encryption and not every MX host has usable TLSA records: `},
		{"openpart.test", "OK dane", "level=DEBUG msg=tls-policy-lookup answer=\"OK dane\" source=dane cache=hit map=tlspolicy key=openpart.test\n"},
		{"watchpart.test", "OK dane", `answer="OK dane" endpoint=watch source=dane cache=hit map=tlspolicy key=watchpart.test`},
		// No discovery for these: the endpoint model alone.
		{".sts.test", "NOTFOUND ", ""},
		{"[sts.test]:25", "OK encrypt ciphers=high", ""},
		{"sts.test:587", "OK encrypt ciphers=high", ""},
		{"[192.0.2.1]", "NOTFOUND ", ""},
	} {
		r := m.Lookup(ctx, "tlspolicy", tc.key)
		if !strings.HasPrefix(r.String(), tc.reply) {
			t.Errorf("%s: %q, want %q", tc.key, r.String(), tc.reply)
		}
		if tc.log != "" {
			lb.waitFor(t, tc.log)
		}
	}
	eng.mu.Lock()
	asked := strings.Join(eng.asked, " ")
	eng.mu.Unlock()
	if want := "sts.test dane.test pinned.test watch.test open.test temp.test none.test danepart.test openpart.test watchpart.test"; asked != want {
		t.Errorf("discovery asked for %q, want %q", asked, want)
	}
	// Every domain was in the cache: no lookup waited.
	if len(eng.waited) != 0 {
		t.Errorf("lookups waited for %v", eng.waited)
	}
	// Another map name is still refused.
	if r := m.Lookup(ctx, "other", "sts.test"); r.Status != StatusTemp {
		t.Errorf("map other: %v", r)
	}
	// Explain says where an answer comes from and how the cache was used.
	x := m.Explain(ctx, "tlspolicy", "sts.test")
	if !x.Discovered || x.Answer.Source != policy.SourceMTASTS || x.Result.Cache != discovery.CacheHit || x.Answer.Endpoint == nil || x.Answer.Endpoint.Name != "enc" {
		t.Errorf("Explain(sts.test) = %+v", x)
	}
	if x := m.Explain(ctx, "tlspolicy", "[sts.test]:25"); x.Discovered || x.Answer.Source != policy.SourceEndpoint {
		t.Errorf("Explain([sts.test]:25) = %+v", x)
	}
	if x := m.Explain(ctx, "tlspolicy", "danepart.test"); x.Merged != "dane-only" || x.Reason != policy.DANEOnlyReason || x.Answer.Source != policy.SourceDANE {
		t.Errorf("Explain(danepart.test) = %+v", x)
	}
	if x := m.Explain(ctx, "tlspolicy", "dane.test"); x.Merged != "" || x.Reply.String() != "OK dane ciphers=high" {
		t.Errorf("Explain(dane.test) = %+v", x)
	}
}

// TestDiscoveryWait: a discovery that does not finish in time answers
// NOTFOUND when no policy is held and TEMP when one is (the TEMP rule),
// an endpoint that authenticates never waits, and a slow discovery on one
// connection does not hold another connection's lookups.
func TestDiscoveryWait(t *testing.T) {
	eng := &fakeEngine{
		results: map[string]discovery.Result{"fast.test": daneResult("fast.test", false), "slow-held.test": {}, "pinned.test": {}},
		slow:    map[string]bool{"slow.test": true, "slow-held.test": true, "slow-dane.test": true, "pinned.test": true},
		infos: map[string]discovery.Info{
			"slow-held.test": {Result: stsResult("slow-held.test")},
			"slow-dane.test": {DANELastUsable: time.Now().Add(-time.Hour)},
		},
		release: make(chan struct{}),
	}
	m, lb := discoveryMap(t, "postfix", eng, &Discovery{Wait: 100 * time.Millisecond})
	ctx := context.Background()
	for _, tc := range []struct{ key, reply, log string }{
		{"slow.test", "NOTFOUND ", "no policy is held"},
		{"slow-held.test", "TEMP discovered policy of slow-held.test undecided: discovery did not finish within 100ms while an MTA-STS policy in mode enforce is held", ""},
		{"slow-dane.test", "TEMP discovered policy of slow-dane.test undecided: discovery did not finish within 100ms while a usable DANE result of", ""},
		{"pinned.test", "OK secure match=mx.pinned.test", ""},
	} {
		start := time.Now()
		r := m.Lookup(ctx, "tlspolicy", tc.key)
		if !strings.HasPrefix(r.String(), tc.reply) {
			t.Errorf("%s: %q, want %q", tc.key, r.String(), tc.reply)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", tc.key, d)
		}
		if tc.log != "" {
			lb.waitFor(t, tc.log)
		}
	}

	// The authenticating endpoint's domain was never waited for.
	eng.mu.Lock()
	waited := strings.Join(eng.waited, " ")
	eng.mu.Unlock()
	if strings.Contains(waited, "pinned.test") || !strings.Contains(waited, "slow.test") {
		t.Errorf("lookups waited for %q; want slow.test, never pinned.test", waited)
	}

	// Through the server: connection 1 waits for slow.test (a long wait
	// now), connection 2 is answered meanwhile.
	m.Discovery.Wait = time.Minute
	srv, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: m, Logger: discardLogger()})
	_ = srv
	c1, c2 := dialClient(t, spec), dialClient(t, spec)
	slowDone := make(chan Reply, 1)
	go func() {
		r, err := c1.Lookup(context.Background(), "tlspolicy", "slow.test")
		if err != nil {
			t.Error(err)
		}
		slowDone <- r
	}()
	// Wait until the slow lookup is inside the engine.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		eng.mu.Lock()
		n := strings.Count(strings.Join(eng.waited, " "), "slow.test")
		eng.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow lookup never reached the engine")
		}
	}
	start := time.Now()
	if r := lookupOK(t, c2, "tlspolicy", "fast.test"); r.String() != "OK dane" {
		t.Errorf("fast.test on another connection: %v", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("fast.test waited %v behind the slow lookup", d)
	}
	select {
	case r := <-slowDone:
		t.Fatalf("slow lookup answered %v before discovery finished", r)
	default:
	}
	close(eng.release)
	select {
	case r := <-slowDone:
		if r.Status != StatusNotFound { // the fake's result for slow.test is empty
			t.Errorf("slow.test after release: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow lookup not answered after the discovery finished")
	}
}

// TestDiscoverySendmail: the "sts" map answers the MTA-STS policy alone;
// tlsgate's own map ([policyd] map_name, "tlspolicy" by default) and the
// access map answer the endpoints as without discovery, whatever
// map_name is.
func TestDiscoverySendmail(t *testing.T) {
	eng := &fakeEngine{results: map[string]discovery.Result{
		"sts.test":  stsResult("sts.test"),
		"dane.test": daneResult("dane.test", false),
		"both.test": daneResult("both.test", true),
	}}
	m, _ := discoveryMap(t, "sendmail", eng, nil)
	ctx := context.Background()
	for _, tc := range []struct{ name, key, reply string }{
		{"sts", "sts.test", "OK secure match=mx.sts.test:.sts.test servername=hostname"},
		{"sts", "both.test", "OK secure match=mx.both.test:.both.test servername=hostname"},
		{"sts", "dane.test", "NOTFOUND "},
		{"sts", "[192.0.2.1]", "NOTFOUND "},
		{"access", "tls_rcpt:user@sts.test", "OK TEMP+ENCR:128"},
		{"access", "sts.test", "NOTFOUND "},
		{"tlspolicy", "tls_rcpt:user@sts.test", "OK TEMP+ENCR:128"},
		{"tlspolicy", "sts.test", "NOTFOUND "},
		{"other", "sts.test", "TEMP unknown map"},
	} {
		if r := m.Lookup(ctx, tc.name, tc.key); !strings.HasPrefix(r.String(), tc.reply) {
			t.Errorf("%s %s: %q, want %q", tc.name, tc.key, r.String(), tc.reply)
		}
		if x := m.Explain(ctx, tc.name, tc.key); !strings.HasPrefix(x.Reply.String(), tc.reply) {
			t.Errorf("Explain %s %s: %q, want %q", tc.name, tc.key, x.Reply.String(), tc.reply)
		}
	}
	// With a map_name of its own, the sts map is still discovery's.
	p, err := policy.Parse("t.toml", []byte(strings.Replace(strings.Replace("mta = \"sendmail\"\n"+discoveryPolicy, "dane = true\n", "", 1),
		"[policyd]\n", "[policyd]\nmap_name = \"tlsmap\"\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	named := &TLSMap{Policy: func() *policy.Policy { return p }, Discovery: m.Discovery}
	for _, tc := range []struct{ name, key, reply string }{
		{"sts", "sts.test", "OK secure match=mx.sts.test:.sts.test servername=hostname"},
		{"tlsmap", "tls_rcpt:user@sts.test", "OK TEMP+ENCR:128"},
		{"tlsmap", "sts.test", "NOTFOUND "},
		{"tlspolicy", "tls_rcpt:user@sts.test", "TEMP unknown map"},
	} {
		if r := named.Lookup(ctx, tc.name, tc.key); !strings.HasPrefix(r.String(), tc.reply) {
			t.Errorf("map_name tlsmap: %s %s: %q, want %q", tc.name, tc.key, r.String(), tc.reply)
		}
	}
	// Without discovery the sts map is unknown: TEMP, never NOTFOUND.
	m.Discovery = nil
	if r := m.Lookup(ctx, "sts", "sts.test"); r.Status != StatusTemp {
		t.Errorf("sts map without discovery: %v", r)
	}
}

// TestDiscoveryDANEWithheld: while Postfix could not enforce DANE, a DANE
// domain gets its MTA-STS policy or no discovered policy, never "dane"
// (which Postfix would turn into "may") and never TEMP because of DANE.
func TestDiscoveryDANEWithheld(t *testing.T) {
	eng := &fakeEngine{results: map[string]discovery.Result{
		"dane.test": daneResult("dane.test", false),
		"both.test": daneResult("both.test", true),
		"temp.test": {Postfix: discovery.Answer{Kind: discovery.Temp}, Sendmail: stsResult("temp.test").Sendmail, Reason: "DANE unknown"},
	}}
	m, lb := discoveryMap(t, "postfix", eng, &Discovery{DANEAllowed: func() (bool, string) {
		return false, "smtp_dns_support_level is \"\", not dnssec"
	}})
	ctx := context.Background()
	for _, tc := range []struct{ key, reply string }{
		{"dane.test", "OK encrypt ciphers=high"},
		{"both.test", "OK secure match=mx.both.test:.both.test servername=hostname"},
		{"temp.test", "OK secure match=mx.temp.test:.temp.test servername=hostname ciphers=high"},
	} {
		if r := m.Lookup(ctx, "tlspolicy", tc.key); r.String() != tc.reply {
			t.Errorf("%s: %q, want %q", tc.key, r.String(), tc.reply)
		}
	}
	lb.waitFor(t, `DANE withheld: smtp_dns_support_level`)
}

// TestDiscoveryException: a discovered lookup is answered at the map's
// clock: while an exception (encryption only) is in force, the MTA-STS
// policy of the domain raises it and the line names the exception (at
// info); once it has ended, the endpoint it relaxed (a validated
// certificate) decides and overrides MTA-STS.
func TestDiscoveryException(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte("mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/tlsgate-test/policy.sock\"\n[discovery]\nmta_sts = true\n"+
		labsException("outbound", "partner", "partner.test")))
	if err != nil {
		t.Fatal(err)
	}
	const key = "labs.partner.test"
	eng := &fakeEngine{results: map[string]discovery.Result{key: stsResult(key)}}
	var lb logBuf
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &TLSMap{Policy: func() *policy.Policy { return p }, Logger: lb.logger(), Discovery: &Discovery{Engine: eng}, Now: func() time.Time { return at }}
	ctx := context.Background()
	if r := m.Lookup(ctx, "tlspolicy", key); r.String() != "OK "+stsResult(key).Postfix.Text {
		t.Errorf("during the exception: %q", r.String())
	}
	lb.waitFor(t, `level=INFO msg=tls-policy-lookup answer="OK secure match=mx.labs.partner.test:.labs.partner.test servername=hostname" endpoint=partner-labs exception=partner-labs source=mta-sts cache=hit map=tlspolicy key=labs.partner.test`)
	if x := m.Explain(ctx, "tlspolicy", key); x.Answer.Exception == nil || x.Answer.Source != policy.SourceMTASTS {
		t.Errorf("Explain during the exception: %+v", x)
	}

	at = time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	want, err := p.At(at).PostfixPolicy(key)
	if err != nil || !want.Authenticates() || want.Endpoint.Name != "partner" {
		t.Fatalf("after the exception the file says %+v, %v", want, err)
	}
	if r := m.Lookup(ctx, "tlspolicy", key); r.String() != "OK "+want.Text {
		t.Errorf("after the exception: %q, want %q", r.String(), "OK "+want.Text)
	}
	lb.waitFor(t, `endpoint=partner source=endpoint cache=hit overrides=sts map=tlspolicy key=labs.partner.test`)
}
