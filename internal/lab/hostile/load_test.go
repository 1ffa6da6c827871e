package hostile

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

// TestReloadUnderLoad sends 1000 SIGHUPs to the running daemon while 8
// clients query the socketmap and 8 drive the milter with go-milter
// client sessions carrying Postfix TLS macros, continuously. The main file
// includes conf.d/*.toml, and before each reload files there change: the
// partner's file is replaced with the other of two versions (A and B, in
// which partner.example / 192.0.2.10 get different answers), a new file
// with one endpoint is added and the one added three reloads earlier is
// removed, and a file is renamed (its endpoint, moving.example, must stay
// covered throughout). Every reload must be in force within 10 s, new
// file and removed file included; every lookup and every milter session
// must succeed and get one of the valid answers; both partner answers
// must be seen; the metrics must count every reload as successful and
// none as failed; the reload lines must say what changed. How long the
// reloads took is recorded, not judged: it depends on the machine's load.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	const clients = 8
	reloads := reloadsUnderLoad
	split := strings.Index(endpointsA, "[[endpoint]]\nname  = \"verified\"")
	partnerA, fixed := endpointsA[:split], endpointsA[split:]
	confd := t.TempDir()
	put := func(name, data string) { writeFileAtomic(t, filepath.Join(confd, name), []byte(data)) }
	extra := func(i int) string {
		return fmt.Sprintf("[[endpoint]]\nname = \"extra%d\"\nhosts = [\"x%d.example\"]\n  [endpoint.outbound]\n  encryption = true\n", i, i)
	}
	moving := "[[endpoint]]\nname = \"moving\"\nhosts = [\"moving.example\"]\n  [endpoint.outbound]\n  encryption = true\n"
	put("partner.toml", partnerA)
	put("m-0.toml", moving)
	c := conf{Level: "warn", Metrics: true, Endpoints: fixed, Include: `["` + confd + `/*.toml"]`}
	d := startDaemon(t, c)
	d.checkServed(t)
	d.wantLookup(t, "moving.example", "OK encrypt")
	baseRSS := d.rssMB()
	d.resetPeak()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups, lookupErrs, gotA, gotB, gotMoving atomic.Int64
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
				switch n % 4 {
				case 2:
					key, wantA, wantB = "moving.example", "OK encrypt", "OK encrypt"
				case 3:
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
				case got == wantA && key == "moving.example":
					gotMoving.Add(1)
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
	ask := func(key string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := probe.Lookup(ctx, "tlspolicy", key)
		if err != nil {
			t.Fatalf("probe %s: %v", key, err)
		}
		return r.String()
	}
	// churn changes the files for reload i, reloads and waits until the
	// new files are in force; it returns how long that took.
	churn := func(i int) time.Duration {
		partner, want := endpointsB, answerPartnerB
		if i%2 == 0 {
			partner, want = partnerA, answerPartnerA
		}
		put("partner.toml", partner)
		put(fmt.Sprintf("x-%d.toml", i), extra(i))
		os.Remove(filepath.Join(confd, fmt.Sprintf("x-%d.toml", i-3)))
		if err := os.Rename(filepath.Join(confd, fmt.Sprintf("m-%d.toml", i-1)), filepath.Join(confd, fmt.Sprintf("m-%d.toml", i))); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		d.reload()
		for {
			if ask("partner.example") == want && ask(fmt.Sprintf("x%d.example", i)) == "OK encrypt" && ask(fmt.Sprintf("x%d.example", i-3)) == answerNotFound {
				return time.Since(t0)
			}
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("reload %d not in force after 10 s:\n%s", i, d.logs.tail(20))
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	start := time.Now()
	var slowest time.Duration
	for i := 1; i <= reloads; i++ {
		slowest = max(slowest, churn(i))
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
	record("load: reloads under load", "%d SIGHUP reloads, each changing files of conf.d/, in %v (slowest %v); metrics: %v ok, %v failed, generation %v", reloads, elapsed.Round(time.Millisecond), slowest.Round(time.Millisecond), ok, max(failed, 0), gen)
	record("load: socketmap lookups during reloads", "%d by %d clients, %d failed or wrong; partner.example answered A %d, B %d times; the renamed file's endpoint %d times", lookups.Load(), clients, lookupErrs.Load(), gotA.Load(), gotB.Load(), gotMoving.Load())
	record("load: milter sessions during reloads", "%d by %d clients, %d failed or dropped; %d passed (A), %d deferred (B)", sessions.Load(), clients, sessionErrs.Load(), passed.Load(), deferred.Load())
	record("load: peak RSS during reloads", "%.1f MB (%.1f MB before)", peak, baseRSS)
	if lookupErrs.Load() != 0 || sessionErrs.Load() != 0 {
		t.Errorf("%d failed lookups, %d failed milter sessions", lookupErrs.Load(), sessionErrs.Load())
	}
	if gotA.Load() == 0 || gotB.Load() == 0 || gotMoving.Load() == 0 || passed.Load() == 0 || deferred.Load() == 0 {
		t.Errorf("every configuration must be seen: lookups A %d B %d moving %d, sessions A %d B %d", gotA.Load(), gotB.Load(), gotMoving.Load(), passed.Load(), deferred.Load())
	}
	if lookups.Load() < 1000 || sessions.Load() < 100 {
		t.Errorf("too little load: %d lookups, %d sessions", lookups.Load(), sessions.Load())
	}
	if ok != float64(reloads) || failed > 0 || gen != float64(reloads+1) {
		t.Errorf("metrics: %v reloads ok, %v failed, generation %v; want %d, 0, %d", ok, failed, gen, reloads, reloads+1)
	}
	// The reload lines (at level info, set by a reload): each of these
	// changes five files (the partner's, one added, one removed, one
	// renamed: its old and new name) and compiles three, adds one
	// endpoint, changes the partner and removes one.
	info := c
	info.Level = "info"
	d.writeConf(info)
	churn(reloads + 1)
	mark := d.logs.mark()
	for i := reloads + 2; i < reloads+5; i++ {
		churn(i)
	}
	if n := d.logs.count(mark, " files_changed=5 compiled=3 added=1 changed=1 removed=1 "); n != 3 {
		t.Errorf("%d of 3 reload lines say files_changed=5 compiled=3 added=1 changed=1 removed=1:\n%s", n, strings.Join(d.logs.since(mark), "\n"))
	}
	if peak > rssLimitMB(128) {
		t.Errorf("peak RSS %.1f MB during the reloads", peak)
	}
	put("partner.toml", partnerA)
	d.writeConf(c)
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
