package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/heldmail"
	"github.com/tlsgate/tlsgate/internal/partnerwatch"
)

// TestWatchMetrics: the held gauges follow each successful reading (an
// endpoint that no longer holds mail loses its series), a failed reading
// keeps them and is counted; partner expiry is computed at scrape time.
func TestWatchMetrics(t *testing.T) {
	m := New()
	w := m.AddWatch()
	now := time.Date(2026, 12, 8, 9, 0, 0, 0, time.UTC)
	w.HeldRound([]heldmail.Held{
		{Endpoint: "company-b", Messages: 3, Oldest: now.Add(-2 * time.Hour)},
		{Endpoint: "company-c", Messages: 1, Oldest: now.Add(-time.Minute)},
	}, true, now)
	want := `
# HELP tlsgate_held_messages Messages the MTA holds in its queue because of TLS (not offered, not verified, name mismatch, policy lookup error), by the endpoint that decides their TLS.
# TYPE tlsgate_held_messages gauge
tlsgate_held_messages{endpoint="company-b"} 3
tlsgate_held_messages{endpoint="company-c"} 1
# HELP tlsgate_held_oldest_seconds How long the oldest message held because of TLS has been queued, by endpoint, as of the last reading of the queue.
# TYPE tlsgate_held_oldest_seconds gauge
tlsgate_held_oldest_seconds{endpoint="company-b"} 7200
tlsgate_held_oldest_seconds{endpoint="company-c"} 60
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "tlsgate_held_messages", "tlsgate_held_oldest_seconds"); err != nil {
		t.Error(err)
	}
	w.HeldRound(nil, false, now.Add(time.Minute))
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "tlsgate_held_messages", "tlsgate_held_oldest_seconds"); err != nil {
		t.Errorf("after a failed reading: %v", err)
	}
	w.HeldRound([]heldmail.Held{{Endpoint: "company-c", Messages: 2, Oldest: now.Add(-time.Minute)}}, true, now.Add(2*time.Minute))
	if n := testutil.CollectAndCount(w.held); n != 1 {
		t.Errorf("%d held series after company-b released its mail, want 1", n)
	}
	if got := testutil.ToFloat64(w.oldest.WithLabelValues("company-c")); got != 180 {
		t.Errorf("oldest %v", got)
	}
	if ok, failed := testutil.ToFloat64(w.reads.WithLabelValues("ok")), testutil.ToFloat64(w.reads.WithLabelValues("failed")); ok != 2 || failed != 1 {
		t.Errorf("reads ok %v failed %v", ok, failed)
	}

	w.SetPartners([]partnerwatch.Status{
		{Endpoint: "company-b", Host: "mx1.company-b.example:25", NotAfter: time.Now().Add(10 * 24 * time.Hour), OK: true},
		{Endpoint: "company-b", Host: "mx2.company-b.example:25"},
	})
	if n := testutil.CollectAndCount(partnerCollector{w}, "tlsgate_partner_cert_expiry_seconds"); n != 1 {
		t.Errorf("%d expiry series, want 1 (a server without a certificate has none)", n)
	}
	if n := testutil.CollectAndCount(partnerCollector{w}, "tlsgate_partner_probe_ok"); n != 2 {
		t.Errorf("%d probe_ok series, want 2", n)
	}
	mfs, _ := m.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "tlsgate_partner_cert_expiry_seconds" {
			continue
		}
		if v := mf.Metric[0].GetGauge().GetValue(); v < 10*86400-60 || v > 10*86400 {
			t.Errorf("expiry %v s, want about 10 days", v)
		}
	}
}
