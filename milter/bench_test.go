package milter

import (
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// benchTarget is a milter server under load.
type benchTarget struct {
	name string
	addr string
}

// startNoOp starts a go-milter server whose milter does nothing, with the
// same negotiation as tlsgate (actions, events, replies, macro requests),
// so that the comparison measures tlsgate's own work.
func startNoOp(b *testing.B) string {
	srv := gomilter.NewServer(
		gomilter.WithMilter(func() gomilter.Milter { return gomilter.NoOpMilter{} }),
		gomilter.WithActions(neededActions),
		gomilter.WithProtocols(protocolOpts),
		gomilter.WithMacroRequest(gomilter.StageConnect, ConnectMacros),
		gomilter.WithMacroRequest(gomilter.StageHelo, HeloMacros),
		gomilter.WithMacroRequest(gomilter.StageMail, MailMacros),
		gomilter.WithMacroRequest(gomilter.StageEOM, EOMMacros),
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func startBenchMilter(b *testing.B) string {
	pol := mustPolicy(b, postfixPolicy)
	srv, err := New(Options{
		Policy: func() *policy.Policy { return pol },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), // lines are formatted, then dropped
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

var benchBody = []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n", 36)) // ~2 KB

// benchMessage runs one Postfix-shaped SMTP session with one message: a
// covered client with a trusted certificate (EHLO, STARTTLS, EHLO, MAIL,
// two RCPTs, 10 headers, a 2 KB body, EOM, ABORT, QUIT), one milter
// connection per SMTP session as Postfix does.
func benchMessage(cl *gomilter.Client) error {
	mta := newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test")
	cs, err := cl.Session(mta)
	if err != nil {
		return err
	}
	defer cs.Close()
	mta.stage = "connect"
	if _, err := cs.Conn("client.lab.test", gomilter.FamilyInet, 40000, "192.0.2.10"); err != nil {
		return err
	}
	mta.stage = "helo"
	if _, err := cs.Helo("client.lab.test"); err != nil {
		return err
	}
	mta.tls = postfixTLS(true, "client.lab.test", "Lab Test CA")
	if _, err := cs.Helo("client.lab.test"); err != nil {
		return err
	}
	mta.stage = "mail"
	mta.msg = map[string]string{"{mail_addr}": "a@company-b.example"}
	if act, err := cs.Mail("a@company-b.example", ""); err != nil || act.Type != gomilter.ActionContinue {
		return errOr(err, act)
	}
	mta.stage = "rcpt"
	for _, r := range []string{"u1@lab.test", "u2@lab.test"} {
		if _, err := cs.Rcpt(r, ""); err != nil {
			return err
		}
	}
	mta.stage = "data"
	mta.msg["i"] = "87BBD98A818"
	if _, err := cs.DataStart(); err != nil {
		return err
	}
	for _, h := range [][2]string{
		{"Received", "from a (b [192.0.2.1]) by mx.company-b.example (Postfix) with ESMTPS id X; Sat, 28 Nov 2026 15:52:52 +0000"},
		{"Authentication-Results", "mx.company-b.example; spf=pass smtp.mailfrom=company-b.example"},
		{"DKIM-Signature", "v=1; a=rsa-sha256; d=company-b.example; s=s1; h=from:to:subject; bh=xyz; b=abc"},
		{"From", "<a@company-b.example>"}, {"To", "<u1@lab.test>, <u2@lab.test>"}, {"Subject", "benchmark"},
		{"Date", "Sat, 28 Nov 2026 15:52:52 +0000"}, {"Message-ID", "<1@company-b.example>"},
		{"MIME-Version", "1.0"}, {"Content-Type", "text/plain; charset=us-ascii"},
	} {
		if _, err := cs.HeaderField(h[0], h[1], nil); err != nil {
			return err
		}
	}
	if _, err := cs.HeaderEnd(); err != nil {
		return err
	}
	if _, err := cs.BodyChunk(benchBody); err != nil {
		return err
	}
	mta.stage = "eom"
	if _, act, err := cs.End(); err != nil || (act.Type != gomilter.ActionAccept && act.Type != gomilter.ActionContinue) {
		return errOr(err, act)
	}
	return cs.Abort(nil)
}

type actionError struct{ act *gomilter.Action }

func (e actionError) Error() string { return "unexpected answer " + e.act.String() }

func errOr(err error, act *gomilter.Action) error {
	if err != nil {
		return err
	}
	return actionError{act}
}

// loadResult is the outcome of a load run against one target.
type loadResult struct {
	lat     []time.Duration
	elapsed time.Duration
}

func (r *loadResult) add(o loadResult) {
	r.lat = append(r.lat, o.lat...)
	r.elapsed += o.elapsed
}

func (r *loadResult) rate() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r *loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

// runLoad sends n messages to addr from conc concurrent clients.
func runLoad(b *testing.B, addr string, n, conc int) loadResult {
	cl := gomilter.NewClient("tcp", addr)
	var (
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, n)
		wg   sync.WaitGroup
		next = make(chan struct{}, n)
		fail error
	)
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				t0 := time.Now()
				err := benchMessage(cl)
				d := time.Since(t0)
				mu.Lock()
				if err != nil && fail == nil {
					fail = err
				}
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if fail != nil {
		b.Fatal(fail)
	}
	return loadResult{lat: lat, elapsed: time.Since(start)}
}

// BenchmarkMilterVsNoOp runs tlsgate's milter and a no-op go-milter server
// side by side with go-milter's client, in alternating rounds so that both
// see the same machine state, and reports messages per second, p50 and
// p99 latency for both and the ratio of the rates (target: >= 0.8).
// b.N counts messages per server.
//
//	go test -run '^$' -bench MilterVsNoOp -benchtime 4000x ./milter/
func BenchmarkMilterVsNoOp(b *testing.B) {
	const conc = 4
	targets := []benchTarget{{"noop", startNoOp(b)}, {"tlsgate", startBenchMilter(b)}}
	// Warm up both (connections, JIT-free but caches and goroutine pools).
	for _, t := range targets {
		runLoad(b, t.addr, 50, conc)
	}
	results := make([]loadResult, len(targets))
	round := 200
	b.ResetTimer()
	for k, done := 0, 0; done < b.N; k, done = k+1, done+round {
		n := min(round, b.N-done)
		for j := range targets {
			i := (j + k) % len(targets) // alternate who goes first
			results[i].add(runLoad(b, targets[i].addr, n, conc))
		}
	}
	b.StopTimer()
	noop, tg := &results[0], &results[1]
	ratio := tg.rate() / noop.rate()
	b.ReportMetric(noop.rate(), "noop-msgs/s")
	b.ReportMetric(tg.rate(), "tlsgate-msgs/s")
	b.ReportMetric(float64(noop.pct(0.50).Microseconds()), "noop-p50-µs")
	b.ReportMetric(float64(noop.pct(0.99).Microseconds()), "noop-p99-µs")
	b.ReportMetric(float64(tg.pct(0.50).Microseconds()), "tlsgate-p50-µs")
	b.ReportMetric(float64(tg.pct(0.99).Microseconds()), "tlsgate-p99-µs")
	b.ReportMetric(ratio, "ratio")
	b.Logf("n=%d per server, %d concurrent sessions: noop %.0f msg/s p50 %v p99 %v; tlsgate %.0f msg/s p50 %v p99 %v; ratio %.2f (target >= 0.80)",
		len(tg.lat), conc, noop.rate(), noop.pct(0.5), noop.pct(0.99), tg.rate(), tg.pct(0.5), tg.pct(0.99), ratio)
}
