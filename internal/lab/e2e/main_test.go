package e2e

import (
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/dnslab"
	"github.com/tlsgate/tlsgate/internal/lab/testbin"
)

// tlsgateBin is the tlsgate binary built by TestMain.
var tlsgateBin string

// TestMain runs the tests in the dnslab lab's namespaces (a network
// namespace with lo only, where the discovery tests' nsd and unbound can
// listen on port 53; see dnslab.Main), builds cmd/tlsgate once there
// (with -race when the tests themselves run with it, so that a data race
// in the real daemon under real MTA traffic is reported) and removes it
// afterwards.
func TestMain(m *testing.M) {
	dnslab.MainFunc(func() int { return testbin.Run(m, "e2e", raceEnabled, &tlsgateBin, nil) })
}
