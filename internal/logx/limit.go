package logx

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// The defaults of LimitOptions.
const (
	// defaultBurst warnings may be logged at once...
	defaultBurst = 20
	// ...and then one every defaultEvery.
	defaultEvery = time.Second
	// defaultRepeat is how long an identical warning is not repeated.
	defaultRepeat = time.Minute
	// defaultReport is how long after the first dropped warning the count
	// of dropped warnings is logged (and then again while they go on).
	defaultReport = 10 * time.Second
)

// maxRepeatKeys bounds the memory of recently logged warnings.
const maxRepeatKeys = 1024

// LimitOptions configure Limit. Zero values select the defaults.
type LimitOptions struct {
	// Name names the limited source in the "log-limit" lines ("socketmap").
	Name string
	// Burst and Every make a token bucket: at most Burst warnings at
	// once (default 20), then one per Every (default 1 s).
	Burst int
	Every time.Duration
	// Repeat: a warning identical to one logged less than Repeat ago
	// (same level, message and attributes, a key included; default 1
	// minute) is dropped; when it is next logged it carries repeated=N.
	Repeat time.Duration
	// Report is how soon the number of dropped warnings is logged
	// (default 10 s).
	Report time.Duration
}

// Limit returns a handler that passes records below slog.LevelWarn to h
// unchanged and rate-limits the others, so that a client who can make
// tlsgate warn (a malformed request, an undecidable key) cannot fill the
// disk: identical warnings are logged once per Repeat, and at most Burst
// warnings at once and then one per Every. Dropped warnings are counted;
// Report after the first one a warning line says how many:
//
//	NOQUEUE: log-limit: source=socketmap dropped=1234 reason="too many warnings; identical ones are logged once a minute, others at most 20 at once and then one per second"
//
// Handlers derived with WithAttrs and WithGroup share the limits.
func Limit(h slog.Handler, opts LimitOptions) slog.Handler {
	if opts.Burst <= 0 {
		opts.Burst = defaultBurst
	}
	if opts.Every <= 0 {
		opts.Every = defaultEvery
	}
	if opts.Repeat <= 0 {
		opts.Repeat = defaultRepeat
	}
	if opts.Report <= 0 {
		opts.Report = defaultReport
	}
	return &limited{next: h, st: &limitState{opts: opts, tokens: float64(opts.Burst), seed: maphash.MakeSeed(), seen: map[uint64]*seenRec{}}}
}

type limited struct {
	next   slog.Handler
	st     *limitState
	prefix string // rendered WithAttrs/WithGroup, part of the repeat key
}

type limitState struct {
	opts    LimitOptions
	mu      sync.Mutex
	tokens  float64
	last    time.Time
	seed    maphash.Seed
	seen    map[uint64]*seenRec
	dropped uint64
	timer   *time.Timer
	report  slog.Handler // where the count goes: the first handler that dropped
}

// seenRec is a warning logged recently.
type seenRec struct {
	at      time.Time
	repeats uint64 // dropped since it was logged
}

func (l *limited) Enabled(ctx context.Context, lvl slog.Level) bool {
	return l.next.Enabled(ctx, lvl)
}

func (l *limited) WithAttrs(as []slog.Attr) slog.Handler {
	return &limited{next: l.next.WithAttrs(as), st: l.st, prefix: l.prefix + Format("", as)}
}

func (l *limited) WithGroup(name string) slog.Handler {
	return &limited{next: l.next.WithGroup(name), st: l.st, prefix: l.prefix + " [" + name + "]"}
}

func (l *limited) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return l.next.Handle(ctx, r)
	}
	var as []slog.Attr
	r.Attrs(func(a slog.Attr) bool { as = append(as, a); return true })
	key := maphash.String(l.st.seed, l.prefix+"\x00"+r.Level.String()+"\x00"+Format(r.Message, as))
	pass, repeats := l.st.admit(key, r.Time, l.next)
	if !pass {
		return nil
	}
	if repeats > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Uint64("repeated", repeats))
	}
	return l.next.Handle(ctx, r)
}

// admit decides about one warning with the given key logged at t (now if
// zero) and returns whether it passes and how often it was dropped as a
// repeat since it was last logged.
func (st *limitState) admit(key uint64, t time.Time, h slog.Handler) (bool, uint64) {
	if t.IsZero() {
		t = time.Now()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	var repeats uint64
	if s, ok := st.seen[key]; ok {
		if t.Sub(s.at) < st.opts.Repeat {
			s.repeats++
			st.dropLocked(h)
			return false, 0
		}
		repeats = s.repeats
	}
	if !st.last.IsZero() {
		st.tokens = min(float64(st.opts.Burst), st.tokens+float64(t.Sub(st.last))/float64(st.opts.Every))
	}
	st.last = t
	if st.tokens < 1 {
		st.dropLocked(h)
		return false, 0
	}
	st.tokens--
	if len(st.seen) >= maxRepeatKeys {
		for k, s := range st.seen {
			if t.Sub(s.at) >= st.opts.Repeat {
				delete(st.seen, k)
			}
		}
		if len(st.seen) >= maxRepeatKeys {
			clear(st.seen)
		}
	}
	st.seen[key] = &seenRec{at: t}
	return true, repeats
}

// dropLocked counts a dropped warning and makes sure the count is
// reported. st.mu must be held.
func (st *limitState) dropLocked(h slog.Handler) {
	st.dropped++
	if st.timer != nil {
		return
	}
	st.report = h
	st.timer = time.AfterFunc(st.opts.Report, st.flush)
}

// flush logs the number of dropped warnings.
func (st *limitState) flush() {
	st.mu.Lock()
	n, h := st.dropped, st.report
	st.dropped, st.timer = 0, nil
	st.mu.Unlock()
	if n == 0 {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelWarn, "log-limit", 0)
	r.AddAttrs(slog.String("source", st.opts.Name), slog.Uint64("dropped", n),
		slog.String("reason", "too many warnings; identical ones are logged once every "+st.opts.Repeat.String()+
			", others at most "+strconv.Itoa(st.opts.Burst)+" at once and then one every "+st.opts.Every.String()))
	h.Handle(context.Background(), r)
}
