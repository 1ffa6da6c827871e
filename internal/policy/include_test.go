package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tree writes files (path relative to a new directory → content) and
// returns the directory.
func tree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ep is a valid endpoint table with outbound encryption.
func ep(name string, hosts ...string) string {
	return fmt.Sprintf("[[endpoint]]\nname = %q\nhosts = [%s]\n  [endpoint.outbound]\n  encryption = true\n", name, quoteAll(hosts))
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func names(p *Policy) []string {
	var out []string
	for _, ep := range p.Endpoints {
		out = append(out, ep.Name)
	}
	return out
}

// problems loads path and returns its problems as "FILE:LINE: msg" with
// dir cut from the paths.
func problems(t *testing.T, dir, path string) []string {
	t.Helper()
	_, err := Load(path)
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load = %v, want a *LoadError", err)
	}
	var out []string
	for _, p := range le.Problems {
		out = append(out, strings.ReplaceAll(p.Error(), dir+"/", ""))
	}
	return out
}

func wantProblem(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

// TestIncludeOrder: included files come after the main file, pattern by
// pattern, each pattern's matches in lexical order; a file matched twice,
// and the main file itself, are read once; names starting with a dot are
// left to patterns that ask for them; a pattern matching nothing is fine.
// Relative patterns are relative to the main file's directory.
func TestIncludeOrder(t *testing.T) {
	dir := tree(t, map[string]string{
		"tlsgate.toml": `mta = "postfix"
include = ["conf.d/*.toml", "extra/*.toml", "conf.d/b.toml", "nothing/*.toml", "*.toml", "conf.d/.*.toml"]
` + ep("main", "main.example"),
		"conf.d/b.toml":          ep("b", "b.example"),
		"conf.d/a.toml":          ep("a", "a.example") + ep("a2", "a2.example"),
		"conf.d/.hidden.toml":    ep("hidden", "hidden.example"),
		"conf.d/b.toml~":         "not toml at all [",
		"extra/z.toml":           ep("z", "z.example"),
		"conf.d/c.toml.dpkg-new": "not toml at all [",
	})
	p, err := Load(filepath.Join(dir, "tlsgate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(p), []string{"main", "a", "a2", "b", "z", "hidden"}; !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	var files []string
	for _, f := range p.Files() {
		files = append(files, strings.TrimPrefix(f, dir+"/"))
	}
	if want := []string{"tlsgate.toml", "conf.d/a.toml", "conf.d/b.toml", "extra/z.toml", "conf.d/.hidden.toml"}; !slices.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
	for _, ep := range p.Endpoints {
		if ep.Name == "a2" && (ep.File != filepath.Join(dir, "conf.d/a.toml") || ep.Line != 6) {
			t.Errorf("a2 at %s:%d", ep.File, ep.Line)
		}
	}
	if a, _ := now(p).Outbound("z.example"); !a.Found || a.Endpoint.Name != "z" {
		t.Errorf("z.example: %+v", a)
	}
}

// TestIncludeErrorsPerFile: every problem names the file it is in, with
// its line; an included file holds [[endpoint]] tables only; problems of
// several files are all reported.
func TestIncludeErrorsPerFile(t *testing.T) {
	dir := tree(t, map[string]string{
		"tlsgate.toml": "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n" + ep("main", "main.example"),
		"conf.d/a.toml": ep("a", "a.example") + `
[certs]
ca_store = "/etc/tlsgate/ca"
`,
		"conf.d/b.toml": "mta = \"sendmail\"\ninclude = [\"x\"]\n[[endpoint]]\nname = \"b\"\nhosts = [\"b.example\"]\n  [endpoint.outbound]\n  encryption = true\n  min_bits = 512\n",
		"conf.d/c.toml": "[[endpoint]]\nname = \"c\"\nhosts = [\"c.example\"]\nbogus = 1\n  [endpoint.outbound]\n  encryption = true\n",
		"conf.d/d.toml": "[[endpoint]\n",
	})
	got := problems(t, dir, filepath.Join(dir, "tlsgate.toml"))
	wantProblem(t, got,
		"conf.d/a.toml:7: [certs]: an included file holds [[endpoint]] tables only; settings and include belong in the main file tlsgate.toml",
		"conf.d/b.toml:1: key mta: an included file holds [[endpoint]] tables only",
		"conf.d/b.toml:2: key include: an included file holds [[endpoint]] tables only",
		"conf.d/b.toml:8: endpoint \"b\" outbound: min_bits = 512 is out of range",
		"conf.d/c.toml:4: unknown key \"endpoint.bogus\"",
		"conf.d/d.toml:2: expected end of table array name delimiter",
	)
	if len(got) != 6 {
		t.Errorf("%d problems, want 6:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// TestIncludeDuplicatesAcrossFiles: a host pattern or an endpoint name
// used in two files is refused, naming both files and lines; nesting
// across files names the other file too.
func TestIncludeDuplicatesAcrossFiles(t *testing.T) {
	dir := tree(t, map[string]string{
		"tlsgate.toml":  "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n",
		"conf.d/a.toml": "\n" + ep("a", "a.example", "shared.example") + ep("top", ".top.example"),
		"conf.d/b.toml": ep("b", "b.example", "SHARED.example.") + ep("a", "other.example"),
		"conf.d/c.toml": "[[endpoint]]\nname = \"weak\"\nhosts = [\"mx.top.example\"]\nmode = \"monitor\"\n  [endpoint.outbound]\n  encryption = true\n",
	})
	got := problems(t, dir, filepath.Join(dir, "tlsgate.toml"))
	wantProblem(t, got,
		`conf.d/b.toml:3: host "SHARED.example." of endpoint "b" is already listed by endpoint "a" for outbound (as "shared.example"; there as "shared.example" on line 4 of conf.d/a.toml)`,
		`conf.d/b.toml:7: endpoint name "a" is already used by the endpoint on line 2 of conf.d/a.toml`,
		`conf.d/c.toml:3: endpoint "weak" is nested in endpoint "top" (line 7 of conf.d/a.toml) for outbound`,
	)
	if len(got) != 3 {
		t.Errorf("%d problems, want 3:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// TestIncludeUnreadable: a file a pattern matches must be readable (not a
// directory or a dangling link); a pattern
// that is not a valid glob is refused at its line; a directory that
// cannot be listed is refused, not taken as matching nothing. Parse, which
// reads no files, refuses include.
func TestIncludeUnreadable(t *testing.T) {
	dir := tree(t, map[string]string{
		"tlsgate.toml":  "mta = \"postfix\"\ninclude = [\n  \"conf.d/*.toml\",\n  \"[\",\n]\n",
		"conf.d/a.toml": ep("a", "a.example"),
	})
	os.Mkdir(filepath.Join(dir, "conf.d/dir.toml"), 0o755)
	os.Symlink("gone.toml", filepath.Join(dir, "conf.d/dangling.toml"))
	got := problems(t, dir, filepath.Join(dir, "tlsgate.toml"))
	wantProblem(t, got,
		`tlsgate.toml:4: include = ["["]: syntax error in pattern`,
		`conf.d/dangling.toml: cannot read: no such file or directory`,
		`conf.d/dir.toml: cannot read:`,
	)
	if _, err := Parse("t.toml", []byte("mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n")); err == nil || !strings.Contains(err.Error(), "t.toml:2: include = [\"conf.d/*.toml\"]: included files are read by Load") {
		t.Errorf("Parse with include: %v", err)
	}
}

// TestIncludeRelativeToMain: a relative pattern is taken from the main
// file's directory, not the working directory; an absolute one as it is.
func TestIncludeRelativeToMain(t *testing.T) {
	other := tree(t, map[string]string{"abs.toml": ep("abs", "abs.example")})
	dir := tree(t, map[string]string{
		"etc/tlsgate.toml":    "mta = \"postfix\"\ninclude = [\"partners/*.toml\", \"" + other + "/*.toml\"]\n",
		"etc/partners/p.toml": ep("p", "p.example"),
		"partners/wrong.toml": ep("wrong", "wrong.example"),
	})
	t.Chdir(dir)
	p, err := Load("etc/tlsgate.toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(p); !slices.Equal(got, []string{"p", "abs"}) {
		t.Errorf("endpoints %v", got)
	}
}

// TestIncludeWatchProbeEndpoints: [watch] probe_endpoints may name
// endpoints of included files (spelt as they are there); a name no file
// has, or an endpoint without [endpoint.outbound], is a problem at the
// line of probe_endpoints in the main file; a reload through a Loader
// that removes the named endpoint's file refuses the policy, and one that
// patches another file keeps the resolved names.
func TestIncludeWatchProbeEndpoints(t *testing.T) {
	head := "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n[watch]\nprobe_interval = \"1d\"\nprobe_endpoints = [%s]\n"
	dir := tree(t, map[string]string{
		"tlsgate.toml":   fmt.Sprintf(head, `"Partner-B"`) + ep("a", "a.example"),
		"conf.d/b.toml":  ep("partner-b", "b.example"),
		"conf.d/in.toml": "[[endpoint]]\nname = \"inbound-only\"\nhosts = [\"in.example\"]\n  [endpoint.inbound]\n  encryption = true\n",
	})
	main := filepath.Join(dir, "tlsgate.toml")
	ld := NewLoader(main)
	p, err := ld.Load()
	if err != nil {
		t.Fatal(err)
	}
	if w := p.Settings.Watch; w == nil || !slices.Equal(w.ProbeEndpoints, []string{"partner-b"}) {
		t.Fatalf("probe_endpoints = %+v, want [partner-b] as the included file spells it", w)
	}

	bad := fmt.Sprintf("mta = \"postfix\"\ninclude = [%q]\n[watch]\nprobe_interval = \"1d\"\nprobe_endpoints = [\"nobody\", \"inbound-only\", \"partner-b\", \"PARTNER-B\"]\n", filepath.Join(dir, "conf.d/*.toml"))
	os.Mkdir(filepath.Join(dir, "bad"), 0o755)
	os.WriteFile(filepath.Join(dir, "bad/tlsgate.toml"), []byte(bad), 0o644)
	wantProblem(t, problems(t, dir, filepath.Join(dir, "bad/tlsgate.toml")),
		`bad/tlsgate.toml:5: probe_endpoints: no endpoint is named "nobody"`,
		`bad/tlsgate.toml:5: probe_endpoints: endpoint "inbound-only" (line 1 of conf.d/in.toml) has no [endpoint.outbound] table`,
		`bad/tlsgate.toml:5: probe_endpoints: "PARTNER-B" is listed twice`)

	// Another file changes: the patched policy keeps the resolved names.
	os.WriteFile(filepath.Join(dir, "conf.d/c.toml"), []byte(ep("c", "c.example")), 0o644)
	p, err = ld.Load()
	if err != nil || !slices.Equal(p.Settings.Watch.ProbeEndpoints, []string{"partner-b"}) {
		t.Fatalf("after adding c.toml: %v, %+v", err, p.Settings.Watch)
	}
	// The named endpoint's file goes: the reload is refused.
	os.Remove(filepath.Join(dir, "conf.d/b.toml"))
	if _, err := ld.Load(); err == nil || !strings.Contains(err.Error(), `probe_endpoints: no endpoint is named "Partner-B"`) {
		t.Fatalf("after removing b.toml: %v", err)
	}
}
