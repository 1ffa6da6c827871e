// Command tlsgate-bench measures what tlsgate costs next to no-op baselines
// and the MTA alone, and writes docs/benchmarks.md; "make bench" runs it.
// The same program provides the no-op servers and load clients the runner
// starts as separate processes. See package internal/lab/bench.
package main

import (
	"os"

	"github.com/tlsgate/tlsgate/internal/lab/bench"
)

func main() {
	os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr))
}
