package bench

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
	"github.com/tlsgate/tlsgate/policyd"
)

// shortDir is a temporary directory with a path short enough for unix sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tgb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestParseStatCPU(t *testing.T) {
	stat := "1234 (tls gate) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 500 1000 300 18446744073709551615"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 325 * clockTick; got != want {
		t.Errorf("parseStatCPU = %v, want %v", got, want)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Error("short stat line accepted")
	}
}

func TestProcCPUAndMemory(t *testing.T) {
	before, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the process's CPU time has grown by three ticks: proof that
	// it is read from /proc and moves (on a busy machine this takes longer
	// than 30 ms of wall time, so only a generous deadline fails).
	x, t0 := 0, time.Now()
	for {
		for t1 := time.Now(); time.Since(t1) < 10*time.Millisecond; {
			x++
		}
		after, err := ProcCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after-before >= 3*clockTick {
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("10 s of spinning counted as %v of CPU", after-before)
		}
	}
	m, err := ProcMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("memory %+v", m)
	}
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Error("CPU of a nonexistent process")
	}
	if LoadAvg() == "?" || Load1() < 0 {
		t.Errorf("loadavg %q", LoadAvg())
	}
	if m := ThisMachine(); m.CPUs < 1 || m.Kernel == "?" {
		t.Errorf("machine %+v", m)
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{3, 1, math.NaN(), 2, 10})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 10 || s.N != 4 {
		t.Errorf("Summarize = %+v", s)
	}
	if !s.Wide(0.5) {
		t.Error("1..10 around 2.5 is not wide")
	}
	if !math.IsNaN(Summarize(nil).Median) {
		t.Error("median of nothing is not NaN")
	}
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if Percentile(lat, 0.5) != 5 || Percentile(lat, 0.99) != 10 || Percentile(nil, 0.5) != 0 {
		t.Error("Percentile")
	}
}

func TestGenerateConfig(t *testing.T) {
	g, err := GenerateConfig(ConfigOptions{Endpoints: 400, SocketmapListen: "unix:/run/x.sock", MilterListen: "unix:/run/m.sock", Keys: 400})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("gen.toml", g.TOML)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if len(p.Endpoints) != 400 {
		t.Fatalf("%d endpoints", len(p.Endpoints))
	}
	kinds := map[string]bool{}
	for i, k := range g.Keys {
		a, err := p.At(time.Now()).Outbound(k)
		if err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
		covered := a.Endpoint != nil
		if covered != (i%2 == 0) {
			t.Errorf("key %q: covered %v, want %v", k, covered, i%2 == 0)
		}
		if a.Found {
			kinds[strings.Fields(a.Text)[0]] = true
		}
	}
	for _, k := range []string{"secure", "encrypt", "fingerprint", "verify"} {
		if !kinds[k] {
			t.Errorf("no covered key answers %q (%v)", k, kinds)
		}
	}
	if g.Hits != 200 {
		t.Errorf("Hits = %d", g.Hits)
	}
}

