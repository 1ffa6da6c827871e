package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Socketmap servers of part 1: tlsgate and the two no-op baselines.
const (
	subjTlsgate      = "tlsgate"
	subjTlsgateQuiet = "tlsgate-quiet"
	subjNoopRaw      = "noop-raw"
	subjNoopPolicyd  = "noop-policyd"
)

// socketmapSubjects are the servers of part 1, in their first-round order.
var socketmapSubjects = []string{subjTlsgate, subjTlsgateQuiet, subjNoopRaw, subjNoopPolicyd}

// partSocketmap measures the policy daemon against the no-op servers.
func (r *runner) partSocketmap(s *Section) error {
	dir := filepath.Join(r.work, "p1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s.Intro = fmt.Sprintf(`Three socketmap servers, each its own process on CPU %d, answer the same load client on CPU %d:
**tlsgate** is the real `+"`tlsgate serve`"+` with a generated 1,000-endpoint policy and its default logging
(level info, where answered lookups are not logged, only lookup errors and monitor-mode answers;
a log file because syslog = "no");
**noop-raw** is a bare loop per connection that reads a netstring with policyd.ReadNetstring and writes "NOTFOUND ",
without limits, deadlines or a model (the floor, and the baseline of the targets);
**noop-policyd** is tlsgate's own policyd.SocketmapServer with a Lookuper that answers "NOTFOUND " and logs nothing
(so tlsgate minus noop-policyd is the policy model);
**tlsgate-quiet** is the same tlsgate binary and policy with [log] level = "warn"
(a diagnostic: tlsgate minus tlsgate-quiet is what info-level logging still costs).
The client keeps one persistent connection per concurrent caller and waits for each reply, as Postfix's smtp(8) does,
cycling through 4,096 keys in the forms Postfix sends (domain, .parent, [host]:port, [address], [IPv6:...]), half of them covered.
Server CPU is utime+stime from /proc/PID/stat over the window, divided by the lookups; busy = CPU seconds per second (client / server).`,
		serverCPU, clientCPU)
	for _, transport := range []string{"unix", "tcp"} {
		if err := r.socketmapTransport(s, dir, transport); err != nil {
			return err
		}
	}
	r.socketmapTables(s)
	return nil
}

func (r *runner) socketmapTransport(s *Section, dir, transport string) error {
	specs := map[string]string{}
	for _, subj := range socketmapSubjects {
		if transport == "unix" {
			specs[subj] = "unix:" + filepath.Join(dir, subj+".sock")
		} else {
			port, err := FreeTCPPort()
			if err != nil {
				return err
			}
			specs[subj] = "inet:127.0.0.1:" + strconv.Itoa(port)
		}
	}
	g, err := GenerateConfig(ConfigOptions{Endpoints: 1000, SocketmapListen: specs[subjTlsgate]})
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "tlsgate-"+transport+".toml")
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(cfg, g.TOML, 0o644); err != nil {
		return err
	}
	gq, err := GenerateConfig(ConfigOptions{Endpoints: 1000, SocketmapListen: specs[subjTlsgateQuiet], LogLevel: "warn"})
	if err != nil {
		return err
	}
	cfgQuiet := filepath.Join(dir, "tlsgate-quiet-"+transport+".toml")
	if err := os.WriteFile(cfgQuiet, gq.TOML, 0o644); err != nil {
		return err
	}
	if err := writeLines(keys, g.Keys); err != nil {
		return err
	}
	argv := map[string][]string{
		subjTlsgate:      {r.o.Tlsgate, "serve", "-c", cfg},
		subjTlsgateQuiet: {r.o.Tlsgate, "serve", "-c", cfgQuiet},
		subjNoopRaw:      {r.o.Self, "noop-socketmap", "-impl", "raw", "-listen", specs[subjNoopRaw]},
		subjNoopPolicyd:  {r.o.Self, "noop-socketmap", "-impl", "policyd", "-listen", specs[subjNoopPolicyd]},
	}
	subjects := socketmapSubjects
	procs := map[string]*Process{}
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	for _, subj := range subjects {
		p, err := StartProcess(subj, specs[subj], filepath.Join(dir, subj+"-"+transport+".log"), r.cpu(serverCPU), nil, argv[subj]...)
		if err != nil {
			return err
		}
		procs[subj] = p
	}
	s.Commands = append(s.Commands,
		fmt.Sprintf("taskset -c %d tlsgate serve -c tlsgate-%s.toml 2>tlsgate.log   # [policyd] listen = %q", serverCPU, transport, specs[subjTlsgate]),
		fmt.Sprintf("taskset -c %d tlsgate serve -c tlsgate-quiet-%s.toml 2>tlsgate-quiet.log   # same, [log] level = \"warn\"", serverCPU, transport),
		fmt.Sprintf("taskset -c %d tlsgate-bench noop-socketmap -impl raw|policyd -listen %s", serverCPU, specs[subjNoopRaw]),
		fmt.Sprintf("taskset -c %d tlsgate-bench load-socketmap -addr SPEC -keys keys.txt -conc {%s} -duration %v -warmup %v -server-pid PID",
			clientCPU, joinInts(r.o.Concs), r.o.Duration, r.o.Warmup))
	for round := 1; round <= r.o.Rounds; round++ {
		for ci, conc := range r.o.Concs {
			for _, subj := range rotate(subjects, round+ci) {
				p := procs[subj]
				if p.Exited() {
					return fmt.Errorf("%s exited: %s", subj, tailFile(p.LogPath, 1000))
				}
				args := append([]string{r.o.Self, "load-socketmap", "-keys", keys}, r.clientArgs(p.Spec, conc, p.PID())...)
				res, err := RunClient(r.cpu(clientCPU), r.clientTimeout(), args...)
				if err != nil {
					return err
				}
				base := Measurement{Section: "socketmap", Round: round, Subject: subj, Transport: transport, Conc: conc}
				r.data.addLoad(base, res)
				r.logf("  %s %s conc=%d round %d: %.0f/s p99 %v cpu %.2fµs (client %.2f server %.2f)",
					transport, subj, conc, round, res.Rate(), res.P99, res.ServerCPUPerOp(), res.ClientBusy(), res.ServerBusy())
				if res.Errors > 0 {
					return fmt.Errorf("%s %s conc %d: %d errors, first: %s", transport, subj, conc, res.Errors, res.FirstError)
				}
			}
		}
	}
	return nil
}

func joinInts(xs []int) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ","
		}
		s += strconv.Itoa(x)
	}
	return s
}

func (r *runner) socketmapTables(s *Section) {
	d := r.data
	subjects := socketmapSubjects
	var cpuS, p99S, rateS []Spread
	var labels []string
	for _, transport := range []string{"unix", "tcp"} {
		t := Table{
			Title:  fmt.Sprintf("**%s socket**", map[string]string{"unix": "Unix", "tcp": "Loopback TCP"}[transport]),
			Header: []string{"conc", "server", "lookups/s", "p50 µs", "p99 µs", "CPU µs/lookup", "busy client / server"},
		}
		rt := Table{Header: []string{"conc", "CPU/lookup vs noop-raw (≤ 1.2x)", "p99 vs noop-raw (≤ 2x)", "rate vs noop-raw (≥ 0.9x)",
			"CPU/lookup vs noop-policyd", "tlsgate-quiet CPU/lookup vs noop-raw", "bottleneck"}}
		for _, conc := range r.o.Concs {
			k := key{section: "socketmap", transport: transport, conc: conc}
			t.Rows = append(t.Rows, loadRows(d, k, subjects)...)
			k.subject = ""
			kc, kp, kr := k, k, k
			kc.metric, kp.metric, kr.metric = "cpu_us_per_op", "p99_us", "rate_per_s"
			cpu := d.ratios(kc, subjTlsgate, subjNoopRaw, r.o.Rounds)
			p99 := d.ratios(kp, subjTlsgate, subjNoopRaw, r.o.Rounds)
			rate := d.ratios(kr, subjTlsgate, subjNoopRaw, r.o.Rounds)
			cpuFw := d.ratios(kc, subjTlsgate, subjNoopPolicyd, r.o.Rounds)
			cpuQuiet := d.ratios(kc, subjTlsgateQuiet, subjNoopRaw, r.o.Rounds)
			var bn []string
			for _, subj := range []string{subjTlsgate, subjNoopRaw} {
				kb := k
				kb.subject = subj
				kb.metric = "client_busy"
				cb := d.spread(kb).Median
				kb.metric = "server_busy"
				sb := d.spread(kb).Median
				if b := bottleneck(cb, sb); b != "" {
					bn = append(bn, subj+": "+b)
				}
			}
			rt.Rows = append(rt.Rows, []string{strconv.Itoa(conc), fmtRatio(cpu), fmtRatio(p99), fmtRatio(rate), fmtRatio(cpuFw), fmtRatio(cpuQuiet), joinStrings(bn)})
			label := fmt.Sprintf("%s conc %d", transport, conc)
			note := joinStrings(bn)
			s.Targets = append(s.Targets,
				Target{Name: "CPU/lookup vs noop-raw, " + label, Want: "≤ 1.20x", Got: fmtRatio(cpu), Met: cpu.Median <= 1.2, Note: note},
				Target{Name: "p99 vs noop-raw, " + label, Want: "≤ 2.00x", Got: fmtRatio(p99), Met: p99.Median <= 2, Note: note},
				Target{Name: "lookups/s vs noop-raw, " + label, Want: "≥ 0.90x", Got: fmtRatio(rate), Met: rate.Median >= 0.9, Note: note})
			cpuS, p99S, rateS, labels = append(cpuS, cpu), append(p99S, p99), append(rateS, rate), append(labels, label)
		}
		rt.Title = fmt.Sprintf("Ratios, %s socket (tlsgate over the no-op, round by round)", transport)
		s.Tables = append(s.Tables, t, rt)
	}
	s.Targets = summarize(s.Targets, []targetGroup{
		{"1. socketmap CPU/lookup vs no-op", "≤ 1.20x", cpuS, labels, false, 1.2},
		{"1. socketmap p99 vs no-op", "≤ 2.00x", p99S, labels, false, 2},
		{"1. socketmap lookups/s vs no-op", "≥ 0.90x", rateS, labels, true, 0.9},
	})
}

// loadRows are the rows of a load table at k's concurrency, one per
// subject: conc, server, lookups/s, p50, p99, CPU per lookup, busy.
func loadRows(d *dataset, k key, subjects []string) [][]string {
	var rows [][]string
	for _, subj := range subjects {
		k.subject = subj
		row := []string{strconv.Itoa(k.conc), subj}
		for _, m := range []struct {
			metric string
			prec   int
		}{{"rate_per_s", -1}, {"p50_us", 1}, {"p99_us", 1}, {"cpu_us_per_op", 2}} {
			k.metric = m.metric
			if m.prec < 0 {
				row = append(row, fmtRate(d.spread(k)))
			} else {
				row = append(row, fmtSpread(d.spread(k), m.prec))
			}
		}
		rows = append(rows, append(row, busyCell(d, k)))
	}
	return rows
}

func joinStrings(xs []string) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += "; "
		}
		s += x
	}
	return s
}

// targetGroup summarises one target over its variants: the worst median
// decides.
type targetGroup struct {
	name, want string
	spreads    []Spread
	labels     []string
	atLeast    bool
	limit      float64
}

// summarize returns the summary targets (worst case of each group, with how
// many variants met it) followed by the detailed ones, which the section
// renders; the report's summary table takes the groups only.
func summarize(detail []Target, groups []targetGroup) []Target {
	var out []Target
	for _, g := range groups {
		w, label := worst(g.spreads, g.labels, g.atLeast)
		met := 0
		for _, s := range g.spreads {
			if (g.atLeast && s.Median >= g.limit) || (!g.atLeast && s.Median <= g.limit) {
				met++
			}
		}
		ok := (g.atLeast && w.Median >= g.limit) || (!g.atLeast && w.Median <= g.limit)
		out = append(out, Target{Name: g.name, Want: g.want, Got: fmtRatio(w) + " worst, at " + label,
			Met: ok, Note: fmt.Sprintf("met in %d of %d variants", met, len(g.spreads)), Summary: true})
	}
	return append(out, detail...)
}
