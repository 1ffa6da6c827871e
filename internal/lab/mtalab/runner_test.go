package mtalab

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestRunnerCleanupOrderAndFatal(t *testing.T) {
	var log strings.Builder
	r := NewRunner(&log, "  lab: ")
	var order []int
	var dir string
	err := r.Do(func() {
		dir = r.TempDir()
		for i := 1; i <= 3; i++ {
			r.Cleanup(func() {
				if _, err := os.Stat(dir); err != nil {
					t.Errorf("TempDir removed before a later cleanup: %v", err)
				}
				order = append(order, i)
			})
		}
		r.Cleanup(func() { panic("boom") })
		r.Fatalf("stop at %d", 42)
		t.Error("Fatalf returned")
	})
	if err == nil || err.Error() != "stop at 42" {
		t.Errorf("Do = %v; want the Fatalf message", err)
	}
	if !strings.Contains(log.String(), "  lab: stop at 42\n") {
		t.Errorf("log = %q; want the Fatalf message after the prefix", log.String())
	}
	if !r.Failed() {
		t.Error("Failed() = false after Fatalf")
	}
	cerr := r.Close()
	if cerr == nil || !strings.Contains(cerr.Error(), "boom") {
		t.Errorf("Close = %v; want the cleanup's panic", cerr)
	}
	if got := order; len(got) != 3 || got[0] != 3 || got[1] != 2 || got[2] != 1 {
		t.Errorf("cleanup order = %v; want [3 2 1]", got)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("TempDir %s not removed: %v", dir, err)
	}
	if err := r.Close(); err == nil {
		t.Error("second Close forgot the errors")
	}
	if len(order) != 3 {
		t.Errorf("a cleanup ran twice: %v", order)
	}
}

func TestRunnerSkip(t *testing.T) {
	r := NewRunner(nil, "")
	err := r.Do(func() { r.Skipf("Postfix is %s", "not installed") })
	if !errors.Is(err, ErrSkipped) || err.Error() != "Postfix is not installed" {
		t.Errorf("Do = %v; want the Skipf message, matching ErrSkipped", err)
	}
	if r.Failed() {
		t.Error("Failed() = true after Skipf")
	}
}

func TestRunnerPanicIsAnError(t *testing.T) {
	r := NewRunner(nil, "")
	err := r.Do(func() {
		var m map[string]int
		m["x"] = 1
	})
	if err == nil || !strings.Contains(err.Error(), "internal error") || !strings.Contains(err.Error(), "runner_test.go") {
		t.Errorf("Do = %v; want an internal error with the stack", err)
	}
	if !r.Failed() {
		t.Error("Failed() = false after a panic")
	}
}

func TestRunnerOK(t *testing.T) {
	r := NewRunner(nil, "")
	if err := r.Do(func() { r.Logf("fine") }); err != nil {
		t.Errorf("Do = %v", err)
	}
	if err := r.Close(); err != nil || r.Failed() {
		t.Errorf("Close = %v, Failed = %v", err, r.Failed())
	}
}

func TestRunnerErrorfGoesOn(t *testing.T) {
	r := NewRunner(nil, "")
	reached := false
	err := r.Do(func() {
		r.Errorf("first %s", "problem")
		reached = true
	})
	if !reached || err != nil {
		t.Errorf("reached=%v Do=%v; want the run to go on", reached, err)
	}
	if cerr := r.Close(); cerr == nil || cerr.Error() != "first problem" {
		t.Errorf("Close = %v; want the Errorf message", cerr)
	}
}

// The lab's entry points take a Runner as they take a *testing.T.
var _, _ T = (*Runner)(nil), (*testing.T)(nil)
