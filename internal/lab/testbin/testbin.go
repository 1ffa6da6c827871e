// Package testbin builds tlsgate's own commands for the tests that run the
// real binaries (end-to-end, hostile-input, demo and benchmark tests). It
// is part of the lab (internal/lab).
package testbin

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Build compiles the package pkg (an import path or a directory) into
// dir/name and returns the path. With race the binary is built with the
// race detector, so that a data race in the daemon under real traffic is
// reported by the test that drives it.
func Build(dir, name, pkg string, race bool) (string, error) {
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbin: go %v: %v\n%s", args, err, out)
	}
	return bin, nil
}

// Main is the body of a TestMain for tests that run the real tlsgate: it
// builds cmd/tlsgate into a temporary directory (with the race detector
// when race is set), stores its path in *bin, runs the tests, calls after
// (if not nil), removes the directory and exits with the tests' status.
// tag prefixes its messages.
func Main(m *testing.M, tag string, race bool, bin *string, after func()) {
	os.Exit(Run(m, tag, race, bin, after))
}

// Run is Main without the exit: it returns the tests' exit status, for a
// TestMain that runs it inside something else (dnslab.MainFunc).
func Run(m *testing.M, tag string, race bool, bin *string, after func()) int {
	flag.Parse()
	dir, err := os.MkdirTemp("", "tlsgate-"+tag+"-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tag, err)
		return 1
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	*bin, err = Build(dir, "tlsgate", "github.com/tlsgate/tlsgate/cmd/tlsgate", race)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tag, err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "%s: built %s in %v (race=%v)\n", tag, *bin, time.Since(start).Round(time.Millisecond), race)
	}
	code := m.Run()
	if after != nil {
		after()
	}
	return code
}
