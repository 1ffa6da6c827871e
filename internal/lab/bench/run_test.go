package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for tlsgate-bench: the runner
// re-executes itself for the no-op servers and load clients.
func TestMain(m *testing.M) {
	if os.Getenv("TLSGATE_BENCH_AS_MAIN") == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// selfAsMain returns the test binary's path and makes its children run Main.
func selfAsMain(t *testing.T) string {
	t.Helper()
	t.Setenv("TLSGATE_BENCH_AS_MAIN", "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return self
}

func TestProcessAndClient(t *testing.T) {
	self := selfAsMain(t)
	dir := shortDir(t)
	spec := "unix:" + filepath.Join(dir, "raw.sock")
	p, err := StartProcess("noop-raw", spec, filepath.Join(dir, "raw.log"), -1, nil, self, "noop-socketmap", "-impl", "raw", "-listen", spec, "-reply", "NOTFOUND")
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	writeLines(keys, []string{"a.example", "b.example"})
	res, err := RunClient(-1, time.Minute, self, "load-socketmap", "-addr", spec, "-keys", keys, "-conc", "2", "-duration", "200ms", "-warmup", "20ms", "-server-pid", strconv.Itoa(p.PID()))
	if err != nil {
		t.Fatal(err)
	}
	// CPU time moves in clock ticks, and a no-op server on a busy machine may
	// not use one in 200 ms: TestProcCPUAndMemory proves that it moves.
	if res.Ops == 0 || res.Answers["NOTFOUND"] != res.Ops || res.ServerCPU < 0 || res.ClientCPU < 0 {
		t.Errorf("load result %+v", res)
	}
	if err := p.Stop(); err != nil {
		t.Error(err)
	}
	if !p.Exited() {
		t.Error("still running after Stop")
	}
	if _, err := StartProcess("bad", "unix:"+filepath.Join(dir, "none.sock"), filepath.Join(dir, "bad.log"), -1, nil, self, "noop-socketmap", "-impl", "bogus", "-listen", "unix:"+filepath.Join(dir, "none.sock")); err == nil {
		t.Error("a server that exits at once was reported as started")
	}
}

// TestRunQuick runs parts 1 to 3 of the runner for a second each (long
// enough for a loaded CI machine to complete operations) against a
// freshly built tlsgate, and checks that the report has every table.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tlsgate")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build tlsgate")
	}
	// Both programs are built without the race detector even under
	// "go test -race": the runner starts dozens of them.
	dir := shortDir(t)
	tlsgate, self := filepath.Join(dir, "tlsgate"), filepath.Join(dir, "tlsgate-bench")
	for bin, pkg := range map[string]string{tlsgate: "./cmd/tlsgate", self: "./cmd/tlsgate-bench"} {
		cmd := exec.Command(goTool, "build", "-o", bin, pkg)
		cmd.Dir = "../../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	var progress strings.Builder
	rep, err := Run(Options{Tlsgate: tlsgate, Self: self, Parts: "123", Rounds: 1, Duration: time.Second, Warmup: 200 * time.Millisecond,
		Concs: []int{2}, Sizes: []int{10, 200}, SizeConc: 2, SettleMax: time.Second, TreeEndpoints: 2000, TreeFiles: 20,
		WorkDir: filepath.Join(dir, "w"), Progress: &progress, Command: "test"})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	md := rep.Markdown()
	for _, want := range []string{"1. socketmap CPU/lookup vs no-op", "2. reload of the 200-endpoint file", "3. milter messages/s vs no-op",
		"| 2 | tlsgate |", "| 1 msg/conn | 2 | noop-milter |", "| 200 |", "| 2000 in 20 files |", "14. reload after one of 20 files changed (2000 endpoints) vs cold load",
		"14. live policy per endpoint, 200 endpoints (heap profile)", "14. never-weaker check, 2000 vs 200 endpoints all nested"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, s := range rep.Sections {
		if len(s.Tables) == 0 {
			t.Errorf("section %q has no table", s.Title)
		}
	}
}
