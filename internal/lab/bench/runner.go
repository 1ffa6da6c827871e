package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options configure Run. Zero values select the defaults used by "make bench".
type Options struct {
	// Tlsgate is the path of the tlsgate binary to measure. Required.
	Tlsgate string
	// Self is the path of tlsgate-bench, re-executed for the no-op servers
	// and load clients. Default: os.Executable().
	Self string
	// Parts selects the parts to run, e.g. "123". Default "12345p".
	Parts string
	// Rounds is the number of interleaved rounds of parts 1 to 3. Default 5.
	Rounds int
	// E2ERounds is the number of interleaved rounds of part 4. Default 5.
	E2ERounds int
	// Duration is the measurement window of one figure in parts 1 to 3.
	// Default 1.5 s.
	Duration time.Duration
	// Warmup precedes each window. Default 300 ms.
	Warmup time.Duration
	// Concs is the concurrency ladder. Default 1, 8, 32.
	Concs []int
	// Sizes are the endpoint counts of part 2. Default 10, 1k, 10k, 100k.
	Sizes []int
	// SizeConc is the concurrency of part 2. Default 8.
	SizeConc int
	// TreeEndpoints and TreeFiles are the configuration of part 2 split
	// into included files (issue 14's targets). Defaults 100,000 and
	// 1,000; TreeEndpoints < 0 leaves that measurement out.
	TreeEndpoints, TreeFiles int
	// SettleMax bounds the wait for the RSS of part 2 to settle. Default 20 s.
	SettleMax time.Duration
	// Messages2K and Messages100K are the messages per end-to-end run.
	// Defaults 800 and 250.
	Messages2K, Messages100K int
	// Sessions is smtp-source's -s (parallel SMTP sessions). Default 10.
	Sessions int
	// PostureBytes is the size of the posture part's generated log.
	// Default DefaultPostureBytes (2 GB).
	PostureBytes int64
	// WorkDir holds sockets, configurations and logs. Default: a new
	// directory under $TMPDIR, removed at the end unless KeepWork.
	WorkDir string
	// KeepWork keeps WorkDir.
	KeepWork bool
	// Progress receives a line per step. Default: discarded.
	Progress io.Writer
	// Command is the command line recorded in the report.
	Command string
}

