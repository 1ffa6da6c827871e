package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsgate/tlsgate/internal/lab/dnslab"
)

// filled returns a fixture whose cache holds n domains, a tenth with
// DANE, a tenth with an MTA-STS policy, the rest with nothing, and their
// names.
func filled(tb testing.TB, n int) (*fixture, []string) {
	tb.Helper()
	f := newFixture(tb, Config{CacheEntries: n + 1, CacheBytes: 1 << 40})
	names := make([]string, n)
	for i := range n {
		name := "d" + strconv.Itoa(i) + ".example"
		names[i] = name
		switch i % 10 {
		case 0:
			f.daneDomain(name, 3600)
		case 1:
			f.stsDomain(name, "1", enforce("mx1."+name, "*."+name), 3600)
		}
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	work := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				if _, err := f.d.Lookup(ctx, name); err != nil {
					panic(err)
				}
			}
		}()
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	// The answers themselves are not needed any more.
	f.dns.answers, f.fetch.byName = nil, nil
	return f, names
}

// BenchmarkLookupHit measures the socketmap hot path: a lookup answered
// from the cache, with 100 and with 100,000 cached domains.
func BenchmarkLookupHit(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("domains=%d", n), func(b *testing.B) {
			f, names := filled(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, _ := f.d.Lookup(ctx, names[i%len(names)])
				if r.Cache != CacheHit {
					b.Fatalf("not a hit: %+v", r)
				}
			}
		})
		b.Run(fmt.Sprintf("domains=%d/parallel", n), func(b *testing.B) {
			f, names := filled(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					f.d.Lookup(ctx, names[i%len(names)])
					i += 7
				}
			})
		})
	}
}

// BenchmarkCacheMemory reports the heap and RSS that 100 and 100,000
// cached domains take (filled once; b.N is irrelevant).
func BenchmarkCacheMemory(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("domains=%d", n), func(b *testing.B) {
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			rssBefore := rssKB()
			f, _ := filled(b, n)
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
			b.ReportMetric(heap/1e6, "heap-MB")
			b.ReportMetric(heap/float64(n), "heap-B/domain")
			b.ReportMetric(float64(f.d.Stats().Bytes)/float64(n), "est-B/domain")
			b.ReportMetric(float64(rssKB())/1024, "rss-MB")
			b.ReportMetric(float64(rssKB()-rssBefore)/1024, "rss-delta-MB")
			// Settled: garbage of the fill returned to the OS.
			debug.FreeOSMemory()
			b.ReportMetric(float64(rssKB())/1024, "rss-settled-MB")
			for i := 0; i < b.N; i++ {
			}
			runtime.KeepAlive(f)
		})
	}
}

func rssKB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// benchLab is a lab with one domain that has both DANE and an MTA-STS
// policy, so that a cold lookup does everything: MX, A, AAAA, TLSA,
// TXT, the policy host's A and AAAA, and the HTTPS fetch.
func benchLab(b *testing.B) *dnslab.Lab {
	certs := newLabCerts(b)
	l := dnslab.Start(b, dnslab.Options{Zones: []dnslab.Zone{
		{Name: "stsdane.test", Records: mxZone("stsdane.test", dnslab.SinkIP(0), append(dnslab.STSRecords("stsdane.test", "1"), certs.tlsa("stsdane.test"))...)},
	}})
	l.SetPolicy("stsdane.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsdane.test")})
	return l
}

// BenchmarkLabColdLookup is a lookup with nothing cached (a new
// Discoverer each time) against the lab's resolver and HTTPS server.
func BenchmarkLabColdLookup(b *testing.B) {
	l := benchLab(b)
	ctx := context.Background()
	d0, _ := labDiscoverer(b, l, Config{})
	if err := d0.SelfCheck(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		d, _ := labDiscoverer(b, l, Config{})
		d.self.Store(selfOK) // measured separately: one query at start
		b.StartTimer()
		r, err := d.Lookup(ctx, "stsdane.test")
		if err != nil || r.Postfix.Text != "dane" || r.Sendmail.Kind != Found {
			b.Fatalf("%+v %v", r, err)
		}
	}
}

// BenchmarkLabRawRoundTrips does the same DNS queries and HTTPS fetch as
// a cold lookup, one after the other, with miekg/dns and net/http, as
// the yardstick for BenchmarkLabColdLookup.
func BenchmarkLabRawRoundTrips(b *testing.B) {
	l := benchLab(b)
	pool := x509.NewCertPool()
	pool.AddCert(l.CA.Cert)
	c := &dns.Client{Timeout: 5 * time.Second}
	queries := []struct {
		name  string
		qtype uint16
	}{
		{"stsdane.test", dns.TypeMX}, {"mx.stsdane.test", dns.TypeA}, {"mx.stsdane.test", dns.TypeAAAA},
		{"_25._tcp.mx.stsdane.test", dns.TypeTLSA}, {"_mta-sts.stsdane.test", dns.TypeTXT},
		{"mta-sts.stsdane.test", dns.TypeA}, {"mta-sts.stsdane.test", dns.TypeAAAA},
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, q := range queries {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(q.name), q.qtype)
			m.SetEdns0(1232, true)
			if _, _, err := c.Exchange(m, dnslab.ResolverAddr); err != nil {
				b.Fatal(err)
			}
		}
		// Dial the address the A query gave, as discovery does.
		hc := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, dnslab.STSAddr)
			},
		}}
		resp, err := hc.Get("https://mta-sts.stsdane.test/.well-known/mta-sts.txt")
		if err != nil {
			b.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
}
