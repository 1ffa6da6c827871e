// Package metrics exposes tlsgate's Prometheus metrics on an opt-in
// listener ([metrics] listen, loopback or unix socket): inbound decisions
// by part, endpoint and result (the model's outcome word, the same the log
// lines say), outbound lookups by answer, latency histograms, reloads by
// result, the configuration generation, the seconds until each known
// certificate expires, the instant each exception ends and, with
// [discovery], the MTA-STS/DANE engine's counters (Metrics.AddDiscovery).
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
	"github.com/tlsgate/tlsgate/policyd"
)

// Metrics holds tlsgate's collectors on a private registry.
type Metrics struct {
	Registry *prometheus.Registry

	// Decisions counts inbound decisions by part (milter, delegation),
	// endpoint (the covering endpoints, comma-separated; "" when none)
	// and result: the word of policy.Outcome (none, pass, unchecked,
	// monitor, exception, defer, reject, tempfail), which the decision's
	// log line says as result=.
	Decisions *prometheus.CounterVec
	// Lookups counts outbound socketmap lookups by answer (ok, notfound,
	// temp, timeout, perm).
	Lookups *prometheus.CounterVec
	// LookupSeconds is the time to answer a socketmap lookup.
	LookupSeconds prometheus.Histogram
	// DecisionSeconds is the time to judge an inbound request, by part:
	// for the milter from the MAIL command's arrival to the verdict, for
	// delegation one policy request.
	DecisionSeconds *prometheus.HistogramVec
	// Reloads counts reloads by result (ok, failed).
	Reloads *prometheus.CounterVec
	// Generation is the configuration generation in force.
	Generation prometheus.Gauge
	// CertExpiry is the seconds until each known certificate expires.
	CertExpiry *prometheus.GaugeVec
	// ExceptionExpiry is the instant (Unix seconds) each exception of the
	// policy in force ends, by endpoint and exception_to; an ended one
	// stays until the next reload (its value is then in the past).
	ExceptionExpiry *prometheus.GaugeVec
}

// New registers tlsgate's collectors plus the Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	buckets := []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1, 1}
	m := &Metrics{
		Registry: r,
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tlsgate_inbound_decisions_total",
			Help: "Inbound TLS policy decisions by part (milter, delegation), endpoint and result (none, pass, unchecked, monitor, exception, defer, reject, tempfail: the log's result=)."}, []string{"part", "endpoint", "result"}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tlsgate_outbound_lookups_total",
			Help: "Outbound TLS policy lookups (socketmap) by answer."}, []string{"answer"}),
		LookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tlsgate_outbound_lookup_duration_seconds",
			Help: "Time to answer one socketmap lookup.", Buckets: buckets}),
		DecisionSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tlsgate_inbound_decision_duration_seconds",
			Help: "Time to judge one inbound request, by part (milter: from the MAIL command to the verdict; delegation: one policy request).", Buckets: buckets}, []string{"part"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tlsgate_reloads_total",
			Help: "Configuration reloads by result."}, []string{"result"}),
		Generation: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tlsgate_config_generation",
			Help: "Generation of the configuration in force (1 at start, +1 per successful reload)."}),
		CertExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tlsgate_cert_expiry_seconds",
			Help: "Seconds until a certificate tlsgate knows expires (negative: expired)."}, []string{"cert"}),
		ExceptionExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tlsgate_exception_expiry_timestamp_seconds",
			Help: "When an exception (exception_to) of the policy in force ends, in Unix seconds; from then on the endpoint it relaxes applies to its hosts."}, []string{"endpoint", "exception_to"}),
	}
	r.MustRegister(m.Decisions, m.Lookups, m.LookupSeconds, m.DecisionSeconds, m.Reloads, m.Generation, m.CertExpiry, m.ExceptionExpiry,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Lookuper wraps a socketmap Lookuper and counts and times its answers.
func (m *Metrics) Lookuper(inner policyd.Lookuper) policyd.Lookuper {
	return policyd.LookupFunc(func(ctx context.Context, name, key string) policyd.Reply {
		start := time.Now()
		r := inner.Lookup(ctx, name, key)
		m.LookupSeconds.Observe(time.Since(start).Seconds())
		m.Lookups.WithLabelValues(strings.ToLower(r.Status.String())).Inc()
		return r
	})
}

// MilterDecision counts a milter decision by endpoint and result and, when
// the milter judged a MAIL command (d.Duration > 0), records the time it
// took under part="milter". It fits milter.Options.OnDecision.
func (m *Metrics) MilterDecision(d milter.Decision) {
	m.Decisions.WithLabelValues("milter", d.Endpoints, d.Result.String()).Inc()
	if d.Duration > 0 {
		m.DecisionSeconds.WithLabelValues("milter").Observe(d.Duration.Seconds())
	}
}

// DelegationDecision counts a policy-delegation decision by endpoint and
// result, as MilterDecision does for the milter, and records its time
// under part="delegation". It fits policyd.InboundPolicy.OnDecision.
func (m *Metrics) DelegationDecision(d policyd.InboundDecision) {
	m.Decisions.WithLabelValues("delegation", d.Endpoints, d.Result.String()).Inc()
	m.DecisionSeconds.WithLabelValues("delegation").Observe(d.Duration.Seconds())
}

// SetExceptions sets tlsgate_exception_expiry_timestamp_seconds to exactly
// the exceptions of p, each ending at its instant in loc (a date ends at
// midnight there; policy.Exception.ExpiresAt).
func (m *Metrics) SetExceptions(p *policy.Policy, loc *time.Location) {
	m.ExceptionExpiry.Reset()
	for _, x := range p.Exceptions() {
		m.ExceptionExpiry.WithLabelValues(x.Endpoint.Name, x.To.Name).Set(float64(x.ExpiresAt(loc).Unix()))
	}
}

// Serve answers /metrics on ln until ctx ends.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
