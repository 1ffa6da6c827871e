package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Tree is a generated configuration written as a main file and parts in
// conf.d, with the one part that reloads change.
type Tree struct {
	// Main is the main file's path.
	Main string
	// Endpoints and Files are the sizes.
	Endpoints, Files int
	// Changed is the part a reload changes: Toggle adds an endpoint to it
	// or takes it away again.
	Changed string
	orig    []byte
	toggled bool
}

// WriteTree generates a configuration of n endpoints in files parts under
// dir (with the options of o) and writes it.
func WriteTree(dir string, n, files int, o ConfigOptions) (*Tree, error) {
	o.Endpoints, o.Files = n, files
	g, err := GenerateConfig(o)
	if err != nil {
		return nil, err
	}
	main, err := g.WriteTree(dir)
	if err != nil {
		return nil, err
	}
	mid := files / 2
	return &Tree{Main: main, Endpoints: n, Files: files, Changed: filepath.Join(dir, "conf.d", PartName(mid)), orig: g.Parts[mid]}, nil
}

// treeExtra is the endpoint Toggle adds.
const treeExtra = "\n[[endpoint]]\nname = \"tree-extra\"\nhosts = [\"tree-extra.example\"]\n  [endpoint.outbound]\n  encryption = true\n"

// Toggle replaces the changed part with its other version (one endpoint
// more, or the original), through a new file and a rename, as admins are
// told to.
func (t *Tree) Toggle() error {
	data := t.orig
	if !t.toggled {
		data = append(slices.Clip(t.orig), treeExtra...)
	}
	t.toggled = !t.toggled
	tmp := t.Changed + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, t.Changed)
}

// quiet is how long the runner waits between changing a file and loading
// it: tlsgate reads a file modified less than 25 ms earlier once more
// after that time (a writer may be between two writes); an admin's
// reload comes later than that.
const quiet = 50 * time.Millisecond

// sizeTree measures the configuration of issue 14: Options.TreeEndpoints
// endpoints in Options.TreeFiles files. In process: a cold load with a new
// Loader against the reload after one file changed, and the policy that
// reload gives against a full load of the same files (policy.Same). With
// tlsgate serve: start (exec to listening) against SIGHUP to the reload
// line, and the peak RSS of the start against the settled RSS.
func (r *runner) sizeTree(s *Section) error {
	n, files := r.o.TreeEndpoints, r.o.TreeFiles
	dir := filepath.Join(r.work, "p2", "tree")
	spec := "unix:" + filepath.Join(r.work, "p2", "tree.sock")
	t, err := WriteTree(dir, n, files, ConfigOptions{SocketmapListen: spec})
	if err != nil {
		return err
	}
	v := fmt.Sprintf("%d in %d files", n, files)
	r.logf("  tree: %d endpoints in %d files", n, files)
	for round := 1; round <= r.o.Rounds; round++ {
		runtime.GC()
		l := policy.NewLoader(t.Main)
		t0 := time.Now()
		if _, err := l.Load(); err != nil {
			return err
		}
		cold := time.Since(t0)
		if err := t.Toggle(); err != nil {
			return err
		}
		time.Sleep(quiet)
		t0 = time.Now()
		p, err := l.Load()
		if err != nil {
			return err
		}
		reload := time.Since(t0)
		if c := l.Stats().Compiled; c != 1 {
			return fmt.Errorf("tree: the reload after one file changed compiled %d files", c)
		}
		full, err := policy.Load(t.Main)
		if err != nil {
			return err
		}
		if err := policy.Same(p, full); err != nil {
			return fmt.Errorf("tree: incremental and full load differ: %w", err)
		}
		r.data.add(Measurement{Section: "size", Round: round, Subject: "in-process", Variant: v, Metric: "load_ms", Value: ms(cold)})
		r.data.add(Measurement{Section: "size", Round: round, Subject: "in-process", Variant: v, Metric: "reload_ms", Value: ms(reload)})
		r.data.add(Measurement{Section: "size", Round: round, Subject: "in-process", Variant: v, Metric: "reload_ratio", Value: float64(reload) / float64(cold)})
		r.logf("  tree round %d: cold load %v, reload after one file changed %v (the same policy as a full load)", round, cold.Round(time.Millisecond), reload.Round(time.Millisecond))
		p, full, l = nil, nil, nil
	}
	runtime.GC()

	proc, err := StartProcess("tlsgate-tree", spec, filepath.Join(r.work, "p2", "tlsgate-tree.log"), r.cpu(serverCPU), nil, r.o.Tlsgate, "serve", "-c", t.Main)
	if err != nil {
		return err
	}
	defer proc.Stop()
	start := ms(proc.Started)
	r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "start_ms", Value: start})
	if m, err := ProcMemory(proc.PID()); err == nil {
		r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "hwm_start_mb", Value: mb(m.HWM)})
	}
	settled := settleRSS([]int{proc.PID()}, r.o.SettleMax)
	r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "rss_mb", Value: mb(settled[0])})
	for round := 1; round <= r.o.Rounds; round++ {
		if err := t.Toggle(); err != nil {
			return err
		}
		time.Sleep(quiet)
		d, err := reloadTime(proc, round+1)
		if err != nil {
			return err
		}
		r.data.add(Measurement{Section: "size", Round: round, Subject: subjTlsgate, Variant: v, Metric: "reload_ms", Value: ms(d)})
		r.data.add(Measurement{Section: "size", Round: round, Subject: subjTlsgate, Variant: v, Metric: "reload_ratio", Value: ms(d) / start})
	}
	if m, err := ProcMemory(proc.PID()); err == nil {
		r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: v, Metric: "hwm_mb", Value: mb(m.HWM)})
	}
	s.Commands = append(s.Commands,
		fmt.Sprintf("tlsgate serve -c tree/tlsgate.toml   # include = [\"conf.d/*.toml\"], %d files of %d endpoints", files, n/files),
		"mv part.new conf.d/"+filepath.Base(t.Changed)+"; sleep 0.05; kill -HUP PID   # one endpoint more or less in one file, timed to the reload line")
	return nil
}

