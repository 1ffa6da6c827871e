package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
	"github.com/tlsgate/tlsgate/policyd"
)

func TestWrappersAndEndpoint(t *testing.T) {
	m := New()
	lk := m.Lookuper(policyd.LookupFunc(func(ctx context.Context, name, key string) policyd.Reply {
		if key == "x" {
			return policyd.Reply{Status: policyd.StatusOK, Data: "encrypt"}
		}
		return policyd.Reply{Status: policyd.StatusNotFound}
	}))
	lk.Lookup(context.Background(), "tlspolicy", "x")
	lk.Lookup(context.Background(), "tlspolicy", "y")
	lk.Lookup(context.Background(), "tlspolicy", "y")
	if got := testutil.ToFloat64(m.Lookups.WithLabelValues("notfound")); got != 2 {
		t.Errorf("notfound = %v", got)
	}
	for _, o := range []policy.Outcome{policy.OutcomeNone, policy.OutcomePass, policy.OutcomeDefer, policy.OutcomeReject, policy.OutcomeTempFail} {
		m.DelegationDecision(policyd.InboundDecision{Result: o, Endpoints: "b", Duration: time.Millisecond})
	}
	for _, r := range []string{"none", "pass", "defer", "reject", "tempfail"} {
		if got := testutil.ToFloat64(m.Decisions.WithLabelValues("delegation", "b", r)); got != 1 {
			t.Errorf("%s = %v", r, got)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `tlsgate_outbound_lookups_total{answer="ok"} 1`) {
		t.Errorf("metrics page lacks the lookup counter:\n%.2000s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestMilterDecision(t *testing.T) {
	m := New()
	for _, d := range []milter.Decision{
		{Endpoints: "company-b", Result: policy.OutcomeDefer, Duration: 3 * time.Millisecond},
		{Endpoints: "company-b", Result: policy.OutcomeDefer, Duration: time.Millisecond},
		{Endpoints: "", Result: policy.OutcomeNone, Duration: 20 * time.Microsecond},
		{Result: policy.OutcomeTempFail}, // no MAIL judged: counted, not timed
	} {
		m.MilterDecision(d)
	}
	for _, tc := range []struct {
		endpoint, result string
		want             float64
	}{
		{"company-b", "defer", 2},
		{"", "none", 1},
		{"", "tempfail", 1},
	} {
		if got := testutil.ToFloat64(m.Decisions.WithLabelValues("milter", tc.endpoint, tc.result)); got != tc.want {
			t.Errorf("decisions{milter,%q,%q} = %v, want %v", tc.endpoint, tc.result, got, tc.want)
		}
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() != "tlsgate_inbound_decision_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if len(s.GetLabel()) != 1 || s.GetLabel()[0].GetValue() != "milter" {
				t.Errorf("unexpected series %v", s.GetLabel())
				continue
			}
			found = true
			h := s.GetHistogram()
			if h.GetSampleCount() != 3 || h.GetSampleSum() < 0.00402 || h.GetSampleSum() > 0.00403 {
				t.Errorf(`part="milter": %d samples, sum %v; want 3, 0.00402`, h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
	if !found {
		t.Error(`no tlsgate_inbound_decision_duration_seconds{part="milter"} series`)
	}
}

// TestDiscoveryMetrics: the engine's counters appear as they are at the
// scrape, each once, with the kinds' names as labels.
func TestDiscoveryMetrics(t *testing.T) {
	m := New()
	var st discovery.Stats
	m.AddDiscovery(func() discovery.Stats { return st })
	st.Answers[discovery.SourceDANE] = 3
	st.Answers[discovery.SourceMTASTS] = 2
	st.Temp = 1
	st.Cache[discovery.CacheHit] = 7
	st.Cache[discovery.CacheMiss] = 2
	st.Entries, st.Bytes = 4, 4096
	st.FetchFailures[mtasts.FetchRedirect] = 1
	st.DNSFailures[discovery.DNSBogus] = 5
	st.SelfCheckOK = true
	want := `
# HELP tlsgate_discovery_answers_total Discovered policies answered for Postfix, by source (none, dane, mta-sts).
# TYPE tlsgate_discovery_answers_total counter
tlsgate_discovery_answers_total{source="dane"} 3
tlsgate_discovery_answers_total{source="mta-sts"} 2
tlsgate_discovery_answers_total{source="none"} 0
# HELP tlsgate_discovery_cache_entries Domains in the discovery cache.
# TYPE tlsgate_discovery_cache_entries gauge
tlsgate_discovery_cache_entries 4
# HELP tlsgate_discovery_dane_up 1 while the resolver self-check passes and DANE is on, else 0.
# TYPE tlsgate_discovery_dane_up gauge
tlsgate_discovery_dane_up 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "tlsgate_discovery_answers_total", "tlsgate_discovery_cache_entries", "tlsgate_discovery_dane_up"); err != nil {
		t.Error(err)
	}
	for name, v := range map[string]float64{
		`tlsgate_discovery_cache_lookups_total{state="hit"}`:              7,
		`tlsgate_discovery_sts_fetch_failures_total{kind="redirect"}`:     1,
		`tlsgate_discovery_dns_failures_total{kind="bogus"}`:              5,
		`tlsgate_discovery_temp_total`:                                    1,
		`tlsgate_discovery_cache_bytes`:                                   4096,
		`tlsgate_discovery_sts_fetch_failures_total{kind="content_type"}`: 0,
	} {
		if got := gathered(t, m, name); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	st.Cache[discovery.CacheHit] = 8
	if got := gathered(t, m, `tlsgate_discovery_cache_lookups_total{state="hit"}`); got != 8 {
		t.Errorf("after one more hit: %v", got)
	}
}

// gathered returns the value of one series ("name{label="v"}") from the
// registry.
func gathered(t *testing.T, m *Metrics, series string) float64 {
	t.Helper()
	name, labels, _ := strings.Cut(series, "{")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var ls []string
			for _, lp := range mt.GetLabel() {
				ls = append(ls, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			if strings.Join(ls, ",")+"}" != labels && !(labels == "" && len(ls) == 0) {
				continue
			}
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

// TestSetExceptions: one series per exception of the policy, valued at
// its end in Unix seconds (a date ends at midnight where the daemon is);
// a new policy replaces the series.
func TestSetExceptions(t *testing.T) {
	p, err := policy.Parse("x.toml", []byte(`mta = "postfix"
[[endpoint]]
name = "company-b"
hosts = [".company-b.example"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "labs"
hosts = ["labs.company-b.example"]
exception_to = "company-b"
reason = "CHG-4711"
expires = 2027-01-31
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "sales"
hosts = ["sales.company-b.example"]
exception_to = "company-b"
reason = "CHG-4712"
expires = 2027-02-01T12:00:00+01:00
  [endpoint.inbound]
  encryption = true
`))
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	berlin := time.FixedZone("CET", 3600)
	m.SetExceptions(p, berlin)
	for _, tc := range []struct {
		endpoint string
		want     time.Time
	}{
		{"labs", time.Date(2027, 1, 31, 0, 0, 0, 0, berlin)},
		{"sales", time.Date(2027, 2, 1, 11, 0, 0, 0, time.UTC)},
	} {
		if got := testutil.ToFloat64(m.ExceptionExpiry.WithLabelValues(tc.endpoint, "company-b")); got != float64(tc.want.Unix()) {
			t.Errorf("%s: %v, want %v", tc.endpoint, got, tc.want.Unix())
		}
	}
	none, err := policy.Parse("y.toml", []byte("mta = \"postfix\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	m.SetExceptions(none, berlin)
	if n := testutil.CollectAndCount(m.ExceptionExpiry); n != 0 {
		t.Errorf("%d series after a policy without exceptions", n)
	}
}
