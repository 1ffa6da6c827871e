package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// bigFile returns text followed by n generated endpoints (each with its
// own names, a verified cn both ways and a /24), large enough for Load to
// compile it in pieces.
func bigFile(text string, n int) string {
	var b strings.Builder
	b.WriteString(text)
	for i := range n {
		fmt.Fprintf(&b, `
[[endpoint]]
name  = "gen-%d"
hosts = ["g%d.example", ".g%d.example", "10.%d.%d.0/24"]   # a comment
  [endpoint.inbound]
  validate_cert = true
  cn            = "mx.g%d.example"
  [endpoint.outbound]
  validate_cert = true
  cn            = "mx.g%d.example"
`, i, i, i, (i>>8)&255, i&255, i, i)
	}
	return b.String()
}

// sameAsParse loads path (in pieces when large) and parses its text whole,
// and requires the same policy, or the same problems.
func sameAsParse(t *testing.T, path string) *Policy {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, lerr := Load(path)
	q, perr := Parse(path, data)
	switch {
	case lerr == nil && perr == nil:
		if err := Same(p, q); err != nil {
			t.Fatalf("Load in pieces and Parse whole differ: %v", err)
		}
	case lerr != nil && perr != nil:
		var a, b *LoadError
		if !errors.As(lerr, &a) || !errors.As(perr, &b) || !reflect.DeepEqual(a.Problems, b.Problems) {
			t.Fatalf("different problems:\nLoad:  %.600v\nParse: %.600v", lerr, perr)
		}
	default:
		t.Fatalf("Load: %.300v\nParse: %.300v", lerr, perr)
	}
	return p
}

// TestSplitSameAsWhole: a large file compiled in pieces is the policy, or
// has the problems, of the same file compiled whole; the cases include
// what must not be cut (a multi-line string or array holding a
// [[endpoint]] line, a settings table among the endpoints, a misspelt
// table) and problems in one piece.
func TestSplitSameAsWhole(t *testing.T) {
	const head = "mta = \"postfix\"\n[certs]\ntrust_anchor_dir = \"/var/lib/tlsgate/ta\"\n"
	const n = 2600
	mid := func(s string) func(string) string {
		return func(big string) string {
			i := strings.Index(big, "\n[[endpoint]]\nname  = \"gen-1300\"")
			return big[:i] + s + big[i:]
		}
	}
	for _, tc := range []struct {
		name string
		edit func(string) string
	}{
		{"plain", func(s string) string { return s }},
		{"multi-line string with a header line", mid("\n[[endpoint]]\nname = \"ml\"\nnotes = \"\"\"\n[[endpoint]]\n[certs]\n\"\"\"\nhosts = [\"ml.example\"]\n  [endpoint.outbound]\n  encryption = true\n")},
		{"multi-line array", mid("\n[[endpoint]]\nname = \"arr\"\nhosts = [\n  \"arr1.example\",\n  \"arr2.example\",\n]\n  [ endpoint.outbound ]\n  encryption = true\n")},
		{"settings table among the endpoints", mid("\n[log]\nlevel = \"debug\"\n")},
		{"misspelt table", mid("\n[[Endpoint]]\nname = \"x\"\n")},
		{"a problem in one piece", mid("\n[[endpoint]]\nname = \"bad\"\nhosts = [\"bad.example\"]\n  [endpoint.outbound]\n  min_bits = 7\n")},
		{"a duplicate across pieces", func(s string) string {
			return strings.Replace(s, "hosts = [\"g2590.example\"", "hosts = [\"g3.example\"", 1)
		}},
		{"unnamed endpoint", mid("\n[[endpoint]]\nhosts = [\"x.example\"]\n  [endpoint.outbound]\n  encryption = true\n")},
		{"syntax error", mid("\n[[endpoint]]\nname = \"x\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tlsgate.toml")
			text := tc.edit(bigFile(head, n))
			if len(text) <= splitAbove {
				t.Fatalf("%d bytes: not large enough to be cut", len(text))
			}
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			sameAsParse(t, path)
		})
	}
}

// TestSplitReload: after one endpoint of a large file changes, a Loader
// compiles only the piece it is in (the others are the same units) and
// the policy equals a whole compile; a line added before it shifts the
// pieces after it, which are compiled again with their new lines.
func TestSplitReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlsgate.toml")
	text := bigFile("mta = \"postfix\"\n", 2600)
	write(t, path, text)
	l := NewLoader(path)
	if _, err := l.Load(); err != nil {
		t.Fatal(err)
	}
	before := l.files[path].units
	if len(before) < 4 {
		t.Fatalf("%d units: the file was not cut", len(before))
	}
	write(t, path, strings.Replace(text, `cn            = "mx.g1700.example"`, `cn            = "mx2.g1700.example"`, 1))
	p, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	after := l.files[path].units
	changed := 0
	for i := range after {
		if after[i] != before[i] {
			changed++
		}
	}
	if changed != 1 || len(after) != len(before) {
		t.Errorf("%d of %d units compiled again, want 1", changed, len(after))
	}
	if d := Diff(p, sameAsParse(t, path)); d.Changed != 0 {
		t.Errorf("diff with a whole compile: %+v", d)
	}
	write(t, path, strings.Replace(text, "\n[[endpoint]]\nname  = \"gen-1700\"", "\n# a new line\n[[endpoint]]\nname  = \"gen-1700\"", 1))
	if _, err := l.Load(); err != nil {
		t.Fatal(err)
	}
	sameAsParse(t, path)
}
