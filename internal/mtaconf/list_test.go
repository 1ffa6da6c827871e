package mtaconf

import (
	"strings"
	"testing"
)

func TestSplitList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{"", nil, false},
		{"a, b  c,,\n\td", []string{"a", "b", "c", "d"}, false},
		{"{ unix:x, default_action=tempfail }, inet:h:1", []string{"{ unix:x, default_action=tempfail }", "inet:h:1"}, false},
		{"check_policy_service { unix:p, { default_action = 451 4.3.5 x } }, permit", []string{"check_policy_service", "{ unix:p, { default_action = 451 4.3.5 x } }", "permit"}, false},
		{"{ a, b", nil, true},
		{"a }", nil, true},
		{"a{b}c d", []string{"a{b}c", "d"}, false},
	} {
		got, err := SplitList(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("SplitList(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("SplitList(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if got := braceFirst("{ unix:x , a=b }"); got != "unix:x" {
		t.Errorf("braceFirst = %q", got)
	}
}

// FuzzSplitList: elements are never empty, never hold a separator outside
// braces, and inserting after any element keeps the others as they were.
func FuzzSplitList(f *testing.F) {
	for _, s := range []string{"a, b", "{ x, y=z }, c", "check_policy_service { u, { a = b c } }", "{{}}", ",, ,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		s = strings.TrimSpace(s)
		elems, spans, err := splitSpans(s)
		if err != nil {
			return
		}
		for i, e := range elems {
			if e == "" || s[spans[i][0]:spans[i][1]] != e {
				t.Fatalf("element %d %q, span %v of %q", i, e, spans[i], s)
			}
			if !strings.Contains(e, "{") && strings.ContainsAny(e, ", \t\n\r") {
				t.Fatalf("element %q holds a separator", e)
			}
		}
		for n := -1; n < len(elems); n++ {
			got, err := SplitList(insertAfter(s, spans, n, "X"))
			if err != nil {
				t.Fatal(err)
			}
			want := append(append(append([]string{}, elems[:n+1]...), "X"), elems[n+1:]...)
			if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
				t.Fatalf("insert after %d in %q: %q, want %q", n, s, got, want)
			}
		}
	})
}

func TestDiff(t *testing.T) {
	old := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
	new := "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\n"
	// As diff -u: changes 6 lines apart share a hunk.
	want := "--- x\n+++ y\n@@ -1,10 +1,11 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n h\n i\n j\n+k\n"
	if got := Diff("x", "y", []byte(old), []byte(new)); got != want {
		t.Errorf("Diff:\n%s\nwant:\n%s", got, want)
	}
	old, new = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n", "1\nX\n3\n4\n5\n6\n7\n8\n9\nY\n"
	want = "--- x\n+++ y\n@@ -1,5 +1,5 @@\n 1\n-2\n+X\n 3\n 4\n 5\n@@ -7,4 +7,4 @@\n 7\n 8\n 9\n-10\n+Y\n"
	if got := Diff("x", "y", []byte(old), []byte(new)); got != want {
		t.Errorf("Diff:\n%s\nwant:\n%s", got, want)
	}
	if got := Diff("x", "y", []byte(old), []byte(old)); got != "" {
		t.Errorf("Diff of equal texts: %q", got)
	}
}
