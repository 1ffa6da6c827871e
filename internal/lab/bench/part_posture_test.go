package bench

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPosturePartQuick runs the posture part on a 24 MB log against a
// freshly built tlsgate and checks the report's tables and targets (the
// part itself checks that the report read every line).
func TestPosturePartQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tlsgate")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build tlsgate")
	}
	dir := shortDir(t)
	tlsgate := filepath.Join(dir, "tlsgate")
	cmd := exec.Command(goTool, "build", "-o", tlsgate, "./cmd/tlsgate")
	cmd.Dir = "../../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var progress strings.Builder
	work := filepath.Join(dir, "w")
	rep, err := Run(Options{Tlsgate: tlsgate, Self: selfAsMain(t), Parts: "p", Rounds: 2, PostureBytes: 24 << 20, WorkDir: work, Progress: &progress, Command: "test"})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	md := rep.Markdown()
	for _, want := range []string{"P. Posture report", "| tlsgate posture |", "| cat |", "| wc -l |", "P. posture lines/s on one core",
		"P. posture peak RSS per peer-day, twice the lines", "| main | 24 |", "| many | 3 |", "every one of its"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(work, "posture", "*")); len(matches) != 0 {
		t.Errorf("generated files left behind: %v", matches)
	}
	t.Logf("%s\n%s", progress.String(), md)
}
