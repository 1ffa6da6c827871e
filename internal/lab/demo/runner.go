package demo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// runner lets a program use the test harness (internal/lab/mtalab), whose
// functions take a testing.TB. It embeds the interface (a nil value) only
// to satisfy testing.TB's unexported method; every method mtalab and
// testpki call is implemented here. Calling one that is not panics on the
// nil interface, which [runner.catch] reports as an error like any other
// failure.
//
// Fatal and Skip end the demo by panicking with a *fatalError, which
// Run turns into its error; Cleanup functions run in reverse order in
// [runner.cleanup], each protected against panics, exactly once, whether
// the demo succeeded or failed. All methods must be called from the
// goroutine that runs the demo, except Log/Logf and Error/Errorf.
type runner struct {
	testing.TB

	log io.Writer // Logf output; io.Discard for a quiet run

	mu       sync.Mutex
	cleanups []func()
	errs     []string
	failed   bool
}

// fatalError is the panic value of runner.Fatal and runner.Skip.
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }

func newRunner(log io.Writer) *runner {
	if log == nil {
		log = io.Discard
	}
	return &runner{log: log}
}

// Name implements testing.TB.
func (r *runner) Name() string { return "tlsgate-demo" }

// Helper implements testing.TB; it does nothing.
func (r *runner) Helper() {}

// Cleanup implements testing.TB: f runs in [runner.cleanup], last
// registered first.
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// Log implements testing.TB.
func (r *runner) Log(args ...any) { r.Logf("%s", fmt.Sprintln(args...)) }

// Logf implements testing.TB: the line goes to the verbose log.
func (r *runner) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	io.WriteString(r.log, s)
}

// Error implements testing.TB.
func (r *runner) Error(args ...any) { r.Errorf("%s", strings.TrimSuffix(fmt.Sprintln(args...), "\n")) }

// Errorf implements testing.TB: the message is kept for Run's error and
// the demo goes on.
func (r *runner) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// Fail implements testing.TB.
func (r *runner) Fail() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
}

// Failed implements testing.TB.
func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// FailNow implements testing.TB.
func (r *runner) FailNow() { r.Fatal("failed") }

// Fatal implements testing.TB.
func (r *runner) Fatal(args ...any) { r.Fatalf("%s", strings.TrimSuffix(fmt.Sprintln(args...), "\n")) }

// Fatalf implements testing.TB: it marks the run failed and ends it.
func (r *runner) Fatalf(format string, args ...any) {
	r.Fail()
	panic(&fatalError{fmt.Sprintf(format, args...)})
}

// Skip implements testing.TB. A demo cannot be skipped: mtalab skips
// when Postfix is missing, which for the demo is a failure.
func (r *runner) Skip(args ...any) { r.Fatal(args...) }

// Skipf implements testing.TB; see Skip.
func (r *runner) Skipf(format string, args ...any) { r.Fatalf(format, args...) }

// SkipNow implements testing.TB; see Skip.
func (r *runner) SkipNow() { r.Fatal("skipped") }

// Skipped implements testing.TB.
func (r *runner) Skipped() bool { return false }

// TempDir implements testing.TB: a new directory under $TMPDIR, mode
// 0755 (MTA daemons running as other users read certificates from it),
// removed at cleanup.
func (r *runner) TempDir() string {
	dir, err := os.MkdirTemp("", "tlsgate-demo-")
	if err != nil {
		r.Fatalf("demo: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		r.Fatalf("demo: %v", err)
	}
	r.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			r.Errorf("demo: remove %s: %v", dir, err)
		}
	})
	return dir
}

// catch turns a panic value recovered from the demo's goroutine into an
// error: a *fatalError keeps its message, anything else (a runtime error,
// a testing.TB method this adapter does not implement) gets its stack.
func (r *runner) catch(v any) error {
	r.Fail()
	if fe, ok := v.(*fatalError); ok {
		return fe
	}
	buf := make([]byte, 16<<10)
	buf = buf[:runtime.Stack(buf, false)]
	return fmt.Errorf("demo: internal error: %v\n%s", v, buf)
}

// cleanup runs the registered functions, last first, each once; a panic
// in one is recorded and the others still run. It returns the errors
// reported with Errorf so far (during the demo or the cleanup), if any.
func (r *runner) cleanup() error {
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			r.mu.Unlock()
			break
		}
		f := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		func() {
			defer func() {
				if v := recover(); v != nil {
					r.Errorf("demo: cleanup: %v", r.catch(v))
				}
			}()
			f()
		}()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(r.errs, "\n"))
}
