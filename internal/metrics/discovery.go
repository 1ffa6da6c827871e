package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// discoveryCollector exports the discovery engine's counters, read from
// its Stats at each scrape: the engine counts each event once, and the
// metrics only copy it, so nothing is counted twice.
type discoveryCollector struct {
	stats func() discovery.Stats

	answers, temp, cache, entries, bytes, evictions *prometheus.Desc
	fetches, fetchFailures, queries, dnsFailures    *prometheus.Desc
	daneUp                                          *prometheus.Desc
}

// AddDiscovery registers the discovery engine's metrics, read from stats
// (Discoverer.Stats) at each scrape:
//
//	tlsgate_discovery_answers_total{source}          discovered Postfix answers by source (none, dane, mta-sts)
//	tlsgate_discovery_temp_total                     of which TEMP
//	tlsgate_discovery_cache_lookups_total{state}     lookups by cache state (hit, miss, refreshed, stale)
//	tlsgate_discovery_cache_entries                  domains cached now
//	tlsgate_discovery_cache_bytes                    their estimated memory
//	tlsgate_discovery_cache_evictions_total          domains dropped to stay within the bounds
//	tlsgate_discovery_sts_fetches_total              MTA-STS policy fetches
//	tlsgate_discovery_sts_fetch_failures_total{kind} failed fetches by kind (network, tls, redirect, status, content_type, too_large, invalid)
//	tlsgate_discovery_dns_queries_total              DNS queries sent
//	tlsgate_discovery_dns_failures_total{kind}       failed queries by kind (timeout, network, servfail, bogus, refused, other)
//	tlsgate_discovery_dane_up                        1 while the resolver self-check passes (DANE on)
func (m *Metrics) AddDiscovery(stats func() discovery.Stats) {
	m.Registry.MustRegister(newDiscoveryCollector(stats))
}

func newDiscoveryCollector(stats func() discovery.Stats) *discoveryCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tlsgate_discovery_"+name, help, labels, nil)
	}
	return &discoveryCollector{
		stats:         stats,
		answers:       d("answers_total", "Discovered policies answered for Postfix, by source (none, dane, mta-sts).", "source"),
		temp:          d("temp_total", "Discovery answers that were TEMP (also counted under source none)."),
		cache:         d("cache_lookups_total", "Discovery lookups by cache state (hit, miss, refreshed, stale).", "state"),
		entries:       d("cache_entries", "Domains in the discovery cache."),
		bytes:         d("cache_bytes", "Estimated memory of the discovery cache, in bytes."),
		evictions:     d("cache_evictions_total", "Domains dropped from the discovery cache to stay within its bounds."),
		fetches:       d("sts_fetches_total", "MTA-STS policy fetches tried."),
		fetchFailures: d("sts_fetch_failures_total", "Failed MTA-STS policy fetches by kind.", "kind"),
		queries:       d("dns_queries_total", "DNS queries sent by discovery."),
		dnsFailures:   d("dns_failures_total", "Failed DNS queries of discovery by kind.", "kind"),
		daneUp:        d("dane_up", "1 while the resolver self-check passes and DANE is on, else 0."),
	}
}

func (c *discoveryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.answers, c.temp, c.cache, c.entries, c.bytes, c.evictions, c.fetches, c.fetchFailures, c.queries, c.dnsFailures, c.daneUp} {
		ch <- d
	}
}

func (c *discoveryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for i, v := range s.Answers {
		counter(c.answers, v, discovery.Source(i).String())
	}
	counter(c.temp, s.Temp)
	for i, v := range s.Cache {
		counter(c.cache, v, discovery.CacheState(i).String())
	}
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes))
	counter(c.evictions, s.Evictions)
	counter(c.fetches, s.Fetches)
	for i, v := range s.FetchFailures {
		counter(c.fetchFailures, v, mtasts.FetchErrorKind(i).String())
	}
	counter(c.queries, s.DNSQueries)
	for i, v := range s.DNSFailures {
		counter(c.dnsFailures, v, discovery.DNSErrorKind(i).String())
	}
	up := 0.0
	if s.SelfCheckOK {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.daneUp, prometheus.GaugeValue, up)
}