func TestNoopSocketmapServers(t *testing.T) {
	dir := shortDir(t)
	for _, impl := range []string{"raw", "policyd"} {
		t.Run(impl, func(t *testing.T) {
			spec := "unix:" + filepath.Join(dir, impl+".sock")
			l, err := ListenSpec(spec)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NoopReply("OK secure match=example.com")
			if err != nil {
				t.Fatal(err)
			}
			if impl == "raw" {
				go ServeRawSocketmap(l, r)
				t.Cleanup(func() { l.Close() })
			} else {
				srv, err := NewNoopSocketmapServer(r)
				if err != nil {
					t.Fatal(err)
				}
				go srv.Serve(l)
				t.Cleanup(func() { srv.Close() })
			}
			st, err := NewSocketmapStepper(spec, "tlspolicy", []string{"a.example", ".b.example"}, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for range 3 {
				ans, err := st.Step()
				if err != nil || ans != "OK" {
					t.Fatalf("Step = %q, %v", ans, err)
				}
			}
			res, err := Drive(DriveOptions{Conc: 2, Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond, ServerPIDs: []int{os.Getpid()}},
				func(id int) (Stepper, error) { return NewSocketmapStepper(spec, "tlspolicy", []string{"k1", "k2"}, id) })
			if err != nil {
				t.Fatal(err)
			}
			if res.Ops < 10 || res.Errors != 0 || res.P50 <= 0 || res.P99 < res.P50 || res.Answers["OK"] != res.Ops || res.Rate() <= 0 {
				t.Errorf("Drive: %+v", res)
			}
		})
	}
	if _, err := NoopReply("OK"); err == nil {
		t.Error(`NoopReply("OK") accepted`)
	}
	if r, err := NoopReply("NOTFOUND"); err != nil || r.Status != policyd.StatusNotFound {
		t.Errorf("NoopReply(NOTFOUND) = %+v, %v", r, err)
	}
}

func TestMilterStepper(t *testing.T) {
	dir := shortDir(t)
	g, err := GenerateConfig(ConfigOptions{Endpoints: 200})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("gen.toml", g.TOML)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	tg, err := milter.New(milter.Options{Policy: func() *policy.Policy { return pol }, Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	noop := NewNoopMilterServer()
	for _, c := range []struct {
		name  string
		serve func(net.Listener) error
		close func() error
		want  string
	}{
		{"noop", noop.Serve, noop.Close, "continue"},
		{"tlsgate", tg.Serve, tg.Close, "accept"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".sock")
			l, err := ListenSpec("unix:" + path)
			if err != nil {
				t.Fatal(err)
			}
			go c.serve(l)
			t.Cleanup(func() { c.close() })
			st, err := NewMilterStepper("unix", path, g.Clients, 3, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for i := range 2 * len(g.Clients) {
				ans, err := st.Step()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if ans != c.want && !(c.name == "noop" && ans == "accept") {
					t.Fatalf("message %d: %q, want %q", i, ans, c.want)
				}
			}
		})
	}
	out := logs.String()
	if !strings.Contains(out, "result=pass") || !strings.Contains(out, "result=none") || strings.Contains(out, "result=defer") || strings.Contains(out, "result=reject") {
		t.Errorf("tlsgate's decisions for the generated clients:\n%s", out)
	}
}

// syncWriter serialises writes from the milter's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestTLSProxy: the proxy turns a plaintext connection into TLS towards a
// wrapped listener.
func TestTLSProxy(t *testing.T) {
	dir := shortDir(t)
	cert, err := testpki.Issue(dir, testpki.Options{Name: "sink", Subject: pkix.Name{CommonName: "sink.partner.test"},
		DNSNames: []string{"sink.partner.test"}, KeyType: testpki.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Cert)
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	p, err := NewTLSProxy(tl.Addr().String(), &tls.Config{ServerName: "sink.partner.test", RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pc, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.Write([]byte("ping\n"))
	buf := make([]byte, 5)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(pc, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("through the proxy: %q, %v", buf, err)
	}
	if p.Errors() != 0 {
		t.Errorf("proxy errors: %d", p.Errors())
	}
}

func TestReportRenders(t *testing.T) {
	r := &runner{o: Options{Rounds: 3, Concs: []int{1, 8}, Sizes: []int{10, 10000, 100000}, SizeConc: 8}, data: &dataset{}}
	for round := 1; round <= 3; round++ {
		for _, tr := range []string{"unix", "tcp"} {
			for _, conc := range []int{1, 8} {
				for subj, cpu := range map[string]float64{subjTlsgate: 9, subjNoopRaw: 8, subjNoopPolicyd: 8.5} {
					r.data.addLoad(Measurement{Section: "socketmap", Round: round, Subject: subj, Transport: tr, Conc: conc},
						&LoadResult{Ops: 1000, Elapsed: time.Second, P50: 10 * time.Microsecond, P99: 20 * time.Microsecond,
							ServerCPU: time.Duration(cpu*1000) * time.Microsecond, ClientCPU: 950 * time.Millisecond, Answers: map[string]int64{"OK": 500}})
				}
			}
		}
		for _, conc := range []int{1, 8} {
			for _, mode := range milterModes {
				for _, subj := range []string{subjTlsgate, subjNoopMilter} {
					r.data.addLoad(Measurement{Section: "milter", Round: round, Subject: subj, Conc: conc, Variant: modeLabel(mode)},
						&LoadResult{Ops: 500, Elapsed: time.Second, P50: time.Millisecond, P99: 2 * time.Millisecond, ServerCPU: 400 * time.Millisecond})
				}
			}
		}
		for _, n := range []string{"10", "10000", "100000"} {
			r.data.addLoad(Measurement{Section: "size", Round: round, Subject: subjTlsgate, Variant: n, Conc: 8},
				&LoadResult{Ops: 1000, Elapsed: time.Second, ServerCPU: 9 * time.Millisecond})
			for _, m := range []string{"reload_ms", "ns_per_hit", "ns_per_miss", "load_ms"} {
				subj := subjTlsgate
				if m != "reload_ms" {
					subj = "in-process"
				}
				r.data.add(Measurement{Section: "size", Round: round, Subject: subj, Variant: n, Metric: m, Value: 100})
			}
		}
		for _, size := range []string{"2 KB"} {
			for subj, rate := range map[string]float64{setupAlone: 600, setupNoop: 420, setupTlsgate: 410} {
				for _, m := range []string{"rate_per_s", "inject_rate_per_s", "delay_a_s"} {
					r.data.add(Measurement{Section: "e2e", Round: round, Subject: subj, Variant: size, Metric: m, Value: rate})
				}
			}
		}
	}
	r.data.add(Measurement{Section: "size", Subject: subjTlsgate, Variant: "10000", Metric: "rss_mb", Value: 14})
	r.o.E2ERounds = 3
	var secs []*Section
	for _, f := range []func(*Section){r.socketmapTables, r.sizeTables, r.milterTables,
		func(s *Section) {
			r.e2eTables(s, []e2eSize{{"2 KB", 2048, 10}}, []*e2eSetup{{name: setupAlone}, {name: setupNoop}, {name: setupTlsgate}})
		}} {
		s := &Section{Title: "part", LoadStart: "0.5 0.4 0.3", LoadEnd: "3.5 1 1"}
		f(s)
		secs = append(secs, s)
	}
	secs = append(secs, &Section{Title: "skipped", Skipped: "no Postfix"})
	rep := &Report{Machine: Machine{CPUs: 2, Model: "Test CPU", Kernel: "6.x", GoVersion: "go1.26"}, Command: "tlsgate-bench run",
		Rounds: 3, Duration: time.Second, Pinned: true, Started: time.Now(), Finished: time.Now(), Sections: secs, Raw: r.data.ms, CSVName: "benchmarks.csv"}
	md := rep.Markdown()
	for _, want := range []string{"### Targets", "| 1. socketmap CPU/lookup vs no-op | ≤ 1.20x | 1.12x worst", "met in 4 of 4",
		"14. RSS of tlsgate serve with 10k endpoints", "14.0 MB", "3. milter messages/s vs no-op", "0.98x",
		"**Not run:** no Postfix", "client-bound", "the load average exceeded the number of CPUs"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	var csv strings.Builder
	if err := rep.WriteCSV(&csv); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(csv.String(), "\n"); lines != len(r.data.ms)+1 || !strings.HasPrefix(csv.String(), "section,round,subject") {
		t.Errorf("CSV has %d lines for %d measurements", lines, len(r.data.ms))
	}

	dir := t.TempDir()
	mdPath, csvPath := filepath.Join(dir, "b.md"), filepath.Join(dir, "b.csv")
	os.WriteFile(mdPath, []byte("# Title\n\nhand-written intro\n\n"+BeginMarker+"\nold\n"+EndMarker+"\n\nhand-written analysis\n"), 0o644)
	if err := rep.WriteFiles(mdPath, csvPath); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(mdPath)
	doc := string(data)
	if !strings.Contains(doc, "hand-written intro") || !strings.Contains(doc, "hand-written analysis") || strings.Contains(doc, "\nold\n") || !strings.Contains(doc, "### Targets") {
		t.Errorf("WriteFiles did not splice:\n%s", doc)
	}
	if got := Splice("", "x"); !strings.HasPrefix(got, BeginMarker) {
		t.Errorf("Splice into nothing: %q", got)
	}
}

func TestMainModes(t *testing.T) {
	var out, errb strings.Builder
	if code := Main([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "load-socketmap") {
		t.Errorf("help: %d %q", code, out.String())
	}
	if code := Main([]string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown mode: exit %d", code)
	}
	dir := shortDir(t)
	cfg := filepath.Join(dir, "c.toml")
	if code := Main([]string{"gen-config", "-n", "20", "-o", cfg, "-keys", filepath.Join(dir, "k.txt")}, &out, &errb); code != 0 {
		t.Fatalf("gen-config: %d %s", code, errb.String())
	}
	if _, err := policy.Load(cfg); err != nil {
		t.Error(err)
	}
	if code := Main([]string{"run"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "required") {
		t.Errorf("run without -tlsgate: %d %q", code, errb.String())
	}
}

// TestTreeIncrementalEqualsFull: the generated configuration in included
// files (part 2's, smaller), loaded by one policy.Loader through a series
// of changes (a file changed, removed, renamed, added back, the main
// file's settings changed), gives after each exactly the policy a full
// load of the same files gives (policy.Same), and compiles only what
// changed.
func TestTreeIncrementalEqualsFull(t *testing.T) {
	dir := t.TempDir()
	tr, err := WriteTree(dir, 4000, 40, ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := policy.NewLoader(tr.Main)
	check := func(step string, compiled int) {
		t.Helper()
		time.Sleep(quiet)
		p, err := l.Load()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if c := l.Stats().Compiled; compiled >= 0 && c != compiled {
			t.Errorf("%s: compiled %d files, want %d", step, c, compiled)
		}
		full, err := policy.Load(tr.Main)
		if err != nil {
			t.Fatal(err)
		}
		if err := policy.Same(p, full); err != nil {
			t.Fatalf("%s: incremental and full loads differ: %v", step, err)
		}
	}
	check("cold", 41)
	check("unchanged", 0)
	if err := tr.Toggle(); err != nil {
		t.Fatal(err)
	}
	check("one file changed", 1)
	other := filepath.Join(dir, "conf.d", PartName(3))
	data, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(other)
	check("one file removed", 0)
	moved := filepath.Join(dir, "conf.d", "zz-moved.toml")
	os.Rename(filepath.Join(dir, "conf.d", PartName(7)), moved)
	check("one file renamed", 1)
	os.WriteFile(other, data, 0o644)
	check("the removed file back", 1)
	main, _ := os.ReadFile(tr.Main)
	os.WriteFile(tr.Main, append(main, "[certs]\ntrust_anchor_dir = \"/var/lib/tlsgate/ta\"\n"...), 0o644)
	check("main file's settings changed", 41)
}

// TestNestedConfig: with Nested, an umbrella endpoint covers every
// generated one, which passes the never-weaker check (they all demand at
// least as much); an umbrella that demands more is refused for each.
func TestNestedConfig(t *testing.T) {
	g, err := GenerateConfig(ConfigOptions{Endpoints: 400, Nested: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("nested.toml", g.TOML)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Endpoints) != 401 || p.Endpoints[0].Name != "umbrella" {
		t.Fatalf("%d endpoints, first %s", len(p.Endpoints), p.Endpoints[0].Name)
	}
	stricter := strings.Replace(string(g.TOML), "mode = \"monitor\"\n  [endpoint.inbound]\n  encryption = true", "mode = \"enforce\"\n  [endpoint.inbound]\n  encryption = true", 1)
	_, err = policy.Parse("nested.toml", []byte(stricter))
	if err == nil || strings.Count(err.Error(), `is nested in endpoint "umbrella"`) < 50 {
		t.Errorf("an enforcing umbrella: %.300v", err)
	}
}
