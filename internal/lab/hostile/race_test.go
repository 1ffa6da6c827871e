//go:build race

package hostile

// raceEnabled reports that the tests (and so the daemon) run with the race
// detector.
const raceEnabled = true
