// Package testbin builds tlsgate's own commands for the tests that run the
// real binaries (end-to-end, hostile-input, demo and benchmark tests).
package testbin

import (
	"fmt"
	"os/exec"
	"path/filepath"
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
