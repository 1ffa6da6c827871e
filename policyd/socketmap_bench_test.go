package policyd

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkSocketmap measures lookups over persistent unix-socket connections, as Postfix
// makes them, with a no-op Lookuper, at concurrency 1, 8 and 32 (one connection per
// client). "policyd" is SocketmapServer; "raw" is a bare netstring loop answering
// "NOTFOUND " with no limits, deadlines or bookkeeping: the floor the server is compared
// with. Reported: lookups/s, and p50/p99 latency in µs as seen by the client.
func BenchmarkSocketmap(b *testing.B) {
	for _, impl := range []string{"policyd", "raw"} {
		for _, conc := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/conc=%d", impl, conc), func(b *testing.B) {
				var spec string
				if impl == "policyd" {
					noop := LookupFunc(func(context.Context, string, string) Reply { return Reply{Status: StatusNotFound} })
					_, spec = startSocketmap(b, "unix", SocketmapOptions{Lookuper: noop, Logger: discardLogger()})
				} else {
					spec = startRawNetstringServer(b)
				}
				benchLookups(b, spec, conc)
			})
		}
	}
}

func benchLookups(b *testing.B, spec string, conc int) {
	clients := make([]*SocketmapClient, conc)
	for i := range clients {
		clients[i] = dialClient(b, spec)
		lookupOK(b, clients[i], "tlspolicy", "warm.up")
	}
	lat := make([][]time.Duration, conc)
	for i := range lat {
		lat[i] = make([]time.Duration, 0, b.N/conc+1)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		n := b.N / conc
		if i < b.N%conc {
			n++
		}
		wg.Go(func() {
			for range n {
				t0 := time.Now()
				r, err := c.Lookup(ctx, "tlspolicy", "[mx.example.com]:25")
				lat[i] = append(lat[i], time.Since(t0))
				if err != nil || r.Status != StatusNotFound {
					b.Errorf("lookup: %+v, %v", r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "lookups/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// startRawNetstringServer runs the no-op reference server for BenchmarkSocketmap.
func startRawNetstringServer(b *testing.B) string {
	l, spec := listenTest(b, "unix")
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				var buf []byte
				reply := AppendNetstring(nil, []byte("NOTFOUND "))
				for {
					var err error
					if buf, err = readNetstring(br, DefaultMaxRequest, buf); err != nil {
						return
					}
					if _, err := c.Write(reply); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	return spec
}
