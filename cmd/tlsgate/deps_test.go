package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedDeps keeps the product apart from the lab that proves it: no
// command links package testing (the demo and the benchmark drive the lab
// through mtalab.Runner, not a fake testing.TB), and tlsgate itself is
// built from no package of internal/lab.
func TestShippedDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies")
	}
	for _, cmd := range []string{"./cmd/tlsgate", "./cmd/tlsgate-bench", "./cmd/tlsgate-demo"} {
		list := exec.Command(goTool, "list", "-deps", cmd)
		list.Dir = "../.."
		out, err := list.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %q", cmd, deps)
		}
		for _, d := range deps {
			if d == "testing" {
				t.Errorf("%s links package testing", cmd)
			}
			if cmd == "./cmd/tlsgate" && strings.HasPrefix(d, "github.com/tlsgate/tlsgate/internal/lab") {
				t.Errorf("%s is built from %s, a package of the lab", cmd, d)
			}
		}
	}
}
