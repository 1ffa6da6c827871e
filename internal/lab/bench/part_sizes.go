package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// partSizes measures how lookup cost, load time and memory grow with the
// number of endpoints.
func (r *runner) partSizes(s *Section) error {
	dir := filepath.Join(r.work, "p2")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sizes := r.o.Sizes
	s.Intro = fmt.Sprintf(`Generated policies with %s endpoints, mixing the four kinds of gen.go in equal parts:
a domain with its subdomains (".d1.example") and a verified-name requirement, a name plus an IPv4 /24,
a name plus one IPv4 address plus an IPv6 /48 with a fingerprint pin, and subdomain patterns only (half of them in monitor mode).
For each size, a `+"`tlsgate serve`"+` process (CPU %d, default logging) answers the load client (CPU %d, concurrency %d,
4,096 keys, half covered, spread over the whole policy) in interleaved rounds; CPU per lookup is its utime+stime over the lookups.
Start is exec to accepting connections; reload is SIGHUP to the "reload result=ok" log line, after a comment line was added to the
file %v before (so that it is compiled again, as after an edit);
peak RSS (start) is VmHWM right after the start, the peak of the cold load; RSS is VmRSS after the lookup rounds once it has settled
(sampled every 500 ms until it moves by less than 1%% in 2 s, at most 20 s); peak RSS (after reloads) is VmHWM after three reloads.
The in-process columns call policy.Policy.Outbound directly (no socket, no log line) and policy.Load, in the runner's process.
The live policy is measured from a heap profile of a load in the runner's process (runtime.MemProfileRate = 1): the bytes still in
use, after two collections, by allocations made under policy.Load, divided by the endpoints.`,
		joinInts(sizes), serverCPU, clientCPU, r.o.SizeConc, quiet)
	type sized struct {
		n                int
		cfg, keys, spec  string
		hitKeys, missKey []string
		proc             *Process
	}
	var all []*sized
	for _, n := range sizes {
		spec := "unix:" + filepath.Join(dir, fmt.Sprintf("s%d.sock", n))
		g, err := GenerateConfig(ConfigOptions{Endpoints: n, SocketmapListen: spec})
		if err != nil {
			return err
		}
		z := &sized{n: n, spec: spec, cfg: filepath.Join(dir, fmt.Sprintf("tlsgate-%d.toml", n)), keys: filepath.Join(dir, fmt.Sprintf("keys-%d.txt", n))}
		for i, k := range g.Keys {
			if i%2 == 0 {
				z.hitKeys = append(z.hitKeys, k)
			} else {
				z.missKey = append(z.missKey, k)
			}
		}
		if err := os.WriteFile(z.cfg, g.TOML, 0o644); err != nil {
			return err
		}
		if err := writeLines(z.keys, g.Keys); err != nil {
			return err
		}
		all = append(all, z)
		r.logf("  generated %d endpoints: %d bytes", n, len(g.TOML))
		r.data.add(Measurement{Section: "size", Subject: "config", Variant: strconv.Itoa(n), Metric: "file_bytes", Value: float64(len(g.TOML))})
	}

	// In-process: policy.Load and Outbound, interleaved.
	for round := 1; round <= r.o.Rounds; round++ {
		for _, z := range rotate(all, round) {
			t0 := time.Now()
			p, err := policy.Load(z.cfg)
			if err != nil {
				return err
			}
			el := time.Since(t0)
			v := strconv.Itoa(z.n)
			r.data.add(Measurement{Section: "size", Round: round, Subject: "in-process", Variant: v, Metric: "load_ms", Value: ms(el)})
			r.data.add(Measurement{Section: "size", Round: round, Subject: "in-process", Variant: v, Metric: "ns_per_hit", Value: lookupNS(p, z.hitKeys)})
			r.data.add(Measurement{Section: "size", Round: round, Subject: "in-process", Variant: v, Metric: "ns_per_miss", Value: lookupNS(p, z.missKey)})
		}
		runtime.GC()
	}

	defer func() {
		for _, z := range all {
			if z.proc != nil {
				z.proc.Stop()
			}
		}
	}()
	for _, z := range all {
		p, err := StartProcess(fmt.Sprintf("tlsgate-%d", z.n), z.spec, filepath.Join(dir, fmt.Sprintf("tlsgate-%d.log", z.n)), r.cpu(serverCPU), nil,
			r.o.Tlsgate, "serve", "-c", z.cfg)
		if err != nil {
			return err
		}
		z.proc = p
		v := strconv.Itoa(z.n)
		r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "start_ms", Value: ms(p.Started)})
		if m, err := ProcMemory(p.PID()); err == nil {
			r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "rss_start_mb", Value: mb(m.RSS)})
			r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "hwm_start_mb", Value: mb(m.HWM)})
		}
		r.logf("  tlsgate with %d endpoints listening after %v", z.n, p.Started.Round(time.Millisecond))
	}
	s.Commands = append(s.Commands,
		"tlsgate-bench gen-config -n N -socketmap-listen unix:sN.sock -o tlsgate-N.toml -keys keys-N.txt",
		fmt.Sprintf("taskset -c %d tlsgate serve -c tlsgate-N.toml 2>tlsgate-N.log", serverCPU),
		fmt.Sprintf("taskset -c %d tlsgate-bench load-socketmap -addr unix:sN.sock -keys keys-N.txt -conc %d -duration %v -warmup %v -server-pid PID",
			clientCPU, r.o.SizeConc, r.o.Duration, r.o.Warmup),
		"kill -HUP PID   # reload, timed to the \"reload result=ok\" line, 3 times")
	for round := 1; round <= r.o.Rounds; round++ {
		for _, z := range rotate(all, round) {
			args := append([]string{r.o.Self, "load-socketmap", "-keys", z.keys}, r.clientArgs(z.spec, r.o.SizeConc, z.proc.PID())...)
			res, err := RunClient(r.cpu(clientCPU), r.clientTimeout(), args...)
			if err != nil {
				return err
			}
			if res.Errors > 0 {
				return fmt.Errorf("%d endpoints: %d errors, first: %s", z.n, res.Errors, res.FirstError)
			}
			r.data.addLoad(Measurement{Section: "size", Round: round, Subject: subjTlsgate, Variant: strconv.Itoa(z.n), Conc: r.o.SizeConc}, res)
			r.logf("  %d endpoints round %d: %.0f/s cpu %.2fµs", z.n, round, res.Rate(), res.ServerCPUPerOp())
		}
	}
	// RSS once the runtime has returned what it does not need: sampled
	// every 500 ms until no process changed by more than 1% over 2 s (at
	// most Options.SettleMax).
	settled := settleRSS(all2pids(all, func(z *sized) int { return z.proc.PID() }), r.o.SettleMax)
	for i, z := range all {
		r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: strconv.Itoa(z.n), Metric: "rss_mb", Value: mb(settled[i])})
	}
	for _, z := range all {
		v := strconv.Itoa(z.n)
		for i := 1; i <= 3; i++ {
			// The file changes (a comment line more), so that the reload
			// compiles it again, as it would after an edit.
			f, err := os.OpenFile(z.cfg, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			fmt.Fprintf(f, "# reload %d\n", i)
			f.Close()
			time.Sleep(quiet)
			d, err := reloadTime(z.proc, i+1)
			if err != nil {
				return err
			}
			r.data.add(Measurement{Section: "size", Round: i, Subject: subjTlsgate, Variant: v, Metric: "reload_ms", Value: ms(d)})
		}
		if m, err := ProcMemory(z.proc.PID()); err == nil {
			r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "hwm_mb", Value: mb(m.HWM)})
			r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "rss_after_reload_mb", Value: mb(m.RSS)})
		}
	}
	// The live policy, from a heap profile of a load in this process: at
	// 10,000 endpoints, or the largest size below.
	heapAt := all[0]
	for _, z := range all {
		if z.n <= 10000 && z.n > heapAt.n {
			heapAt = z
		}
	}
	live, sites, err := liveBytes(heapAt.cfg, filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", heapAt.n)))
	if err != nil {
		return err
	}
	r.heapAt = heapAt.n
	r.data.add(Measurement{Section: "size", Subject: "in-process", Variant: strconv.Itoa(heapAt.n), Metric: "live_bytes_per_endpoint", Value: float64(live) / float64(heapAt.n)})
	r.liveSites = sites
	if r.o.TreeEndpoints > 0 {
		// The single-file servers are idle now: stop them, so that the
		// tree's measurements have the machine to themselves.
		for _, z := range all {
			z.proc.Stop()
			z.proc = nil
		}
		if err := r.sizeTree(s); err != nil {
			return err
		}
		if err := r.nestingCost(s); err != nil {
			return err
		}
	}
	r.sizeTables(s)
	return nil
}

