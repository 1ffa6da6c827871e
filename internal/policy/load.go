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
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	return assemble([]*unit{u})
}

// Loader loads a configuration again and again, as the daemon does on
// every reload: it keeps what it compiled of each file, by path and
// content (SHA-256, not modification times), so that a Load compiles
// again only the files whose content changed, in parallel, and assembles
// the policy from those and the files it already had. The result is the
// policy Load would give. A Loader is for one goroutine at a time.
type Loader struct {
	path  string
	units map[string]*unit // by path, as the last Load saw them
	stats LoadStats
}

// LoadStats says what a Load read and compiled.
type LoadStats struct {
	// Files is how many files were read: the main file and the files it
	// includes.
	Files int
	// Compiled is how many of them were compiled: new files, files whose
	// content changed, and every included file when the main file's
	// settings they depend on changed (mta, postfix_version,
	// trust_anchor_dir, delegation_listen).
	Compiled int
	// Rereads is how many times a file was read again because it
	// changed while it was read (it was being written).
	Rereads int
	// Took is how long the Load took.
	Took time.Duration
}

// NewLoader returns a Loader for the configuration file at path.
func NewLoader(path string) *Loader { return &Loader{path: path} }

// Stats says what the last Load read and compiled.
func (l *Loader) Stats() LoadStats { return l.stats }

// Load reads the main file and every file it includes and returns the
// policy they make, compiling only what changed since the last Load.
func (l *Loader) Load() (*Policy, error) {
	t0 := time.Now()
	defer func() { l.stats.Took = time.Since(t0) }()
	l.stats = LoadStats{Files: 1}
	data, pr := readFile(l.path, l.units[l.path])
	if pr != nil {
		return nil, &LoadError{Problems: []*Problem{pr}}
	}
	l.stats.Rereads = data.rereads
	main := l.units[l.path]
	if main == nil || !main.main || main.sum != data.sum {
		main = compileMain(l.path, data, false)
		l.stats.Compiled++
	}
	main.state = data.state
	data = content{}
	paths, problems := main.expand()
	units := make([]*unit, 1+len(paths))
	units[0] = main
	readProblems := make([]*Problem, len(paths))
	ctx := main.ctx
	var compiled, rereads atomic.Int32
	parallel(len(paths), func(i int) {
		path := paths[i]
		data, pr := readFile(path, l.units[path])
		if pr != nil {
			readProblems[i] = pr
			return
		}
		rereads.Add(int32(data.rereads))
		if u := l.units[path]; u != nil && !u.main && u.sum == data.sum && u.ctx == ctx {
			u.state = data.state
			units[i+1] = u
			return
		}
		units[i+1] = compileIncluded(path, l.path, data, ctx)
		compiled.Add(1)
	})
	l.stats.Files += len(paths)
	l.stats.Compiled += int(compiled.Load())
	l.stats.Rereads += int(rereads.Load())
	for _, pr := range readProblems {
		if pr != nil {
			problems = append(problems, pr)
		}
	}
	next := make(map[string]*unit, len(units))
	for _, u := range units {
		if u != nil {
			next[u.file] = u
		}
	}
	l.units = next
	if len(problems) > 0 {
		// A file that cannot be read (or a pattern that cannot be
		// expanded) stops the load: the policy would lack endpoints.
		for _, u := range units {
			if u != nil {
				problems = append(problems, u.problems...)
			}
		}
		return nil, &LoadError{Problems: problems}
	}
	return assemble(units)
}

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
	out := make([]string, len(p.units))
	for i, u := range p.units {
		out[i] = u.file
	}
	return out
}
