package hostile

import (
	"sync"
	"syscall"
	"testing"
)

// fdHeavy is held by each test that opens a thousand descriptors or more
// in this process (the floods and TestConcurrentSocketmapConnections), so
// that they never overlap: together they would open over 6000, more than
// the hard RLIMIT_NOFILE of 4096 that many runners have, and a dial would
// fail with EMFILE.
var fdHeavy sync.Mutex

// fdSlack is what the tests running alongside an fd-heavy one (their
// daemons' pipes, their clients) and the test binary itself may have open.
const fdSlack = 256

// needFDs is called first by a test that opens about n descriptors in the
// test process (its daemon, a separate process with the same limit, holds
// as many). It fails the test at once if the open-file limit cannot hold
// n plus fdSlack even with no other fd-heavy test running, and otherwise
// waits for fdHeavy and holds it until the test and its cleanups (which
// close its connections and stop its daemon) have ended.
func needFDs(t *testing.T, n int) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit RLIMIT_NOFILE: %v", err)
	}
	// The Go runtime has already raised the soft limit to the hard one.
	if want := uint64(n + fdSlack); lim.Cur < want {
		t.Fatalf("this test opens about %d file descriptors, but RLIMIT_NOFILE is %d (hard limit %d); it needs at least %d: "+
			"raise the hard limit of the runner (ulimit -n %d in its shell as root, LimitNOFILE= in a systemd unit, nofile in limits.conf, docker --ulimit nofile=%d)",
			n, lim.Cur, lim.Max, want, want, want)
	}
	fdHeavy.Lock()
	t.Cleanup(fdHeavy.Unlock)
}
