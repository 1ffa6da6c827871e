package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Servers of part 5: tlsgate with 100 and with 100,000 domains in its
// discovery cache, tlsgate without discovery, and the no-op floor.
const (
	subjDisc100  = "tlsgate-100"
	subjDisc100k = "tlsgate-100k"
	subjNoDisc   = "tlsgate-nodisc"
)

// discoveryDomains are the cache sizes of part 5.
var discoveryDomains = map[string]int{subjDisc100: 100, subjDisc100k: 100_000}

// partDiscovery measures MTA-STS/DANE discovery: lookups answered from
// the discovery cache through the socket, against the no-op server; the
// memory of 100,000 cached domains; and a cold lookup against the dnslab
// lab's resolver next to the raw DNS and HTTPS round trips it needs.
func (r *runner) partDiscovery(s *Section) error {
	dir := filepath.Join(r.work, "p5")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s.Intro = fmt.Sprintf(`Two `+"`tlsgate serve`"+` processes (CPU %d) with a generated 10-endpoint policy and a [discovery] table (mta_sts and dane)
start from a cache_file of 100 and of 100,000 domains (a tenth with usable DANE, a tenth with an MTA-STS policy in mode enforce,
the rest with neither, all fresh for a day), and answer the same load client (CPU %d) as **noop-raw** (part 1's floor)
and **tlsgate-nodisc** (the same binary and policy without [discovery], so tlsgate-100 minus tlsgate-nodisc is what discovery adds),
cycling through the cached domains themselves, so that every lookup is a cache hit: the endpoint model, then the discovery cache,
then the merge. Their resolver is a closed port (a cache hit sends no query; the self-check fails and DANE answers come from the cache).
RSS is VmRSS once settled after the rounds (as in part 2). The cold lookup is go test's BenchmarkLabColdLookup
(a new cache each time: MX, A, AAAA, TLSA, TXT, the policy host's A and AAAA and the HTTPS fetch, against the dnslab lab's unbound
and HTTPS server in a private network namespace), next to BenchmarkLabRawRoundTrips, the same queries and fetch one after the other with
miekg/dns and net/http; it needs root, the lab's tools and the source tree, and is skipped without them.`, serverCPU, clientCPU)
	resolver, err := closedUDPPort()
	if err != nil {
		return err
	}
	pcDir := filepath.Join(dir, "postfix")
	if err := os.MkdirAll(pcDir, 0o755); err != nil {
		return err
	}
	// Postfix as tlsgate's DANE check wants it (postconf -c via MAIL_CONFIG).
	if err := os.WriteFile(filepath.Join(pcDir, "main.cf"), []byte("smtp_dns_support_level = dnssec\nsmtp_host_lookup = dns\nsmtp_tls_dane_insecure_mx_policy = dane\n"), 0o644); err != nil {
		return err
	}
	specs := map[string]string{subjNoopRaw: "unix:" + filepath.Join(dir, "noop.sock")}
	argv := map[string][]string{subjNoopRaw: {r.o.Self, "noop-socketmap", "-impl", "raw", "-listen", specs[subjNoopRaw]}}
	keys := map[string]string{}
	for _, subj := range []string{subjDisc100, subjDisc100k} {
		n := discoveryDomains[subj]
		specs[subj] = "unix:" + filepath.Join(dir, subj+".sock")
		g, err := GenerateConfig(ConfigOptions{Endpoints: 10, SocketmapListen: specs[subj]})
		if err != nil {
			return err
		}
		cache := filepath.Join(dir, subj+".cache")
		names, err := writeDiscoveryCache(cache, n, time.Now())
		if err != nil {
			return err
		}
		cfg := filepath.Join(dir, subj+".toml")
		text := string(g.TOML) + fmt.Sprintf("\n[discovery]\nmta_sts = true\ndane = true\nresolver = %q\ncache_file = %q\ncache_entries = %d\ncontrol_socket = %q\n",
			resolver, cache, 2*n, filepath.Join(dir, subj+"-control.sock"))
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			return err
		}
		keys[subj] = filepath.Join(dir, subj+"-keys.txt")
		if err := writeLines(keys[subj], names); err != nil {
			return err
		}
		argv[subj] = []string{r.o.Tlsgate, "serve", "-c", cfg}
	}
	specs[subjNoDisc] = "unix:" + filepath.Join(dir, subjNoDisc+".sock")
	g, err := GenerateConfig(ConfigOptions{Endpoints: 10, SocketmapListen: specs[subjNoDisc]})
	if err != nil {
		return err
	}
	cfgNoDisc := filepath.Join(dir, subjNoDisc+".toml")
	if err := os.WriteFile(cfgNoDisc, g.TOML, 0o644); err != nil {
		return err
	}
	argv[subjNoDisc] = []string{r.o.Tlsgate, "serve", "-c", cfgNoDisc}
	keys[subjNoopRaw], keys[subjNoDisc] = keys[subjDisc100k], keys[subjDisc100]
	subjects := []string{subjDisc100, subjDisc100k, subjNoDisc, subjNoopRaw}
	procs := map[string]*Process{}
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	env := []string{"MAIL_CONFIG=" + pcDir}
	for _, subj := range subjects {
		p, err := StartProcess(subj, specs[subj], filepath.Join(dir, subj+".log"), r.cpu(serverCPU), env, argv[subj]...)
		if err != nil {
			return err
		}
		procs[subj] = p
		if subj == subjDisc100 || subj == subjDisc100k {
			r.data.add(Measurement{Section: "discovery", Subject: subj, Metric: "start_ms", Value: ms(p.Started)})
			r.logf("  %s listening after %v", subj, p.Started.Round(time.Millisecond))
		}
	}
	s.Commands = append(s.Commands,
		fmt.Sprintf("taskset -c %d tlsgate serve -c tlsgate-N.toml   # [discovery] cache_file = tlsgate-N.cache (N domains)", serverCPU),
		fmt.Sprintf("taskset -c %d tlsgate-bench load-socketmap -addr unix:tlsgate-N.sock -keys tlsgate-N-keys.txt -conc {%s} -duration %v -warmup %v -server-pid PID",
			clientCPU, joinInts(r.o.Concs), r.o.Duration, r.o.Warmup),
		"go test -run '^$' -bench '^BenchmarkLab(ColdLookup|RawRoundTrips)$' -benchtime 20x -count ROUNDS ./internal/discovery")
	for round := 1; round <= r.o.Rounds; round++ {
		for ci, conc := range r.o.Concs {
			for _, subj := range rotate(subjects, round+ci) {
				p := procs[subj]
				if p.Exited() {
					return fmt.Errorf("%s exited: %s", subj, tailFile(p.LogPath, 1000))
				}
				args := append([]string{r.o.Self, "load-socketmap", "-keys", keys[subj]}, r.clientArgs(p.Spec, conc, p.PID())...)
				res, err := RunClient(r.cpu(clientCPU), r.clientTimeout(), args...)
				if err != nil {
					return err
				}
				if res.Errors > 0 {
					return fmt.Errorf("%s conc %d: %d errors, first: %s", subj, conc, res.Errors, res.FirstError)
				}
				// A cache hit answers OK for a fifth of the domains; a
				// miss would wait for the closed resolver and answer
				// NOTFOUND.
				if subj == subjDisc100 || subj == subjDisc100k {
					if ok := res.Answers["OK"]; ok < res.Ops/6 {
						return fmt.Errorf("%s: %d OK answers of %d lookups, want a fifth: the cache was not used (%s)", subj, ok, res.Ops, tailFile(p.LogPath, 1000))
					}
				}
				r.data.addLoad(Measurement{Section: "discovery", Round: round, Subject: subj, Transport: "unix", Conc: conc}, res)
				r.logf("  %s conc=%d round %d: %.0f/s p99 %v cpu %.2fµs", subj, conc, round, res.Rate(), res.P99, res.ServerCPUPerOp())
			}
		}
	}
	pids := []int{procs[subjDisc100].PID(), procs[subjDisc100k].PID()}
	for i, rss := range settleRSS(pids, r.o.SettleMax) {
		r.data.add(Measurement{Section: "discovery", Subject: subjects[i], Metric: "rss_mb", Value: mb(rss)})
	}
	if err := r.coldLookup(s); err != nil {
		s.Notes = append(s.Notes, "The cold lookup was not measured: "+err.Error())
	}
	r.discoveryTables(s)
	return nil
}

