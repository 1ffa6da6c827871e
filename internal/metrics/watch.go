package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsgate/tlsgate/internal/heldmail"
	"github.com/tlsgate/tlsgate/internal/partnerwatch"
)

// Watch holds the metrics of serve's held-mail watch and partner probes
// ([watch]):
//
//	tlsgate_held_messages{endpoint}                  messages held in the queue because of TLS
//	tlsgate_held_oldest_seconds{endpoint}            how long the oldest of them has been queued
//	tlsgate_held_queue_reads_total{result}           readings of the queue (ok, failed)
//	tlsgate_partner_cert_expiry_seconds{endpoint,host} seconds until the first certificate of a probed partner server's chain expires
//	tlsgate_partner_probe_ok{endpoint,host}          1 when the last probe of the server would let the MTA deliver, else 0
//
// An endpoint that holds no mail has no held series; a partner server
// has series once it was probed.
type Watch struct {
	held, oldest *prometheus.GaugeVec
	reads        *prometheus.CounterVec

	mu       sync.Mutex
	endpts   map[string]bool // endpoints with held series
	partners []partnerwatch.Status
	expiry   *prometheus.Desc
	probeOK  *prometheus.Desc
}

// AddWatch registers the held-mail and partner-probe metrics.
func (m *Metrics) AddWatch() *Watch {
	w := &Watch{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tlsgate_held_messages",
			Help: "Messages the MTA holds in its queue because of TLS (not offered, not verified, name mismatch, policy lookup error), by the endpoint that decides their TLS."}, []string{"endpoint"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tlsgate_held_oldest_seconds",
			Help: "How long the oldest message held because of TLS has been queued, by endpoint, as of the last reading of the queue."}, []string{"endpoint"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tlsgate_held_queue_reads_total",
			Help: "Readings of the MTA's queue by the held-mail watch, by result (ok, failed)."}, []string{"result"}),
		endpts: map[string]bool{},
		expiry: prometheus.NewDesc("tlsgate_partner_cert_expiry_seconds",
			"Seconds until the first certificate of a probed partner server's chain expires (negative: expired).", []string{"endpoint", "host"}, nil),
		probeOK: prometheus.NewDesc("tlsgate_partner_probe_ok",
			"1 when the last probe of a partner server would let the MTA deliver under the endpoint's outbound requirements, else 0.", []string{"endpoint", "host"}, nil),
	}
	w.reads.WithLabelValues("ok")
	w.reads.WithLabelValues("failed")
	m.Registry.MustRegister(w.held, w.oldest, w.reads, partnerCollector{w})
	return w
}

// HeldRound records one reading of the queue: with ok, the held gauges
// become exactly held (as of now); without, they keep their values.
func (w *Watch) HeldRound(held []heldmail.Held, ok bool, now time.Time) {
	if !ok {
		w.reads.WithLabelValues("failed").Inc()
		return
	}
	w.reads.WithLabelValues("ok").Inc()
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := make(map[string]bool, len(held))
	for _, h := range held {
		cur[h.Endpoint] = true
		w.held.WithLabelValues(h.Endpoint).Set(float64(h.Messages))
		w.oldest.WithLabelValues(h.Endpoint).Set(h.Age(now).Seconds())
	}
	for ep := range w.endpts {
		if !cur[ep] {
			w.held.DeleteLabelValues(ep)
			w.oldest.DeleteLabelValues(ep)
		}
	}
	w.endpts = cur
}

// HeldOff removes the held series: the watch was turned off.
func (w *Watch) HeldOff() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held.Reset()
	w.oldest.Reset()
	w.endpts = map[string]bool{}
}

// SetPartners replaces the partner servers' statuses.
func (w *Watch) SetPartners(st []partnerwatch.Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partners = append([]partnerwatch.Status(nil), st...)
}

// partnerCollector exports the partner statuses; the seconds until expiry
// are computed at each scrape.
type partnerCollector struct{ w *Watch }

func (c partnerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.w.expiry
	ch <- c.w.probeOK
}

func (c partnerCollector) Collect(ch chan<- prometheus.Metric) {
	c.w.mu.Lock()
	st := c.w.partners
	c.w.mu.Unlock()
	now := time.Now()
	for _, s := range st {
		if !s.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.w.expiry, prometheus.GaugeValue, s.NotAfter.Sub(now).Seconds(), s.Endpoint, s.Host)
		}
		ok := 0.0
		if s.OK {
			ok = 1
		}
		ch <- prometheus.MustNewConstMetric(c.w.probeOK, prometheus.GaugeValue, ok, s.Endpoint, s.Host)
	}
}