// liveBytes loads cfg in this process with every allocation recorded
// (runtime.MemProfileRate = 1) and returns the bytes still in use by what
// the policy package allocated, from the heap profile: the policy itself
// (nothing else of the package is live in the runner then). The
// profile is written to profPath, and the largest allocation sites are
// returned with their share.
func liveBytes(cfg, profPath string) (int64, []string, error) {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	runtime.GC()
	p, err := policy.Load(cfg)
	if err != nil {
		return 0, nil, err
	}
	runtime.GC()
	runtime.GC() // a profile shows the heap as of the last completed cycle
	var text bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&text, 1); err != nil {
		return 0, nil, err
	}
	if f, err := os.Create(profPath); err == nil {
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	runtime.KeepAlive(p)
	total, sites := policyInUse(text.Bytes())
	return total, sites, nil
}

// policyInUse sums, in a heap profile in text form (debug=1), the bytes in
// use by allocations made by the policy package (the load compiles files
// and pieces on goroutines of their own, so the stacks do not all reach
// policy.Load), and names the largest sites (the innermost policy
// function, with file and line).
func policyInUse(text []byte) (int64, []string) {
	var total int64
	bySite := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var inuse int64
	var site string
	under := false
	flush := func() {
		if under && inuse > 0 {
			total += inuse
			bySite[site] += inuse
		}
		inuse, site, under = 0, "", false
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			// "#	0x4b3c21	github.com/.../policy.(*unit).compact+0x1a1	/path:123"
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			fn := f[2]
			if i := strings.LastIndex(fn, "+0x"); i > 0 {
				fn = fn[:i]
			}
			if site == "" && strings.Contains(fn, "/internal/policy.") {
				site = fn[strings.LastIndex(fn, "/")+1:]
				if len(f) > 3 {
					site += " " + filepath.Base(f[3]) // file:line, which block
				}
			}
			if strings.Contains(fn, "/internal/policy.") {
				under = true
			}
			continue
		}
		// "1: 4112 [1: 4112] @ 0x..."
		if i := strings.Index(line, ": "); i > 0 && strings.Contains(line, " @ ") {
			flush()
			rest := line[i+2:]
			if sp := strings.IndexByte(rest, ' '); sp > 0 {
				inuse, _ = strconv.ParseInt(rest[:sp], 10, 64)
			}
		}
	}
	flush()
	type kv struct {
		k string
		v int64
	}
	var kvs []kv
	for k, v := range bySite {
		kvs = append(kvs, kv{k, v})
	}
	slices.SortFunc(kvs, func(a, b kv) int { return int(b.v - a.v) })
	var out []string
	for i, e := range kvs {
		if i == 6 {
			break
		}
		out = append(out, fmt.Sprintf("%s %.0f%%", e.k, 100*float64(e.v)/float64(total)))
	}
	return total, out
}

