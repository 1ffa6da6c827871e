package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Load reads and compiles the configuration file at path and the files
// its include patterns name. On failure the error is a *LoadError listing
// every problem with its file and line. Every command that reads the
// configuration (serve, check, query, mta-config, posture, whatif) loads
// it through here, so they all see the same policy.
func Load(path string) (*Policy, error) { return NewLoader(path).Load() }

// Parse compiles configuration text on its own; name is used in error
// messages. It reads no files: a text with include is refused (Load reads
// the included files).
func Parse(name string, data []byte) (*Policy, error) {
	u := compileMain(name, content{data: data, sum: sha256.Sum256(data)}, true)
	var ids idAlloc
	ids.give(u)
	p, _, err := assemble([]*unit{u})
	return p, err
}

// Loader loads a configuration again and again, as the daemon does on
// every reload: it keeps what it compiled of each file, by path and
// content (SHA-256, not modification times), so that a Load compiles
// again only the files whose content changed, in parallel, and assembles
// the policy from those and the files it already had. The result is the
// policy Load would give. A Loader is for one goroutine at a time.
type Loader struct {
	path  string
	files map[string]*fileRec // by path, as the last Load saw them
	last  *assembly           // the last policy assembled
	ids   idAlloc
	live  map[*unit]bool // the units of files and last, which hold their IDs
	stats LoadStats
	// patched counts the loads whose policy was patched from the last
	// one (for the tests).
	patched int
}

// idAlloc gives endpoints IDs (Policy.byID): the smallest free ones, so
// that IDs stay below about twice the endpoints in use.
type idAlloc struct {
	next int32
	free []int32 // given back, taken last in first out
}

// give gives u's endpoints IDs, if it has none yet.
func (a *idAlloc) give(u *unit) {
	if u.ids != nil || len(u.eps) == 0 {
		return
	}
	u.ids = make([]int32, len(u.eps))
	for k := range u.ids {
		if n := len(a.free); n > 0 {
			u.ids[k], a.free = a.free[n-1], a.free[:n-1]
			continue
		}
		u.ids[k] = a.next
		a.next++
	}
}

// account gives the IDs of the units no longer kept (in files or last)
// back, and new units IDs.
func (l *Loader) account() {
	live := map[*unit]bool{}
	for _, rec := range l.files {
		for _, u := range rec.units {
			live[u] = true
		}
	}
	if l.last != nil {
		for _, u := range l.last.p.units {
			live[u] = true
		}
	}
	for u := range l.live {
		if !live[u] {
			l.ids.free = append(l.ids.free, u.ids...)
		}
	}
	l.live = live
}

// fileRec is a file as a Loader last read it: its content and state, and
// the units it was compiled into (one, or a head and pieces; see split).
type fileRec struct {
	sum   [sha256.Size]byte
	state fileState
	ctx   unitCtx
	units []*unit
}

// LoadStats says what a Load read and compiled.
type LoadStats struct {
	// Files is how many files were read: the main file and the files it
	// includes.
	Files int
	// Compiled is how many of them were compiled, in full or in part:
	// new files, files whose content changed (of a large file, only the
	// pieces that changed), and every included file when the main file's
	// settings they depend on changed (mta, postfix_version,
	// trust_anchor_dir, delegation_listen).
	Compiled int
	// Rereads is how many times a file was read again because it
	// changed while it was read (it was being written).
	Rereads int
}

// NewLoader returns a Loader for the configuration file at path.
func NewLoader(path string) *Loader { return &Loader{path: path} }

// Stats says what the last Load read and compiled.
func (l *Loader) Stats() LoadStats { return l.stats }

// Load reads the main file and every file it includes and returns the
// policy they make, compiling only what changed since the last Load.
func (l *Loader) Load() (*Policy, error) {
	l.stats = LoadStats{Files: 1}
	next := make(map[string]*fileRec, len(l.files))
	data, pr := readFile(l.path, l.files[l.path])
	if pr != nil {
		return nil, &LoadError{Problems: []*Problem{pr}}
	}
	l.stats.Rereads = data.rereads
	mainRec, compiled := l.file(l.path, data, true, unitCtx{})
	data.release()
	if compiled {
		l.stats.Compiled++
	}
	next[l.path] = mainRec
	head := mainRec.units[0]
	paths, problems := head.expand()
	recs := make([]*fileRec, len(paths))
	readProblems := make([]*Problem, len(paths))
	var nCompiled, rereads atomic.Int32
	parallel(len(paths), func(i int) {
		data, pr := readFile(paths[i], l.files[paths[i]])
		if pr != nil {
			readProblems[i] = pr
			return
		}
		rereads.Add(int32(data.rereads))
		rec, compiled := l.file(paths[i], data, false, head.ctx)
		data.release()
		if compiled {
			nCompiled.Add(1)
		}
		recs[i] = rec
	})
	l.stats.Files += len(paths)
	l.stats.Compiled += int(nCompiled.Load())
	l.stats.Rereads += int(rereads.Load())
	units := slices.Clone(mainRec.units)
	for i, rec := range recs {
		if pr := readProblems[i]; pr != nil {
			problems = append(problems, pr)
			continue
		}
		next[paths[i]] = rec
		units = append(units, rec.units...)
	}
	l.files = next
	for _, u := range units {
		l.ids.give(u)
	}
	defer l.account()
	if len(problems) > 0 {
		// A file that cannot be read (or a pattern that cannot be
		// expanded) stops the load: the policy would lack endpoints.
		for _, u := range units {
			problems = append(problems, u.problems...)
		}
		return nil, &LoadError{Problems: problems}
	}
	if l.last != nil {
		if p, a, ok := patch(l.last, units); ok {
			l.last = a
			l.patched++
			return p, nil
		}
	}
	p, a, err := assemble(units)
	if err != nil {
		return nil, err
	}
	l.last = a
	return p, nil
}