func (o *Options) defaults() error {
	if o.Tlsgate == "" {
		return fmt.Errorf("bench: Options.Tlsgate (the tlsgate binary) is required")
	}
	if o.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		o.Self = self
	}
	for _, p := range []*string{&o.Tlsgate, &o.Self} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	if o.Parts == "" {
		o.Parts = "12345p"
	}
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if o.E2ERounds <= 0 {
		o.E2ERounds = 5
	}
	if o.Duration <= 0 {
		o.Duration = 1500 * time.Millisecond
	}
	if o.Warmup <= 0 {
		o.Warmup = 300 * time.Millisecond
	}
	if len(o.Concs) == 0 {
		o.Concs = []int{1, 8, 32}
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []int{10, 1000, 10000, 100000}
	}
	if o.SizeConc <= 0 {
		o.SizeConc = 8
	}
	if o.TreeEndpoints == 0 {
		o.TreeEndpoints = 100000
	}
	if o.TreeFiles <= 0 {
		o.TreeFiles = 1000
	}
	if o.TreeEndpoints > 0 && o.TreeFiles > o.TreeEndpoints/10 {
		o.TreeFiles = max(1, o.TreeEndpoints/10)
	}
	if o.SettleMax <= 0 {
		o.SettleMax = 20 * time.Second
	}
	if o.Messages2K <= 0 {
		o.Messages2K = 800
	}
	if o.Messages100K <= 0 {
		o.Messages100K = 250
	}
	if o.Sessions <= 0 {
		o.Sessions = 10
	}
	if o.PostureBytes <= 0 {
		o.PostureBytes = DefaultPostureBytes
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// runner carries the state of one Run.
type runner struct {
	o      Options
	work   string
	pinned bool
	rep    *Report
	data   *dataset
	// liveSites are the largest allocation sites of the live policy
	// (part 2's heap profile).
	liveSites []string
	heapAt    int // the endpoints of the heap profile
}

// CPUs for pinning: load clients on clientCPU, servers on serverCPU.
const (
	clientCPU = 0
	serverCPU = 1
)

func (r *runner) cpu(c int) int {
	if !r.pinned {
		return -1
	}
	return c
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Run measures the selected parts and returns the report; it does not write
// files (see Report.WriteFiles).
func Run(o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &runner{o: o, data: &dataset{}}
	_, tsErr := exec.LookPath("taskset")
	r.pinned = runtime.NumCPU() >= 2 && tsErr == nil
	r.work = o.WorkDir
	if r.work == "" {
		dir, err := os.MkdirTemp("", "tlsgate-bench-")
		if err != nil {
			return nil, err
		}
		r.work = dir
		if !o.KeepWork {
			defer os.RemoveAll(dir)
		}
	}
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(r.work, 0o755); err != nil {
		return nil, err
	}
	ver, _ := exec.Command(o.Tlsgate, "version").Output()
	r.rep = &Report{
		Machine: ThisMachine(), TlsgateVersion: strings.TrimSpace(string(ver)), Command: o.Command,
		Rounds: o.Rounds, Duration: o.Duration, Pinned: r.pinned, Started: time.Now(), CSVName: "benchmarks.csv",
	}
	parts := []struct {
		id  byte
		run func(*Section) error
		t   string
	}{
		{'1', r.partSocketmap, "1. Policy daemon (socketmap) vs no-op netstring servers"},
		{'2', r.partSizes, "2. Policy size: 10 to 100k endpoints"},
		{'3', r.partMilter, "3. Milter vs a no-op go-milter server"},
		{'4', r.partE2E, "4. End to end: smtp-source → Postfix → TLS sink"},
		{'5', r.partDiscovery, "5. Discovery: MTA-STS and DANE from the cache, and a cold lookup"},
		{'p', r.partPosture, "P. Posture report: reading a month of mail logs vs cat and wc -l"},
	}
	var errs []error
	for _, p := range parts {
		if !strings.ContainsRune(o.Parts, rune(p.id)) {
			continue
		}
		s := &Section{Title: p.t, LoadStart: LoadAvg()}
		t0 := time.Now()
		r.logf("part %c: %s (load %s)", p.id, p.t, s.LoadStart)
		if err := p.run(s); err != nil {
			r.logf("part %c failed: %v", p.id, err)
			s.Notes = append(s.Notes, fmt.Sprintf("**This part failed:** %v", err))
			errs = append(errs, fmt.Errorf("part %c: %w", p.id, err))
		}
		s.Elapsed = time.Since(t0)
		s.LoadEnd = LoadAvg()
		r.rep.Sections = append(r.rep.Sections, s)
	}
	r.rep.Raw = r.data.ms
	r.rep.Finished = time.Now()
	return r.rep, errJoin(errs...)
}

// dataset collects the measurements of a run.
type dataset struct{ ms []Measurement }

func (d *dataset) add(m Measurement) {
	m.Load1 = Load1()
	d.ms = append(d.ms, m)
}

// addLoad records the figures of one load-client run.
func (d *dataset) addLoad(base Measurement, res *LoadResult) {
	for _, kv := range []struct {
		k string
		v float64
	}{
		{"rate_per_s", res.Rate()},
		{"p50_us", float64(res.P50.Nanoseconds()) / 1e3},
		{"p99_us", float64(res.P99.Nanoseconds()) / 1e3},
		{"cpu_us_per_op", res.ServerCPUPerOp()},
		{"server_busy", res.ServerBusy()},
		{"client_busy", res.ClientBusy()},
		{"ops", float64(res.Ops)},
		{"errors", float64(res.Errors)},
	} {
		m := base
		m.Metric, m.Value = kv.k, kv.v
		d.add(m)
	}
	for ans, n := range res.Answers {
		m := base
		m.Metric, m.Value = "answer_"+ans, float64(n)
		d.add(m)
	}
}

// key selects measurements; empty fields match anything except Round,
// which is matched when > 0.
type key struct {
	section, subject, transport, variant, metric string
	conc, round                                  int
}

func (d *dataset) values(k key) []float64 {
	var vs []float64
	for _, m := range d.ms {
		if m.Section == k.section && m.Subject == k.subject && m.Transport == k.transport &&
			m.Variant == k.variant && m.Metric == k.metric && m.Conc == k.conc && (k.round == 0 || m.Round == k.round) {
			vs = append(vs, m.Value)
		}
	}
	return vs
}

func (d *dataset) spread(k key) Spread { return Summarize(d.values(k)) }

// ratios returns, round by round, the value of subject a over that of
// subject b.
func (d *dataset) ratios(k key, a, b string, rounds int) Spread {
	var rs []float64
	for round := 1; round <= rounds; round++ {
		ka, kb := k, k
		ka.subject, kb.subject, ka.round, kb.round = a, b, round, round
		va, vb := d.values(ka), d.values(kb)
		if len(va) == 1 && len(vb) == 1 && vb[0] != 0 {
			rs = append(rs, va[0]/vb[0])
		}
	}
	return Summarize(rs)
}

// rotate returns xs rotated left by n, so that the order of subjects
// changes from round to round.
func rotate[T any](xs []T, n int) []T {
	n %= len(xs)
	return append(slices.Clone(xs[n:]), xs[:n]...)
}

// writeLines writes one string a line.
func writeLines(path string, lines []string) error {
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// clientArgs are the flags shared by the load clients.
func (r *runner) clientArgs(addr string, conc int, pids ...int) []string {
	ps := make([]string, len(pids))
	for i, p := range pids {
		ps[i] = strconv.Itoa(p)
	}
	return []string{"-addr", addr, "-conc", strconv.Itoa(conc), "-duration", r.o.Duration.String(),
		"-warmup", r.o.Warmup.String(), "-server-pid", strings.Join(ps, ",")}
}

// clientTimeout bounds one load client: its window and warm-up, plus time
// for in-flight operations to end (go-milter's client waits up to 10 s).
func (r *runner) clientTimeout() time.Duration { return r.o.Warmup + r.o.Duration + 45*time.Second }

// bottleneck describes who limited a run: the client when it used a whole
// CPU while the server did not.
func bottleneck(clientBusy, serverBusy float64) string {
	if clientBusy >= 0.9 && serverBusy < 0.9 {
		return "client-bound"
	}
	if serverBusy >= 0.9 {
		return "server-bound"
	}
	return ""
}

func busyCell(d *dataset, k key) string {
	k.metric = "client_busy"
	c := d.spread(k)
	k.metric = "server_busy"
	s := d.spread(k)
	b := bottleneck(c.Median, s.Median)
	cell := fmt.Sprintf("%.2f / %.2f", c.Median, s.Median)
	if b != "" {
		cell += " " + b
	}
	return cell
}

// worst returns the spread with the largest (or, for atLeast, smallest)
// median and its label.
func worst(spreads []Spread, labels []string, atLeast bool) (Spread, string) {
	bi := -1
	for i, s := range spreads {
		if math.IsNaN(s.Median) {
			continue
		}
		if bi < 0 || (!atLeast && s.Median > spreads[bi].Median) || (atLeast && s.Median < spreads[bi].Median) {
			bi = i
		}
	}
	if bi < 0 {
		return Spread{Median: math.NaN()}, ""
	}
	return spreads[bi], labels[bi]
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var o Options
	fs.StringVar(&o.Tlsgate, "tlsgate", "", "the tlsgate `binary` to measure (required)")
	out := fs.String("out", "docs/benchmarks.md", "Markdown report; text outside the generated block is kept")
	csvPath := fs.String("csv", "", "raw numbers (default: benchmarks.csv next to -out)")
	fs.StringVar(&o.Parts, "parts", "12345p", "parts to run (p: the posture report)")
	fs.Int64Var(&o.PostureBytes, "posture-bytes", DefaultPostureBytes, "size of the posture part's generated log, in bytes")
	fs.IntVar(&o.Rounds, "rounds", 5, "interleaved rounds of parts 1-3")
	fs.IntVar(&o.E2ERounds, "e2e-rounds", 5, "interleaved rounds of part 4")
	fs.DurationVar(&o.Duration, "duration", 1500*time.Millisecond, "measurement window per figure (parts 1-3)")
	fs.IntVar(&o.Messages2K, "e2e-messages-2k", 800, "messages per end-to-end run, 2 KB")
	fs.IntVar(&o.Messages100K, "e2e-messages-100k", 250, "messages per end-to-end run, 100 KB")
	fs.BoolVar(&o.KeepWork, "keep", false, "keep the work directory")
	sizes := fs.String("sizes", "10,1000,10000,100000", "endpoint counts of part 2")
	fs.IntVar(&o.TreeEndpoints, "tree-endpoints", 100000, "endpoints of part 2's configuration in included files (-1: leave it out)")
	fs.IntVar(&o.TreeFiles, "tree-files", 1000, "files of part 2's configuration in included files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("-sizes: %v", err)
		}
		o.Sizes = append(o.Sizes, n)
	}
	o.Progress = stderr
	// The binaries live in a temporary directory under make bench: record
	// their base names.
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if filepath.IsAbs(a) && (a == o.Tlsgate || strings.Contains(a, "tlsgate-bench-bin")) {
			shown[i] = filepath.Base(a)
		}
	}
	o.Command = "tlsgate-bench run " + strings.Join(shown, " ")
	if *csvPath == "" {
		*csvPath = filepath.Join(filepath.Dir(*out), "benchmarks.csv")
	}
	rep, err := Run(o)
	if rep != nil {
		rep.CSVName = filepath.Base(*csvPath)
		if werr := rep.WriteFiles(*out, *csvPath); werr != nil {
			return errJoin(err, werr)
		}
		fmt.Fprintf(stdout, "wrote %s and %s (%s)\n", *out, *csvPath, rep.Finished.Sub(rep.Started).Round(time.Second))
	}
	return err
}
