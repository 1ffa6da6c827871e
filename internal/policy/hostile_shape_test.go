package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCheckShape: nesting and dotted keys beyond any tlsgate setting are
// refused before the TOML decoder, whose cost grows with their square;
// brackets, braces, dots and quotes inside strings and comments do not
// count.
func TestCheckShape(t *testing.T) {
	deep := func(open, close string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	tests := []struct {
		name string
		in   string
		line int // 0: accepted
	}{
		{name: "example shapes", in: "mta = \"postfix\"\n[[endpoint]]\nhosts = [\"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r\"]\n[endpoint.inbound]\nencryption = true\n"},
		{name: "nesting at the limit", in: "x = " + deep("[", "]", MaxNesting)},
		{name: "nesting over the limit", in: "mta = \"postfix\"\nx = " + deep("[", "]", MaxNesting+1), line: 2},
		{name: "inline tables over the limit", in: "x = " + deep("{a=", "}", 100000), line: 1},
		{name: "dots at the limit", in: strings.Repeat("a.", MaxLineDots) + "a = 1"},
		{name: "dotted key over the limit", in: "\n\n" + strings.Repeat("a.", 100000) + "a = 1", line: 3},
		{name: "table header over the limit", in: "[" + strings.Repeat("a.", MaxLineDots+1) + "a]", line: 1},
		{name: "dots counted per line", in: strings.Repeat(strings.Repeat("a.", MaxLineDots)+"a = 1\n", 100)},
		{name: "brackets in strings", in: `x = "` + strings.Repeat("[{", 100) + `"` + "\ny = '" + strings.Repeat("[{.", 100) + "'"},
		{name: "escaped quote in string", in: `x = "\"` + strings.Repeat("[", 100) + `"`},
		{name: "brackets in multi-line strings", in: "x = \"\"\"\n" + strings.Repeat("[{.\n", 100) + "\"\"\"\ny = '''\n" + strings.Repeat("[{.\n", 100) + "'''"},
		{name: "multi-line string ending in quotes", in: "x = \"\"\"a\"\"\"\"\"\ny = " + deep("[", "]", MaxNesting)},
		{name: "brackets in comments", in: "# " + strings.Repeat("[{.", 100) + "\nx = 1"},
		{name: "quoted keys with dots", in: `"` + strings.Repeat("a.", 100) + `" = 1`},
		{name: "unterminated string", in: "x = \"abc\n" + "y = " + deep("[", "]", MaxNesting+1), line: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkShape("f.toml", []byte(tc.in))
			if tc.line == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) != 1 || le.Problems[0].Line != tc.line || le.Problems[0].File != "f.toml" {
				t.Fatalf("got %v, want one problem at f.toml:%d", err, tc.line)
			}
		})
	}
}

// TestParseDeepNestingIsFast: files that took the decoder hours (100000
// nested inline tables, 400 KB) or minutes (a 100000-part dotted key) are
// refused at once with one problem.
func TestParseDeepNestingIsFast(t *testing.T) {
	for name, body := range map[string]string{
		"inline tables": "x = " + strings.Repeat("{a=", 100000) + "1" + strings.Repeat("}", 100000),
		"arrays":        "x = " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000),
		"dotted key":    strings.Repeat("a.", 100000) + "a = 1",
		"table header":  "[" + strings.Repeat("a.", 100000) + "a]",
	} {
		start := time.Now()
		_, err := Parse("f.toml", []byte("mta = \"postfix\"\n"+body+"\n"))
		var le *LoadError
		if !errors.As(err, &le) || len(le.Problems) != 1 {
			t.Errorf("%s: got %.200v, want one problem", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
}

// TestShapeAcceptsShippedConfigs: every configuration in the repository
// passes the shape check.
func TestShapeAcceptsShippedConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/*/*.toml")
	more, _ := filepath.Glob("../../deploy/*.toml")
	files = append(files, more...)
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkShape(f, data); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// TestLoadOversizedFileCheaply: a 100 MB file is refused from its size,
// without reading it into memory (reading it would cost the daemon some
// 250 MB on each SIGHUP).
func TestLoadOversizedFileCheaply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.toml")
	if err := os.WriteFile(path, []byte("mta = \"postfix\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 100<<20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Load(path)
	runtime.ReadMemStats(&after)
	var le *LoadError
	if !errors.As(err, &le) || len(le.Problems) != 1 || !strings.Contains(le.Problems[0].Msg, "larger than") {
		t.Fatalf("got %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("Load allocated %d bytes to refuse an oversized file", n)
	}
	// A file at the limit is still read (and then judged on its content).
	if err := os.Truncate(path, MaxFileSize); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || strings.Contains(err.Error(), "larger than") {
		t.Fatalf("file at the limit: %.200v", err)
	}
}

// TestLoadFIFODoesNotBlock: a FIFO in place of the configuration file
// (nobody writing to it) is an error at once, not a Load that waits
// forever for a writer (on SIGHUP, in the daemon's signal loop, so that
// SIGTERM went unanswered).
func TestLoadFIFODoesNotBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo.toml")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Load(path)
		done <- err
	}()
	select {
	case err := <-done:
		var le *LoadError
		if !errors.As(err, &le) {
			t.Fatalf("got %v, want a *LoadError", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the stuck open before failing.
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("Load blocked on a FIFO without a writer")
	}
	// A pipe with a writer is still read ("tlsgate check -c /dev/stdin").
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		w.Write([]byte("mta = \"postfix\"\n"))
		w.Close()
	}()
	if p, err := Load(fmt.Sprintf("/proc/self/fd/%d", r.Fd())); err != nil || p.MTA != Postfix {
		t.Fatalf("pipe: %v, %v", p, err)
	}
}

// TestManyUnknownKeysAreFast: a file of 20000 unknown keys (500 KB) took
// tlsgate check, and a SIGHUP reload, 50 s, and 100000 keys some 20
// minutes (placing each key on its line scanned all keys). Now it is
// linear; the first maxUnknownKeys are named, the rest counted.
func TestManyUnknownKeysAreFast(t *testing.T) {
	var b strings.Builder
	b.WriteString("mta = \"postfix\"\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "unknown_key_%d = %d\n", i, i)
	}
	start := time.Now()
	_, err := Parse("f.toml", []byte(b.String()))
	var le *LoadError
	if !errors.As(err, &le) || len(le.Problems) != maxUnknownKeys+1 {
		t.Fatalf("got %d problems, want %d", len(le.Problems), maxUnknownKeys+1)
	}
	if p := le.Problems[0]; p.Line != 2 || !strings.Contains(p.Msg, `"unknown_key_0"`) {
		t.Errorf("first problem %v", p)
	}
	if p := le.Problems[maxUnknownKeys]; !strings.Contains(p.Msg, "and 19900 more unknown keys") {
		t.Errorf("last problem %v", p)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}
