package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// ErrSkipped is returned by RunTB when the function called Skip (for
// example mtalab.RequirePostfix on a machine without Postfix).
var ErrSkipped = errors.New("bench: skipped")

// labTB lets the benchmark use package mtalab, whose helpers take a
// testing.TB, outside of "go test". It implements the methods mtalab and
// testpki call; the embedded nil testing.TB supplies the interface's private
// method, and any other method panics (which RunTB does not recover).
type labTB struct {
	testing.TB
	name string
	log  io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  bool
	last     string
	ctx      context.Context
	cancel   context.CancelFunc
}

// tbAbort is the panic value of Fatal and Skip, recovered by RunTB.
type tbAbort struct{ skip bool }

// RunTB calls fn with a testing.TB whose Fatal and Skip end fn, whose Log
// writes to log, and whose Cleanup functions run when fn returns (last
// registered first). It returns ErrSkipped (wrapped) after Skip, an error
// after Fatal or Error, else nil.
func RunTB(name string, log io.Writer, fn func(t testing.TB)) (err error) {
	t := &labTB{name: name, log: log}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	defer func() {
		t.cancel()
		t.mu.Lock()
		cs := t.cleanups
		t.cleanups = nil
		t.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i]()
		}
		if err == nil && t.Failed() {
			err = fmt.Errorf("bench: %s failed (see the log)", name)
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			a, ok := p.(tbAbort)
			if !ok {
				panic(p)
			}
			if a.skip {
				err = fmt.Errorf("%w: %s", ErrSkipped, t.lastMsg())
			} else {
				err = fmt.Errorf("bench: %s: %s", name, t.lastMsg())
			}
		}
	}()
	fn(t)
	return nil
}

func (t *labTB) lastMsg() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

func (t *labTB) logLine(s string) {
	t.mu.Lock()
	t.last = s
	t.mu.Unlock()
	fmt.Fprintf(t.log, "    %s: %s\n", t.name, s)
}

func (t *labTB) Helper()                    {}
func (t *labTB) Name() string               { return t.name }
func (t *labTB) Context() context.Context   { return t.ctx }
func (t *labTB) Log(args ...any)            { t.logLine(fmt.Sprint(args...)) }
func (t *labTB) Logf(f string, args ...any) { t.logLine(fmt.Sprintf(f, args...)) }
func (t *labTB) Fail()                      { t.mu.Lock(); t.failed = true; t.mu.Unlock() }
func (t *labTB) FailNow()                   { t.Fail(); panic(tbAbort{}) }
func (t *labTB) Failed() bool               { t.mu.Lock(); defer t.mu.Unlock(); return t.failed }
func (t *labTB) Error(args ...any)          { t.Log(args...); t.Fail() }
func (t *labTB) Errorf(f string, a ...any)  { t.Logf(f, a...); t.Fail() }
func (t *labTB) Fatal(args ...any)          { t.Log(args...); t.FailNow() }
func (t *labTB) Fatalf(f string, a ...any)  { t.Logf(f, a...); t.FailNow() }
func (t *labTB) SkipNow()                   { t.mu.Lock(); t.skipped = true; t.mu.Unlock(); panic(tbAbort{skip: true}) }
func (t *labTB) Skip(args ...any)           { t.Log(args...); t.SkipNow() }
func (t *labTB) Skipf(f string, a ...any)   { t.Logf(f, a...); t.SkipNow() }
func (t *labTB) Skipped() bool              { t.mu.Lock(); defer t.mu.Unlock(); return t.skipped }

func (t *labTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *labTB) TempDir() string {
	dir, err := os.MkdirTemp("", "tlsgate-bench-tb-")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (t *labTB) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	os.Setenv(key, value)
	t.Cleanup(func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	})
}
