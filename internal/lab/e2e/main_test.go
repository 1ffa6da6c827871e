package e2e

import (
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/testbin"
)

// tlsgateBin is the tlsgate binary built by TestMain.
var tlsgateBin string

// TestMain builds cmd/tlsgate once (with -race when the tests themselves
// run with it, so that a data race in the real daemon under real MTA
// traffic is reported) and removes it afterwards.
func TestMain(m *testing.M) { testbin.Main(m, "e2e", raceEnabled, &tlsgateBin, nil) }