// closedUDPPort returns "127.0.0.1:PORT" of a UDP port nothing listens on.
func closedUDPPort() (string, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr, nil
}

// writeDiscoveryCache writes a discovery cache file (the JSON lines
// tlsgate's discovery saves: a header, one line per domain) of n domains
// c0.example, c1.example, ..., fresh for a day from now, and returns the
// names: every tenth with usable DANE, every tenth (offset one) with an
// MTA-STS policy in mode enforce, the rest with neither.
func writeDiscoveryCache(path string, n int, now time.Time) ([]string, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	t := now.Unix()
	day := t + 86400
	if err := enc.Encode(map[string]any{"format": "tlsgate-discovery-cache/1", "saved": t}); err != nil {
		return nil, err
	}
	names := make([]string, n)
	for i := range n {
		name := "c" + strconv.Itoa(i) + ".example"
		names[i] = name
		e := map[string]any{"domain": name, "used": t, "dane": "none", "dane_checked": t, "dane_expires": day,
			"dane_reason": "MX RRset is not DNSSEC-signed (insecure)", "txt_checked": t, "txt_expires": day}
		switch i % 10 {
		case 0:
			e["dane"], e["dane_usable"], e["dane_reason"] = "usable", t, "usable TLSA on mx1."+name
		case 1:
			e["txt_id"] = "20260101"
			e["policy"] = map[string]any{"id": "20260101", "mode": "enforce", "mx": []string{"mx1." + name, "*." + name},
				"max_age": 604800, "fetched": t, "expires": t + 604800, "refetch": day}
		}
		if err := enc.Encode(e); err != nil {
			return nil, err
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return names, f.Close()
}

// benchLine is one line of go test -bench output.
var benchLine = regexp.MustCompile(`^(BenchmarkLab(?:ColdLookup|RawRoundTrips))(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// coldLookup runs the lab benchmarks of package discovery, one count per
// round, and records their times.
func (r *runner) coldLookup(s *Section) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the dnslab lab needs root")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no go command: %v", err)
	}
	if _, err := os.Stat("internal/discovery/lab_test.go"); err != nil {
		return fmt.Errorf("not in the source tree (run make bench from the repository): %v", err)
	}
	cmd := exec.Command(gobin, "test", "-run", "^$", "-bench", "^BenchmarkLab(ColdLookup|RawRoundTrips)$",
		"-benchtime", "20x", "-count", strconv.Itoa(r.o.Rounds), "./internal/discovery")
	if r.pinned {
		cmd = exec.Command("taskset", append([]string{"-c", strconv.Itoa(serverCPU), gobin}, cmd.Args[1:]...)...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test: %v: %s", err, tailString(string(out), 1000))
	}
	rounds := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		rounds[m[1]]++
		r.data.add(Measurement{Section: "discovery", Round: rounds[m[1]], Subject: m[1], Metric: "cold_ms", Value: v / 1e6})
	}
	if rounds["BenchmarkLabColdLookup"] == 0 || rounds["BenchmarkLabRawRoundTrips"] == 0 {
		return fmt.Errorf("go test printed no lab benchmark (skipped? the lab needs nsd, unbound and ldnsutils): %s", tailString(string(out), 1000))
	}
	return nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (r *runner) discoveryTables(s *Section) {
	d := r.data
	subjects := []string{subjDisc100, subjDisc100k, subjNoDisc, subjNoopRaw}
	t := Table{Title: "**Cache hits, unix socket**",
		Header: []string{"conc", "server", "lookups/s", "p50 µs", "p99 µs", "CPU µs/lookup", "busy client / server"}}
	rt := Table{Title: "Ratios (round by round)",
		Header: []string{"conc", "100k: CPU/lookup vs noop-raw (≤ 1.2x)", "100k: p99 vs noop-raw (≤ 2x)", "100: CPU/lookup vs noop-raw", "CPU/lookup, 100k vs 100 domains (≤ 1.2x)",
			"100: CPU/lookup vs tlsgate-nodisc", "tlsgate-nodisc: CPU/lookup vs noop-raw"}}
	var cpuS, p99S, scaleS []Spread
	var labels []string
	for _, conc := range r.o.Concs {
		k := key{section: "discovery", transport: "unix", conc: conc}
		t.Rows = append(t.Rows, loadRows(d, k, subjects)...)
		kc, kp := k, k
		kc.metric, kp.metric = "cpu_us_per_op", "p99_us"
		cpu := d.ratios(kc, subjDisc100k, subjNoopRaw, r.o.Rounds)
		p99 := d.ratios(kp, subjDisc100k, subjNoopRaw, r.o.Rounds)
		cpuSmall := d.ratios(kc, subjDisc100, subjNoopRaw, r.o.Rounds)
		scale := d.ratios(kc, subjDisc100k, subjDisc100, r.o.Rounds)
		added := d.ratios(kc, subjDisc100, subjNoDisc, r.o.Rounds)
		base := d.ratios(kc, subjNoDisc, subjNoopRaw, r.o.Rounds)
		rt.Rows = append(rt.Rows, []string{strconv.Itoa(conc), fmtRatio(cpu), fmtRatio(p99), fmtRatio(cpuSmall), fmtRatio(scale), fmtRatio(added), fmtRatio(base)})
		label := fmt.Sprintf("conc %d", conc)
		note := "tlsgate without discovery: " + fmtRatio(base)
		s.Targets = append(s.Targets,
			Target{Name: "cache-hit CPU/lookup vs noop-raw, " + label, Want: "≤ 1.20x", Got: fmtRatio(cpu), Met: cpu.Median <= 1.2, Note: note},
			Target{Name: "cache-hit p99 vs noop-raw, " + label, Want: "≤ 2.00x", Got: fmtRatio(p99), Met: p99.Median <= 2},
			Target{Name: "CPU/lookup 100k vs 100 domains, " + label, Want: "≤ 1.20x", Got: fmtRatio(scale), Met: scale.Median <= 1.2})
		cpuS, p99S, scaleS, labels = append(cpuS, cpu), append(p99S, p99), append(scaleS, scale), append(labels, label)
	}
	mt := Table{Title: "**Memory and start**", Header: []string{"server", "cached domains", "start ms (loads cache_file)", "RSS MB (settled)"}}
	for _, subj := range []string{subjDisc100, subjDisc100k} {
		mt.Rows = append(mt.Rows, []string{subj, strconv.Itoa(discoveryDomains[subj]),
			fmtSpread(d.spread(key{section: "discovery", subject: subj, metric: "start_ms"}), 0),
			fmtSpread(d.spread(key{section: "discovery", subject: subj, metric: "rss_mb"}), 1)})
	}
	s.Tables = append(s.Tables, t, rt, mt)
	rss := d.spread(key{section: "discovery", subject: subjDisc100k, metric: "rss_mb"})
	rssSmall := d.spread(key{section: "discovery", subject: subjDisc100, metric: "rss_mb"})
	groups := []targetGroup{
		{"5. discovery cache-hit CPU/lookup vs no-op", "≤ 1.20x", cpuS, labels, false, 1.2},
		{"5. discovery cache-hit p99 vs no-op", "≤ 2.00x", p99S, labels, false, 2},
		{"5. discovery CPU/lookup, 100k vs 100 cached domains", "≤ 1.20x", scaleS, labels, false, 1.2},
	}
	s.Targets = summarize(s.Targets, groups)
	mem := Target{Name: "5. RSS of tlsgate serve with 100k cached domains", Want: "≤ 60 MB", Got: fmtSpread(rss, 1) + " MB",
		Met: rss.Median <= 60, Summary: true, Note: fmt.Sprintf("with 100: %s MB", fmtSpread(rssSmall, 1))}
	targets := append([]Target{mem}, s.Targets...)
	kc := key{section: "discovery", metric: "cold_ms"}
	if cold := d.ratios(kc, "BenchmarkLabColdLookup", "BenchmarkLabRawRoundTrips", r.o.Rounds); !math.IsNaN(cold.Median) {
		c := d.spread(key{section: "discovery", subject: "BenchmarkLabColdLookup", metric: "cold_ms"})
		raw := d.spread(key{section: "discovery", subject: "BenchmarkLabRawRoundTrips", metric: "cold_ms"})
		s.Tables = append(s.Tables, Table{Title: "**Cold lookup against the lab's resolver and HTTPS server**",
			Header: []string{"what", "ms per lookup"},
			Rows:   [][]string{{"cold lookup (DANE and MTA-STS, nothing cached)", fmtSpread(c, 2)}, {"the same round trips one after the other", fmtSpread(raw, 2)}, {"ratio", fmtRatio(cold)}}})
		targets = append([]Target{{Name: "5. cold lookup vs its raw DNS and HTTPS round trips", Want: "≤ 1.00x", Got: fmtRatio(cold), Met: cold.Median <= 1, Summary: true,
			Note: fmt.Sprintf("%s ms vs %s ms", fmtSpread(c, 2), fmtSpread(raw, 2))}}, targets...)
	}
	s.Targets = targets
}
