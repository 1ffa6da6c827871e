package hostile

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// tlsgateBin is the tlsgate binary built by TestMain.
var tlsgateBin string

// TestMain builds cmd/tlsgate once (with -race when the tests run with it,
// so that a data race in the daemon under hostile load is reported), runs
// the tests, prints the figures they recorded (with -v) and removes the
// binary.
func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "tlsgate-hostile-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
	tlsgateBin = filepath.Join(dir, "tlsgate")
	args := []string{"build", "-o", tlsgateBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/tlsgate/tlsgate/cmd/tlsgate")
	start := time.Now()
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "hostile: go %v: %v\n%s", args, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "hostile: built %s in %v (race=%v)\n", tlsgateBin, time.Since(start).Round(time.Millisecond), raceEnabled)
	}
	code := m.Run()
	if testing.Verbose() {
		printFigures()
	}
	os.RemoveAll(dir)
	os.Exit(code)
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
