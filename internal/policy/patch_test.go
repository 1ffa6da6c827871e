package policy

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPatchRandomChurn: a Loader follows 300 random changes to a set of
// included files: an endpoint's requirements changed, an endpoint added
// or taken away, a file added, removed or renamed, a host moved to
// another file (a clash for a while), an exception across files. After
// each, its result is the result of a full load: the same policy
// (policy.Same, index included), or a failure when a full load fails.
// Most loads must be patched from the policy before, or the test proves
// nothing about patch.
func TestPatchRandomChurn(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	dir := t.TempDir()
	main := filepath.Join(dir, "tlsgate.toml")
	write(t, main, "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n"+ep("top", ".top.example"))
	type epSpec struct {
		name  string
		hosts []string
		bits  int    // min_bits outbound: 0 or 128
		exc   string // exception_to, if any
	}
	files := map[string][]*epSpec{}
	n := 0
	newEp := func() *epSpec {
		n++
		e := &epSpec{name: fmt.Sprintf("e%d", n), hosts: []string{fmt.Sprintf("h%d.example", n)}}
		if n%5 == 0 {
			e.hosts = append(e.hosts, fmt.Sprintf("mx%d.top.example", n))
		}
		return e
	}
	render := func(eps []*epSpec) string {
		var b strings.Builder
		for _, e := range eps {
			fmt.Fprintf(&b, "[[endpoint]]\nname = %q\nhosts = [%s]\n", e.name, quoteAll(e.hosts))
			if e.exc != "" {
				fmt.Fprintf(&b, "exception_to = %q\nreason = \"test\"\nexpires = 2030-01-01\n", e.exc)
			}
			b.WriteString("  [endpoint.outbound]\n  encryption = true\n")
			if e.bits > 0 {
				fmt.Fprintf(&b, "  min_bits = %d\n", e.bits)
			}
		}
		return b.String()
	}
	save := func(name string) {
		path := filepath.Join(dir, "conf.d", name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		write(t, path, render(files[name]))
	}
	for f := range 8 {
		name := fmt.Sprintf("f%02d.toml", f)
		for range 5 {
			files[name] = append(files[name], newEp())
		}
		save(name)
	}
	pick := func() string {
		var names []string
		for name := range files {
			names = append(names, name)
		}
		return names[r.IntN(len(names))]
	}
	l := NewLoader(main)
	loads, fails := 0, 0
	for step := range 300 {
		f := pick()
		eps := files[f]
		switch op := r.IntN(9); {
		case op <= 2 && len(eps) > 0: // requirements changed
			e := eps[r.IntN(len(eps))]
			e.bits = 128 - e.bits
		case op == 3:
			files[f] = append(eps, newEp())
		case op == 4 && len(eps) > 1:
			k := r.IntN(len(eps))
			files[f] = append(eps[:k:k], eps[k+1:]...)
		case op == 5 && len(files) > 2:
			delete(files, f)
			os.Remove(filepath.Join(dir, "conf.d", f))
			continue
		case op == 6:
			g := fmt.Sprintf("f%02d.toml", 10+r.IntN(30))
			if _, ok := files[g]; !ok {
				files[g] = files[f]
				delete(files, f)
				os.Rename(filepath.Join(dir, "conf.d", f), filepath.Join(dir, "conf.d", g))
				f = g
			}
		case op == 7 && len(eps) > 0: // a host moved in from another file: a clash until it leaves
			g := pick()
			if len(files[g]) > 0 {
				e := eps[r.IntN(len(eps))]
				e.hosts = append(e.hosts[:1:1], files[g][0].hosts[0])
			}
		case op == 8 && len(eps) > 0: // an exception to top, or none
			e := eps[r.IntN(len(eps))]
			if e.exc == "" && len(e.hosts) > 1 && strings.HasSuffix(e.hosts[1], ".top.example") {
				e.exc, e.bits = "top", 0
			} else {
				e.exc = ""
			}
		}
		if len(files[f]) > 0 {
			// A host moved from another file leaves again now and then.
			if r.IntN(3) == 0 {
				for _, e := range files[f] {
					e.hosts = e.hosts[:1]
					if e.exc != "" {
						e.exc = ""
					}
				}
			}
			save(f)
		}
		p, err := l.Load()
		full, ferr := Load(main)
		loads++
		switch {
		case err != nil && ferr != nil:
			fails++
		case err != nil || ferr != nil:
			t.Fatalf("step %d: incremental %v, full %v", step, err, ferr)
		default:
			if err := Same(p, full); err != nil {
				t.Fatalf("step %d: incremental and full loads differ: %v", step, err)
			}
		}
	}
	t.Logf("%d loads, %d failed (as the full load), %d patched", loads, fails, l.patched)
	if l.patched < loads/3 || fails == 0 {
		t.Errorf("%d of %d loads patched, %d failed: the changes did not exercise patch and its fallbacks", l.patched, loads, fails)
	}
}
