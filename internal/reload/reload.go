// Package reload holds the policy in force for tlsgate's long-running
// servers and replaces it on reload: the new file is compiled completely
// and whatever it needs outside the process is readied before it is
// swapped in atomically, so a bad file leaves the old policy in force,
// and lookups in flight finish on the policy they started with.
package reload

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Holder owns the current policy.
type Holder struct {
	path string
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

// New loads path; the error lists every problem of the file.
func New(path string, log *slog.Logger) (*Holder, error) {
	p, err := policy.Load(path)
	if err != nil {
		return nil, err
	}
	return NewWith(path, p, log), nil
}

// NewWith holds p, already loaded from path, as generation 1.
func NewWith(path string, p *policy.Policy, log *slog.Logger) *Holder {
	h := &Holder{path: path, log: log}
	h.cur.Store(p)
	h.gen.Store(1)
	releaseMemory()
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

// Reload re-reads the file. On success the new policy replaces the old one
// atomically; on failure the old one stays in force and every problem is
// logged.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, err := policy.Load(h.path)
	var commit func() error
	if err == nil && h.Prepare != nil {
		commit, err = h.Prepare(h.cur.Load(), p)
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
	releaseMemory()
	if h.log != nil {
		h.log.Info("reload", "result", "ok", "file", h.path, "generation", g, "endpoints", len(p.Endpoints))
	}
	if h.OnReload != nil {
		h.OnReload("ok", g)
	}
	return nil
}
