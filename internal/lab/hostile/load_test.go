package hostile

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/policyd"
)

// metric fetches one sample from the daemon's metrics listener, e.g.
// `tlsgate_reloads_total{result="ok"}`; -1 if it is not there.
func (d *daemon) metric(t testing.TB, name string) float64 {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.metrics)
		},
	}}
	resp, err := cl.Get("http://tlsgate/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// reloadsUnderLoad is the number of SIGHUPs of TestReloadUnderLoad: 1000,
// also with the race detector (about 25 s alone there, more beside the
// other tests; no wall-clock limit applies).
const reloadsUnderLoad = 1000

// TestReloadUnderLoad sends 1000 SIGHUPs to
// the running daemon, each after replacing its configuration with the
// other of two valid files (A and B, in which partner.example / 192.0.2.10
// get different answers), while 8 clients query the socketmap and 8 drive
// the milter with go-milter client sessions carrying Postfix TLS macros,
// continuously. Every reload must be in force within 10 s; every lookup
// and every milter session must succeed and get one of the two valid
// answers; both answers must be seen; the metrics must count every reload
// as successful and none as failed. How long the reloads took is recorded,
// not judged: it depends on the machine's load.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	const clients = 8
	reloads := reloadsUnderLoad
	d := startDaemon(t, conf{Level: "warn", Metrics: true})
	confA, confB := conf{Level: "warn", Metrics: true}, conf{Level: "warn", Metrics: true, Endpoints: endpointsB}
	d.checkServed(t)
	baseRSS := d.rssMB()
	d.resetPeak()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups, lookupErrs, gotA, gotB atomic.Int64
	var sessions, sessionErrs, passed, deferred atomic.Int64
	var firstErr sync.Once
	fail := func(format string, args ...any) {
		firstErr.Do(func() { t.Errorf(format, args...) })
	}
	for i := range clients {
		wg.Go(func() {
			c, err := policyd.DialSocketmap(context.Background(), "unix:"+d.socketmap)
			if err != nil {
				lookupErrs.Add(1)
				fail("socketmap client %d: %v", i, err)
				return
			}
			defer func() { c.Close() }()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key, wantA, wantB := "partner.example", answerPartnerA, answerPartnerB
				if n%4 == 3 {
					key, wantA, wantB = "other.example", answerNotFound, answerNotFound
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := c.Lookup(ctx, "tlspolicy", key)
				cancel()
				lookups.Add(1)
				switch got := r.String(); {
				case err != nil:
					lookupErrs.Add(1)
					fail("socketmap client %d: lookup %d: %v", i, n, err)
					c.Close()
					if c, err = policyd.DialSocketmap(context.Background(), "unix:"+d.socketmap); err != nil {
						return
					}
				case got == wantA && key == "partner.example":
					gotA.Add(1)
				case got == wantB && key == "partner.example":
					gotB.Add(1)
				case got == wantA:
				default:
					lookupErrs.Add(1)
					fail("socketmap client %d: %s → %q, want %q or %q", i, key, got, wantA, wantB)
				}
			}
		})
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				s := partnerTLS
				s.QueueID = fmt.Sprintf("L%dN%d", i, n)
				r, err := runMilter(d.milter, s)
				sessions.Add(1)
				switch {
				case err != nil:
					sessionErrs.Add(1)
					fail("milter client %d: session %d: %v", i, n, err)
				case r.Accepted && strings.Contains(r.AuthRes, "x-tls=pass policy.endpoint=partner"):
					passed.Add(1) // configuration A
				case r.Refused && r.Code == milterDeferCode && strings.Contains(r.Reply, "4.7.1"):
					deferred.Add(1) // configuration B: the CN is not mx9.partner.example
				default:
					sessionErrs.Add(1)
					fail("milter client %d: session %d: %+v", i, n, r)
				}
			}
		})
	}

	// The reloader: one SIGHUP at a time, each awaited through its effect.
	probe, err := policyd.DialSocketmap(context.Background(), "unix:"+d.socketmap)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	start := time.Now()
	var slowest time.Duration
	for i := 1; i <= reloads; i++ {
		c, want := confB, answerPartnerB
		if i%2 == 0 {
			c, want = confA, answerPartnerA
		}
		d.writeConf(c)
		t0 := time.Now()
		d.reload()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := probe.Lookup(ctx, "tlspolicy", "partner.example")
			cancel()
			if err != nil {
				t.Fatalf("reload %d: probe: %v", i, err)
			}
			if r.String() == want {
				break
			}
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("reload %d not in force after 10 s:\n%s", i, d.logs.tail(20))
			}
			time.Sleep(200 * time.Microsecond)
		}
		slowest = max(slowest, time.Since(t0))
	}
	elapsed := time.Since(start)
	t.Logf("%d reloads in %v (slowest %v)", reloads, elapsed.Round(time.Millisecond), slowest.Round(time.Millisecond))
	// Let the clients run a little on the last configuration, then stop.
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	d.alive(t)

	ok, failed, gen := d.metric(t, `tlsgate_reloads_total{result="ok"}`), d.metric(t, `tlsgate_reloads_total{result="failed"}`), d.metric(t, "tlsgate_config_generation")
	peak := d.peakMB()
	record("load: reloads under load", "%d SIGHUP reloads in %v (slowest %v); metrics: %v ok, %v failed, generation %v", reloads, elapsed.Round(time.Millisecond), slowest.Round(time.Millisecond), ok, max(failed, 0), gen)
	record("load: socketmap lookups during reloads", "%d by %d clients, %d failed or wrong; partner.example answered A %d, B %d times", lookups.Load(), clients, lookupErrs.Load(), gotA.Load(), gotB.Load())
	record("load: milter sessions during reloads", "%d by %d clients, %d failed or dropped; %d passed (A), %d deferred (B)", sessions.Load(), clients, sessionErrs.Load(), passed.Load(), deferred.Load())
	record("load: peak RSS during reloads", "%.1f MB (%.1f MB before)", peak, baseRSS)
	if lookupErrs.Load() != 0 || sessionErrs.Load() != 0 {
		t.Errorf("%d failed lookups, %d failed milter sessions", lookupErrs.Load(), sessionErrs.Load())
	}
	if gotA.Load() == 0 || gotB.Load() == 0 || passed.Load() == 0 || deferred.Load() == 0 {
		t.Errorf("both configurations must be seen: lookups A %d B %d, sessions A %d B %d", gotA.Load(), gotB.Load(), passed.Load(), deferred.Load())
	}
	if lookups.Load() < 1000 || sessions.Load() < 100 {
		t.Errorf("too little load: %d lookups, %d sessions", lookups.Load(), sessions.Load())
	}
	if ok != float64(reloads) || failed > 0 || gen != float64(reloads+1) {
		t.Errorf("metrics: %v reloads ok, %v failed, generation %v; want %d, 0, %d", ok, failed, gen, reloads, reloads+1)
	}
	if peak > rssLimitMB(128) {
		t.Errorf("peak RSS %.1f MB during the reloads", peak)
	}
	d.writeConf(confA)
	d.reload()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, err := d.lookup("tlspolicy", "partner.example"); err == nil && r.String() == answerPartnerA {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("configuration A not back in force")
		}
		time.Sleep(time.Millisecond)
	}
	d.checkServed(t)
}