// all2pids maps xs to PIDs.
func all2pids[T any](xs []T, pid func(T) int) []int {
	pids := make([]int, len(xs))
	for i, x := range xs {
		pids[i] = pid(x)
	}
	return pids
}

// settleRSS samples the RSS of pids every 500 ms until none changed by more
// than 1% over the last 2 s, or until max, and returns the last samples.
func settleRSS(pids []int, max time.Duration) []int64 {
	var hist [][]int64
	t0 := time.Now()
	for {
		cur := make([]int64, len(pids))
		for i, pid := range pids {
			if m, err := ProcMemory(pid); err == nil {
				cur[i] = m.RSS
			}
		}
		hist = append(hist, cur)
		if len(hist) > 4 {
			old, stable := hist[len(hist)-5], true
			for i := range cur {
				if d := cur[i] - old[i]; d > old[i]/100 || -d > old[i]/100 {
					stable = false
				}
			}
			if stable {
				return cur
			}
		}
		if time.Since(t0) >= max {
			return cur
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
func mb(b int64) float64         { return float64(b) / (1 << 20) }

// lookupNS is the mean cost of p.Outbound over keys, in nanoseconds: the
// best of three loops of at least 100 ms each, after a collection (the
// runner has just loaded the policy and made garbage).
func lookupNS(p *policy.Policy, keys []string) float64 {
	runtime.GC()
	best := math.Inf(1)
	for range 3 {
		n := 0
		t0 := time.Now()
		v := p.At(t0)
		for time.Since(t0) < 100*time.Millisecond {
			for _, k := range keys {
				v.Outbound(k)
			}
			n += len(keys)
		}
		best = min(best, float64(time.Since(t0).Nanoseconds())/float64(n))
	}
	return best
}

// reloadTime sends SIGHUP and waits for the log line of reload generation
// gen, reading only what the log gained since the signal.
func reloadTime(p *Process, gen int) (time.Duration, error) {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return 0, err
	}
	want := []byte(fmt.Sprintf("generation=%d ", gen))
	var pending []byte
	buf := make([]byte, 64<<10)
	t0 := time.Now()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		return 0, err
	}
	for time.Since(t0) < 60*time.Second {
		n, _ := f.Read(buf)
		if n == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := pending[:i]
			pending = pending[i+1:]
			switch {
			case bytes.Contains(line, []byte("reload result=failed")):
				return 0, fmt.Errorf("%s: %s", p.Name, line)
			case bytes.Contains(line, []byte("reload result=ok")) && bytes.Contains(line, want):
				return time.Since(t0), nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no reload line after 60 s: %s", p.Name, tailFile(p.LogPath, 500))
}

func (r *runner) sizeTables(s *Section) {
	d := r.data
	sizes := r.o.Sizes
	t := Table{Header: []string{"endpoints", "file", "start ms", "reload ms", "RSS MB (after start)", "RSS MB (settled)", "peak RSS MB (start)", "peak RSS MB (after reloads)", "lookups/s", "CPU µs/lookup", "vs smallest",
		"in-process load ms", "in-process ns/lookup covered", "uncovered", "vs smallest"}}
	small := strconv.Itoa(slices.Min(sizes))
	for _, n := range sizes {
		v := strconv.Itoa(n)
		k := key{section: "size", subject: subjTlsgate, variant: v}
		get := func(subject, metric string, conc int) Spread {
			kk := k
			kk.subject, kk.metric, kk.conc = subject, metric, conc
			return d.spread(kk)
		}
		kc := k
		kc.conc, kc.metric = r.o.SizeConc, "cpu_us_per_op"
		ratio := d.ratiosVariant(kc, v, small, r.o.Rounds)
		ki := key{section: "size", subject: "in-process", metric: "ns_per_hit"}
		inRatio := d.ratiosVariant(ki, v, small, r.o.Rounds)
		t.Rows = append(t.Rows, []string{v,
			fmt.Sprintf("%.1f MB", get("config", "file_bytes", 0).Median/(1<<20)),
			fmtSpread(get(subjTlsgate, "start_ms", 0), 0),
			fmtSpread(get(subjTlsgate, "reload_ms", 0), 0),
			fmtSpread(get(subjTlsgate, "rss_start_mb", 0), 1),
			fmtSpread(get(subjTlsgate, "rss_mb", 0), 1),
			fmtSpread(get(subjTlsgate, "hwm_start_mb", 0), 1),
			fmtSpread(get(subjTlsgate, "hwm_mb", 0), 1),
			fmtRate(get(subjTlsgate, "rate_per_s", r.o.SizeConc)),
			fmtSpread(get(subjTlsgate, "cpu_us_per_op", r.o.SizeConc), 2),
			fmtRatio(ratio),
			fmtSpread(get("in-process", "load_ms", 0), 0),
			fmtSpread(get("in-process", "ns_per_hit", 0), 0),
			fmtSpread(get("in-process", "ns_per_miss", 0), 0),
			fmtRatio(inRatio),
		})
	}
	s.Tables = append(s.Tables, t)

	large := strconv.Itoa(slices.Max(sizes))
	kc := key{section: "size", subject: subjTlsgate, conc: r.o.SizeConc, metric: "cpu_us_per_op"}
	ratio := d.ratiosVariant(kc, large, small, r.o.Rounds)
	ki := key{section: "size", subject: "in-process", metric: "ns_per_hit"}
	inRatio := d.ratiosVariant(ki, large, small, r.o.Rounds)
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("14. CPU/lookup, %s vs %s endpoints (tlsgate serve, through the socket)", large, small), Want: "≤ 1.20x",
		Got: fmtRatio(ratio), Met: ratio.Median <= 1.2, Summary: true})
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("14. ns/lookup, %s vs %s endpoints (in process, covered keys)", large, small), Want: "≤ 1.20x",
		Got: fmtRatio(inRatio), Met: inRatio.Median <= 1.2, Summary: true})
	rl := d.spread(key{section: "size", subject: subjTlsgate, variant: large, metric: "reload_ms"})
	st := d.spread(key{section: "size", subject: subjTlsgate, variant: large, metric: "start_ms"})
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("2. reload of the %s-endpoint file (SIGHUP to log line)", large), Want: "< 1000 ms",
		Got: fmtSpread(rl, 0) + " ms", Met: rl.Max < 1000, Summary: true, Note: fmt.Sprintf("cold start to listening: %s ms; one file of %s MB, changed, compiled again", fmtSpread(st, 0), fmtMB(d.spread(key{section: "size", subject: "config", variant: large, metric: "file_bytes"}).Median))})
	r.memTargets(s, large, large+" endpoints in one file")
	if slices.Contains(sizes, 10000) {
		rss := d.spread(key{section: "size", subject: subjTlsgate, variant: "10000", metric: "rss_mb"})
		hwm := d.spread(key{section: "size", subject: subjTlsgate, variant: "10000", metric: "hwm_mb"})
		s.Targets = append(s.Targets, Target{Name: "14. RSS of tlsgate serve with 10k endpoints (settled)", Want: "≤ 30 MB",
			Got: fmtSpread(rss, 1) + " MB", Met: rss.Median <= 30, Summary: true, Note: fmt.Sprintf("peak %s MB, after 3 reloads", fmtSpread(hwm, 1))})
	}
	lb := d.spread(key{section: "size", subject: "in-process", variant: strconv.Itoa(r.heapAt), metric: "live_bytes_per_endpoint"})
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("14. live policy per endpoint, %d endpoints (heap profile)", r.heapAt), Want: "≤ 400 bytes",
		Got: fmt.Sprintf("%.0f bytes", lb.Median), Met: lb.Median <= 400, Summary: true, Note: "largest sites: " + strings.Join(r.liveSites, ", ")})
	if r.o.TreeEndpoints > 0 {
		r.treeTables(s)
	}
}