// nestingCost measures the never-weaker check: the same trees without and
// with an endpoint that covers every other (ConfigOptions.Nested), at two
// sizes, timed as a reload after one file changed (a comment added, so
// that the policy is patched, not assembled anew, but exceptions and
// nesting are checked for every endpoint), the best of three.
func (r *runner) nestingCost(s *Section) error {
	sizes := []int{r.o.TreeEndpoints / 10, r.o.TreeEndpoints}
	t := Table{Title: "The never-weaker check at scale: a reload after one file changed (which checks exceptions and nesting for every endpoint), best of 3, in process",
		Header: []string{"endpoints", "files", "no nesting ms", "every endpoint nested in one ms", "nested vs not"}}
	var nested [2]time.Duration
	for k, n := range sizes {
		files := max(1, n*r.o.TreeFiles/r.o.TreeEndpoints)
		var got [2]time.Duration
		for j, nest := range []bool{false, true} {
			dir := filepath.Join(r.work, "p2", fmt.Sprintf("nest-%d-%v", n, nest))
			tr, err := WriteTree(dir, n, files, ConfigOptions{Nested: nest})
			if err != nil {
				return err
			}
			l := policy.NewLoader(tr.Main)
			p, err := l.Load()
			if err != nil {
				return fmt.Errorf("nesting: %d endpoints (nested %v): %w", n, nest, err)
			}
			if nest && (p.Endpoints[0].Name != "umbrella" || len(p.Endpoints) != n+1) {
				return fmt.Errorf("nesting: %d endpoints: no umbrella", n)
			}
			best := time.Hour
			for i := range 3 {
				f, err := os.OpenFile(tr.Changed, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				fmt.Fprintf(f, "# change %d\n", i)
				f.Close()
				time.Sleep(quiet)
				t0 := time.Now()
				if _, err := l.Load(); err != nil {
					return err
				}
				best = min(best, time.Since(t0))
			}
			got[j] = best
			r.data.add(Measurement{Section: "size", Subject: "in-process", Variant: strconv.Itoa(n), Metric: fmt.Sprintf("check_ms_nested_%v", nest), Value: ms(best)})
			p, l = nil, nil
			os.RemoveAll(dir)
			runtime.GC()
		}
		nested[k] = got[1]
		t.Rows = append(t.Rows, []string{strconv.Itoa(n), strconv.Itoa(files), fmt.Sprintf("%.1f", ms(got[0])), fmt.Sprintf("%.1f", ms(got[1])), fmt.Sprintf("%.2fx", float64(got[1])/float64(got[0]))})
	}
	growth := float64(nested[1]) / float64(nested[0])
	t.Notes = append(t.Notes, fmt.Sprintf("Ten times the endpoints took %.1fx the time with every endpoint nested: linear (quadratic would be 100x). Each host pattern is looked up once per label or prefix length above it that some pattern has.", growth))
	s.Tables = append(s.Tables, t)
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("14. never-weaker check, %d vs %d endpoints all nested", sizes[1], sizes[0]), Want: "linear (≈ 10x)",
		Got: fmt.Sprintf("%.1fx", growth), Met: growth < 20, Note: "a reload after one file changed, which checks every endpoint; best of 3"})
	return nil
}
