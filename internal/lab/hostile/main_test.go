package hostile

import (
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/testbin"
)

// tlsgateBin is the tlsgate binary built by TestMain.
var tlsgateBin string

// TestMain builds cmd/tlsgate once (with -race when the tests run with it,
// so that a data race in the daemon under hostile load is reported), runs
// the tests, prints the figures they recorded (with -v) and removes the
// binary.
func TestMain(m *testing.M) {
	testbin.Main(m, "hostile", raceEnabled, &tlsgateBin, func() {
		if testing.Verbose() {
			printFigures()
		}
	})
}

// figures are the numbers the tests measured (peak RSS, counts), printed
// at the end of a verbose run for docs/hostile-input.md.
var figures struct {
	sync.Mutex
	m map[string]string
}

// record notes a measured figure under name.
func record(name, format string, args ...any) {
	figures.Lock()
	defer figures.Unlock()
	if figures.m == nil {
		figures.m = map[string]string{}
	}
	figures.m[name] = fmt.Sprintf(format, args...)
}

func printFigures() {
	figures.Lock()
	defer figures.Unlock()
	names := make([]string, 0, len(figures.m))
	for n := range figures.m {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "hostile: figures (race=%v)\n", raceEnabled)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-48s %s\n", n, figures.m[n])
	}
}
