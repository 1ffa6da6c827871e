package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/testbin"
)

// tlsgateBin is the tlsgate binary built by TestMain.
var tlsgateBin string

// TestMain builds cmd/tlsgate once (with -race when the tests themselves
// run with it, so that a data race in the real daemon under real MTA
// traffic is reported) and removes it afterwards.
func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "tlsgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	start := time.Now()
	tlsgateBin, err = testbin.Build(dir, "tlsgate", "github.com/tlsgate/tlsgate/cmd/tlsgate", raceEnabled)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built %s in %v (race=%v)\n", tlsgateBin, time.Since(start).Round(time.Millisecond), raceEnabled)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