// TestConcurrentSocketmapConnections opens 1000 socketmap connections (the
// default cap) at once, then has each send 10 lookups at the same moment:
// every one gets the correct answer.
func TestConcurrentSocketmapConnections(t *testing.T) {
	t.Parallel()
	needFDs(t, 1100)
	const conns, perConn = 1000, 10
	d := startDaemon(t, conf{Level: "warn"})
	baseRSS := d.rssMB()
	d.resetPeak()
	clients := make([]*policyd.SocketmapClient, conns)
	for i := range clients {
		c, err := policyd.DialSocketmap(context.Background(), "unix:"+d.socketmap)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		clients[i] = c
		defer c.Close()
	}
	keys := []string{"partner.example", "verified.example", "other.example", "[192.0.2.10]:25", "PARTNER.example."}
	want := []string{answerPartnerA, answerVerified, answerNotFound, answerPartnerA, answerPartnerA}
	var okCount, bad atomic.Int64
	var firstErr sync.Once
	go0 := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			<-go0
			for j := range perConn {
				k := (i + j) % len(keys)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r, err := c.Lookup(ctx, "tlspolicy", keys[k])
				cancel()
				if err != nil || r.String() != want[k] {
					bad.Add(1)
					firstErr.Do(func() { t.Errorf("connection %d lookup %d: %q, %v; want %q", i, j, r.String(), err, want[k]) })
					return
				}
				okCount.Add(1)
			}
		})
	}
	start := time.Now()
	close(go0)
	wg.Wait()
	el := time.Since(start)
	peak := d.peakMB()
	record("load: 1000 concurrent socketmap connections", "%d of %d lookups correct in %v (%.0f/s), %d failed; peak RSS %.1f MB (%.1f MB before)", okCount.Load(), conns*perConn, el.Round(time.Millisecond), float64(okCount.Load())/el.Seconds(), bad.Load(), peak, baseRSS)
	if okCount.Load() != conns*perConn {
		t.Errorf("%d of %d lookups correct", okCount.Load(), conns*perConn)
	}
	if peak > rssLimitMB(128) {
		t.Errorf("peak RSS %.1f MB", peak)
	}
	for _, c := range clients {
		c.Close()
	}
	d.checkServed(t)
}
