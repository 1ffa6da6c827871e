package mtalab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
)

// T is what the lab needs from its caller. A test passes its *testing.T
// (or *testing.B); a program that runs the lab outside "go test" (the
// demo, the benchmark) passes a [Runner], and so links no package testing.
type T interface {
	// Helper marks the calling function as a helper, as testing.T does.
	Helper()
	// Logf writes a line to the log.
	Logf(format string, args ...any)
	// Errorf reports a failure; the caller goes on.
	Errorf(format string, args ...any)
	// Fatalf reports a failure and ends the test or run.
	Fatalf(format string, args ...any)
	// Skipf ends the test or run without failing it (a missing MTA).
	Skipf(format string, args ...any)
	// Failed reports whether a failure was reported.
	Failed() bool
	// Cleanup registers f to run when the test or run is over, last
	// registered first.
	Cleanup(f func())
}

// ErrSkipped matches (errors.Is) the error of [Runner.Do] after Skipf,
// for example from [RequirePostfix] on a machine without Postfix.
var ErrSkipped = errors.New("mtalab: skipped")

// Runner is the [T] of a program: Logf writes lines to a writer, Fatalf
// and Skipf end [Runner.Do], and [Runner.Close] runs the cleanups. Fatalf
// and Skipf must be called from the goroutine that runs Do, as
// testing.T's are; the other methods from any.
type Runner struct {
	log    io.Writer
	prefix string

	mu       sync.Mutex
	cleanups []func()
	errs     []error
	failed   bool
}

// NewRunner returns a Runner whose Logf writes each line to log (nil:
// nowhere) after prefix.
func NewRunner(log io.Writer, prefix string) *Runner {
	if log == nil {
		log = io.Discard
	}
	return &Runner{log: log, prefix: prefix}
}

// stop is the panic value with which Fatalf and Skipf end Do.
type stop struct{ err error }

// skipError is the error of a run that called Skipf: its message, which
// matches ErrSkipped.
type skipError struct{ msg string }

func (e *skipError) Error() string        { return e.msg }
func (e *skipError) Is(target error) bool { return target == ErrSkipped }

// Do calls fn and returns what ended it: nil when it returned, the
// message of Fatalf, an error matching [ErrSkipped] after Skipf, or, for
// a panic, an error with the panic's value and stack. It does not run the
// cleanups: Close does, so that the caller may report first.
func (r *Runner) Do(fn func()) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if s, ok := v.(stop); ok {
			err = s.err
			return
		}
		r.setFailed()
		buf := make([]byte, 16<<10)
		buf = buf[:runtime.Stack(buf, false)]
		err = fmt.Errorf("mtalab: internal error: %v\n%s", v, buf)
	}()
	fn()
	return nil
}

// Close runs the registered cleanups, last first, each once; a panic in
// one is reported with Errorf and the others still run. It returns the
// failures reported with Errorf (during the run or the cleanups), joined,
// or nil.
func (r *Runner) Close() error {
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			errs := r.errs
			r.mu.Unlock()
			return errors.Join(errs...)
		}
		f := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		if err := r.Do(f); err != nil {
			r.Errorf("cleanup: %v", err)
		}
	}
}

// Helper implements [T]; it does nothing.
func (r *Runner) Helper() {}

// Logf implements [T].
func (r *Runner) Logf(format string, args ...any) {
	s := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.log, r.prefix+s+"\n")
}

// Errorf implements [T]: the message is logged and kept for Close.
func (r *Runner) Errorf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	r.Logf("%v", err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.errs = append(r.errs, err)
}

// Fatalf implements [T]: the message is logged and ends Do as its error.
func (r *Runner) Fatalf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	r.Logf("%v", err)
	r.setFailed()
	panic(stop{err})
}

// Skipf implements [T]: the message is logged and ends Do with an error
// that matches [ErrSkipped].
func (r *Runner) Skipf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Logf("%s", msg)
	panic(stop{&skipError{msg}})
}

// Failed implements [T].
func (r *Runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *Runner) setFailed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
}

// Cleanup implements [T]: f runs in Close.
func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// TempDir returns a new directory under $TMPDIR, mode 0755 (the MTAs'
// daemons, running as other users, read certificates from it), removed
// by Close. It ends the run if the directory cannot be made.
func (r *Runner) TempDir() string {
	dir, err := os.MkdirTemp("", "tlsgate-lab-")
	if err != nil {
		r.Fatalf("mtalab: %v", err)
	}
	r.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			r.Errorf("mtalab: remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		r.Fatalf("mtalab: %v", err)
	}
	return dir
}