// file returns the units of a file just read: those of the last Load if
// the file and the settings it was compiled on are the same, else the
// file compiled again (of a large file, only the pieces that changed),
// and whether anything was compiled. ctx is the main file's, for an
// included file.
func (l *Loader) file(path string, data content, main bool, ctx unitCtx) (*fileRec, bool) {
	prev := l.files[path]
	if prev != nil && prev.sum == data.sum && (main || prev.ctx == ctx) {
		return &fileRec{sum: data.sum, state: data.state, ctx: ctx, units: prev.units}, false
	}
	rec := &fileRec{sum: data.sum, state: data.state, ctx: ctx}
	whole := func() (*fileRec, bool) {
		if main {
			rec.units = []*unit{compileMain(path, data, false)}
		} else {
			rec.units = []*unit{compileIncluded(path, l.path, data, ctx)}
		}
		return rec, true
	}
	if len(data.data) <= splitAbove {
		return whole()
	}
	head, pieces, ok := split(data.data, main)
	if !ok {
		return whole()
	}
	old := map[string]*unit{}
	if prev != nil {
		for _, u := range prev.units {
			old[u.key] = u
		}
	}
	var units []*unit
	if main {
		h := content{data: head, sum: sha256.Sum256(head)}
		hu := old[path]
		if hu == nil || !hu.main || hu.sum != h.sum {
			hu = compileMain(path, h, false)
		}
		if len(hu.problems) > 0 {
			return whole()
		}
		ctx = hu.ctx
		units = append(units, hu)
	}
	out := make([]*unit, len(pieces))
	parallel(len(pieces), func(i int) {
		pc := pieces[i]
		sum := sha256.Sum256(pc.data)
		key := pieceKey(path, pc.line)
		if u := old[key]; u != nil && u.sum == sum && u.ctx == ctx {
			out[i] = u
			return
		}
		out[i] = compilePiece(path, l.path, key, content{data: pc.data, sum: sum}, pc.line, ctx)
	})
	for _, u := range out {
		if len(u.problems) > 0 {
			// The whole file says its problems as a whole decoding does.
			return whole()
		}
	}
	rec.ctx = ctx
	rec.units = append(units, out...)
	return rec, true
}

// pieceKey names the piece of path that starts on line.
func pieceKey(path string, line int) string { return path + "#" + strconv.Itoa(line) }

// parallel calls f(0) ... f(n-1), on as many goroutines as there are
// CPUs to run them.
func parallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// expand returns the files the main file includes, in order: pattern by
// pattern, each pattern's matches in lexical order. A pattern may match
// nothing. A file is included once, and the main file never; names
// starting with a dot (editors' and tools' temporary files) are matched
// only by a pattern whose last element starts with a dot too, as in the
// shell. The problems are those of patterns that cannot be expanded.
func (u *unit) expand() ([]string, []*Problem) {
	var paths []string
	var problems []*Problem
	seen := map[string]bool{filepath.Clean(u.file): true}
	for _, inc := range u.includes {
		pat := inc.pattern
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(filepath.Dir(u.file), pat)
		}
		// Glob says nothing of a directory it cannot read: it would
		// match nothing, and the files in it would be silently left
		// out.
		if dir := filepath.Dir(pat); !hasMeta(dir) {
			if _, err := os.ReadDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				problems = append(problems, &Problem{File: u.file, Line: inc.line, Msg: fmt.Sprintf("include = [%q]: cannot read the directory: %v", inc.pattern, errors.Unwrap(err))})
				continue
			}
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			problems = append(problems, &Problem{File: u.file, Line: inc.line, Msg: fmt.Sprintf("include = [%q]: %v", inc.pattern, err)})
			continue
		}
		slices.Sort(matches)
		dotted := strings.HasPrefix(filepath.Base(pat), ".")
		for _, m := range matches {
			m = filepath.Clean(m)
			if seen[m] || (!dotted && strings.HasPrefix(filepath.Base(m), ".")) {
				continue
			}
			seen[m] = true
			paths = append(paths, m)
		}
	}
	return paths, problems
}

// hasMeta reports whether path has a glob's special characters.
func hasMeta(path string) bool { return strings.ContainsAny(path, `*?[\`) }

// Files returns the files the policy was compiled from: the main file,
// then each included file in the order their endpoints appear.
func (p *Policy) Files() []string {
	var out []string
	for _, u := range p.units {
		if len(out) == 0 || out[len(out)-1] != u.file {
			out = append(out, u.file)
		}
	}
	return out
}