// fmtMB formats bytes as MB.
func fmtMB(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }

// memTargets checks the cold-load memory targets for variant v.
func (r *runner) memTargets(s *Section, v, what string) {
	d := r.data
	rss := d.spread(key{section: "size", subject: subjTlsgate, variant: v, metric: "rss_mb"})
	hwm := d.spread(key{section: "size", subject: subjTlsgate, variant: v, metric: "hwm_start_mb"})
	s.Targets = append(s.Targets,
		Target{Name: fmt.Sprintf("14. cold load of %s: peak RSS vs settled", what), Want: "≤ 2.00x",
			Got: fmt.Sprintf("%.2fx", hwm.Median/rss.Median), Met: hwm.Median <= 2*rss.Median, Summary: true,
			Note: fmt.Sprintf("peak %.1f MB at start, settled %.1f MB", hwm.Median, rss.Median)},
		Target{Name: fmt.Sprintf("14. settled RSS, %s", what), Want: "≤ 150 MB",
			Got: fmt.Sprintf("%.1f MB", rss.Median), Met: rss.Median <= 150, Summary: true})
}

// treeTables reports sizeTree.
func (r *runner) treeTables(s *Section) {
	d := r.data
	n, files := r.o.TreeEndpoints, r.o.TreeFiles
	v := fmt.Sprintf("%d in %d files", n, files)
	get := func(subject, metric string) Spread {
		return d.spread(key{section: "size", subject: subject, variant: v, metric: metric})
	}
	ratio := get(subjTlsgate, "reload_ratio")
	inRatio := get("in-process", "reload_ratio")
	t := Table{Title: fmt.Sprintf("The same generated endpoints in included files: %d endpoints in %d files of %d (include = [\"conf.d/*.toml\"]); a reload after one file changed (one endpoint added to it or taken away) against a cold load", n, files, n/files),
		Header: []string{"endpoints", "tlsgate serve: start ms", "reload ms", "reload vs start", "in process: cold load ms", "reload ms", "reload vs cold", "peak RSS MB (start)", "RSS MB (settled)", "peak RSS MB (after reloads)"},
		Rows: [][]string{{v,
			fmtSpread(get(subjTlsgate, "start_ms"), 0), fmtSpread(get(subjTlsgate, "reload_ms"), 0), fmtRatio(ratio),
			fmtSpread(get("in-process", "load_ms"), 0), fmtSpread(get("in-process", "reload_ms"), 0), fmtRatio(inRatio),
			fmtSpread(get(subjTlsgate, "hwm_start_mb"), 1), fmtSpread(get(subjTlsgate, "rss_mb"), 1), fmtSpread(get(subjTlsgate, "hwm_mb"), 1)}},
		Notes: []string{fmt.Sprintf("Each in-process round checks that the policy the reload gives is the policy a full load of the same files gives (policy.Same): held in all %d rounds. The file is replaced %v before the signal (tlsgate reads a file modified less than 25 ms earlier again after that time).", r.o.Rounds, quiet)}}
	s.Tables = append(s.Tables, t)
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("14. reload after one of %d files changed (%d endpoints) vs cold load, tlsgate serve", files, n), Want: "≤ 0.10x",
		Got: fmtRatio(ratio), Met: ratio.Median <= 0.1, Summary: true, Note: "SIGHUP to reload line vs exec to listening; in process (Loader.Load): " + fmtRatio(inRatio)})
	r.memTargets(s, v, fmt.Sprintf("%d endpoints in %d files", n, files))
}

// ratiosVariant returns, round by round, the value of variant a over that
// of variant b.
func (d *dataset) ratiosVariant(k key, a, b string, rounds int) Spread {
	var rs []float64
	for round := 1; round <= rounds; round++ {
		ka, kb := k, k
		ka.variant, kb.variant, ka.round, kb.round = a, b, round, round
		va, vb := d.values(ka), d.values(kb)
		if len(va) == 1 && len(vb) == 1 && vb[0] != 0 {
			rs = append(rs, va[0]/vb[0])
		}
	}
	return Summarize(rs)
}
