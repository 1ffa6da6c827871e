// Package reload holds the policy in force for tlsgate's long-running
// servers and replaces it on reload: the new configuration (the main file
// and every file it includes) is compiled completely and whatever it
// needs outside the process is readied before it is swapped in
// atomically, so a bad file leaves the old policy in force, all of it,
// and lookups in flight finish on the policy they started with. Only the
// files whose content changed are compiled again (policy.Loader).
package reload

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Holder owns the current policy.
type Holder struct {
	path string
	ld   *policy.Loader
	log  *slog.Logger
	cur  atomic.Pointer[policy.Policy]
	gen  atomic.Uint64
	mu   sync.Mutex // serialises reloads

	// OnReload, if set, is called after every reload attempt with the
	// outcome ("ok" or "failed") and the generation now in force.
	OnReload func(result string, generation uint64)
	// Prepare, if set, runs on a newly compiled policy (next) with the one
	// in force (cur) before anything changes. It refuses next with an
	// error (a setting the running daemon cannot apply, a CA file that can
	// no longer be read), or readies what next needs outside the process
	// (the CA bundle and trust-anchor files, written under temporary
	// names) and returns commit, which the Holder calls just before next
	// is put in force. commit puts all of it in place or, with an error,
	// none: then next is refused and cur stays. Prepare itself leaves
	// nothing behind when it fails; commit may be nil.
	Prepare func(cur, next *policy.Policy) (commit func() error, err error)
}

// loadGCPercent is the garbage collector's target (GOGC) while a
// configuration loads: the load makes much garbage while the policy it
// builds grows, and the default target of 100 lets the heap reach twice
// the policy before the garbage is collected.
const loadGCPercent = 50

// Load runs ld.Load with the garbage collector's target at most
// loadGCPercent, and returns the policy and error it gave.
func Load(ld *policy.Loader) (*policy.Policy, error) {
	old := debug.SetGCPercent(loadGCPercent)
	if old >= 0 && old < loadGCPercent {
		debug.SetGCPercent(old)
	}
	defer debug.SetGCPercent(old)
	return ld.Load()
}

// New loads path; the error lists every problem of its files.
func New(path string, log *slog.Logger) (*Holder, error) {
	ld := policy.NewLoader(path)
	p, err := Load(ld)
	if err != nil {
		return nil, err
	}
	return NewFrom(ld, p, log), nil
}

// NewFrom holds p, just loaded by ld, as generation 1; reloads go on with
// ld, which compiles again only the files that changed since.
func NewFrom(ld *policy.Loader, p *policy.Policy, log *slog.Logger) *Holder {
	h := &Holder{path: p.File, ld: ld, log: log}
	h.cur.Store(p)
	h.gen.Store(1)
	releaseMemory()
	return h
}

// NewWith holds p, loaded from path by other means, as generation 1; the
// first reload compiles every file.
func NewWith(path string, p *policy.Policy, log *slog.Logger) *Holder {
	h := NewFrom(policy.NewLoader(path), p, log)
	h.path = path
	return h
}

// releaseMemory returns what compiling a policy left behind to the
// operating system: a 100k-endpoint file makes hundreds of MB of garbage
// that the runtime would otherwise keep mapped for minutes. It runs in the
// background, so that a reload is in force (and logged) without waiting
// for the full collection it takes.
func releaseMemory() { go debug.FreeOSMemory() }

// Policy returns the policy in force. It never returns nil after New.
func (h *Holder) Policy() *policy.Policy { return h.cur.Load() }

// Generation counts successful loads, starting at 1.
func (h *Holder) Generation() uint64 { return h.gen.Load() }

// Reload re-reads the configuration. On success the new policy replaces
// the old one atomically and the log line says what changed and how long
// it took; on failure the old one stays in force and every problem is
// logged.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	t0 := time.Now()
	cur := h.cur.Load()
	p, err := Load(h.ld)
	var commit func() error
	if err == nil && h.Prepare != nil {
		commit, err = h.Prepare(cur, p)
	}
	if err == nil && commit != nil {
		err = commit()
	}
	if err != nil {
		var le *policy.LoadError
		if h.log != nil {
			if errors.As(err, &le) {
				for _, pr := range le.Problems {
					h.log.Error("reload-problem", "file", pr.File, "line", pr.Line, "problem", pr.Msg)
				}
			} else {
				h.log.Error("reload-problem", "file", h.path, "problem", err.Error())
			}
			h.log.Error("reload", "result", "failed", "file", h.path, "generation", h.gen.Load(), "reason", "keeping the previous policy")
		}
		if h.OnReload != nil {
			h.OnReload("failed", h.gen.Load())
		}
		return fmt.Errorf("reload %s: %w", h.path, err)
	}
	h.cur.Store(p)
	g := h.gen.Add(1)
	took := time.Since(t0)
	releaseMemory()
	if h.log != nil {
		d, st := policy.Diff(cur, p), h.ld.Stats()
		args := []any{"result", "ok", "file", h.path, "generation", g, "endpoints", len(p.Endpoints),
			"files", d.Files, "files_changed", d.FilesChanged, "compiled", st.Compiled,
			"added", d.Added, "changed", d.Changed, "removed", d.Removed, "took", took.Round(time.Microsecond).String()}
		if st.Rereads > 0 {
			// A file was being written: it was read again until whole.
			args = append(args, "rereads", st.Rereads)
		}
		h.log.Info("reload", args...)
	}
	if h.OnReload != nil {
		h.OnReload("ok", g)
	}
	return nil
}
