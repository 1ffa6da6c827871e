package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loaderTree is a main file including conf.d/*.toml with three partner
// files, one of them an exception to an endpoint in another.
func loaderTree(t *testing.T) (dir, main string) {
	dir = tree(t, map[string]string{
		"tlsgate.toml":  "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n" + ep("main", "main.example"),
		"conf.d/a.toml": ep("a", "a.example", ".a.example") + ep("a2", "a2.example"),
		"conf.d/b.toml": ep("b", "b.example"),
		"conf.d/c.toml": "[[endpoint]]\nname = \"c\"\nhosts = [\"mx.a.example\"]\nexception_to = \"a\"\nreason = \"CHG-1\"\nexpires = 2027-01-31\n  [endpoint.outbound]\n  encryption = true\n  min_bits = 40\n",
	})
	// c is an exception that relaxes nothing yet: make a demand more.
	write(t, filepath.Join(dir, "conf.d/a.toml"), strings.Replace(ep("a", "a.example", ".a.example"), "encryption = true", "encryption = true\n  min_bits = 128", 1)+ep("a2", "a2.example"))
	return dir, filepath.Join(dir, "tlsgate.toml")
}

func write(t testing.TB, path, data string) {
	t.Helper()
	// Through a new file and a rename, as admins are told to.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// reloadSame loads with l and from scratch and requires the same policy.
func reloadSame(t *testing.T, l *Loader, main string) *Policy {
	t.Helper()
	p, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	full, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	if err := Same(p, full); err != nil {
		t.Fatalf("incremental and full loads differ: %v", err)
	}
	return p
}

// TestLoaderCompilesOnlyChanged: a second Load compiles only the file
// that changed; the endpoints of the others are the same objects; the
// policy is the one a full load gives; Diff counts the changes.
func TestLoaderCompilesOnlyChanged(t *testing.T) {
	dir, main := loaderTree(t)
	l := NewLoader(main)
	p1 := reloadSame(t, l, main)
	if s := l.Stats(); s.Files != 4 || s.Compiled != 4 {
		t.Errorf("first load: %+v", s)
	}
	if len(p1.Exceptions()) != 1 || p1.Exceptions()[0].To.Name != "a" || !p1.Exceptions()[0].Relaxes(Outbound) {
		t.Fatalf("exception: %+v", p1.Exceptions())
	}
	p2 := reloadSame(t, l, main)
	if s := l.Stats(); s.Compiled != 0 || Diff(p1, p2) != (Delta{Files: 4}) {
		t.Errorf("unchanged: %+v, %+v", s, Diff(p1, p2))
	}
	write(t, filepath.Join(dir, "conf.d/b.toml"), ep("b", "b.example", "b2.example")+ep("b3", "b3.example"))
	p3 := reloadSame(t, l, main)
	if s := l.Stats(); s.Files != 4 || s.Compiled != 1 {
		t.Errorf("one file changed: %+v", s)
	}
	if d := Diff(p2, p3); d != (Delta{Files: 4, FilesChanged: 1, Added: 1, Changed: 1}) {
		t.Errorf("diff %+v", d)
	}
	for i, name := range []string{"main", "a", "a2"} {
		if p3.Endpoints[i] != p2.Endpoints[i] || p3.Endpoints[i].Name != name {
			t.Errorf("endpoint %s was compiled again", name)
		}
	}
	// The exception is the policy's own copy, resolved again.
	x2, x3 := p2.Exceptions()[0], p3.Exceptions()[0]
	if x2 == x3 || x3.Endpoint != p3.Endpoints[len(p3.Endpoints)-1] || x3.To != p3.Endpoints[1] {
		t.Error("exception not resolved on the new policy")
	}
}

// TestLoaderDeletedAndRenamed: a deleted file's endpoints are gone; a
// renamed file keeps its endpoints (compiled again, under the new name).
func TestLoaderDeletedAndRenamed(t *testing.T) {
	dir, main := loaderTree(t)
	l := NewLoader(main)
	p1 := reloadSame(t, l, main)
	if err := os.Remove(filepath.Join(dir, "conf.d/b.toml")); err != nil {
		t.Fatal(err)
	}
	p2 := reloadSame(t, l, main)
	if d := Diff(p1, p2); d != (Delta{Files: 3, FilesChanged: 1, Removed: 1}) {
		t.Errorf("deleted: %+v", d)
	}
	if a, _ := now(p2).Outbound("b.example"); a.Endpoint != nil {
		t.Error("b.example still covered")
	}
	if err := os.Rename(filepath.Join(dir, "conf.d/a.toml"), filepath.Join(dir, "conf.d/z.toml")); err != nil {
		t.Fatal(err)
	}
	p3 := reloadSame(t, l, main)
	if s := l.Stats(); s.Compiled != 1 {
		t.Errorf("renamed: %+v", s)
	}
	if d := Diff(p2, p3); d != (Delta{Files: 3, FilesChanged: 2}) {
		t.Errorf("renamed: %+v", d)
	}
	a, _ := now(p3).Outbound("a2.example")
	if !a.Found || a.Endpoint.File != filepath.Join(dir, "conf.d/z.toml") {
		t.Errorf("a2.example after the rename: %+v", a)
	}
}

// TestLoaderBadFileThenFixed: a bad included file fails the whole load
// (all files or none); fixed, only it is compiled again. A change to the
// main file's settings that endpoints depend on compiles every file again.
func TestLoaderBadFileThenFixed(t *testing.T) {
	dir, main := loaderTree(t)
	l := NewLoader(main)
	reloadSame(t, l, main)
	write(t, filepath.Join(dir, "conf.d/b.toml"), ep("b", "b.example")+"[[endpoint]]\nname = \"x\"\n")
	if _, err := l.Load(); err == nil || !strings.Contains(err.Error(), "conf.d/b.toml:6: endpoint \"x\" has no hosts") {
		t.Fatalf("bad file: %v", err)
	}
	write(t, filepath.Join(dir, "conf.d/b.toml"), ep("b", "b.example"))
	reloadSame(t, l, main)
	if s := l.Stats(); s.Compiled != 1 {
		t.Errorf("fixed: %+v", s)
	}
	write(t, main, "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n[certs]\ntrust_anchor_dir = \"/x\"\n"+ep("main", "main.example"))
	reloadSame(t, l, main)
	if s := l.Stats(); s.Compiled != 4 {
		t.Errorf("settings changed: %+v", s)
	}
	write(t, main, "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n[certs]\ntrust_anchor_dir = \"/x\"\n"+ep("main", "main.example", "main2.example"))
	reloadSame(t, l, main)
	if s := l.Stats(); s.Compiled != 1 {
		t.Errorf("main file's endpoints changed: %+v", s)
	}
}

// TestSameFindsDifferences: Same is no constant.
func TestSameFindsDifferences(t *testing.T) {
	dir, main := loaderTree(t)
	p1, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "conf.d/b.toml"), ep("b", "b2.example"))
	p2, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	if err := Same(p1, p2); err == nil || !strings.Contains(err.Error(), "endpoint 3: b") {
		t.Errorf("Same = %v", err)
	}
	write(t, filepath.Join(dir, "conf.d/b.toml"), "\n"+ep("b", "b.example"))
	p3, _ := Load(main)
	if err := Same(p1, p3); err == nil || !strings.Contains(err.Error(), "endpoint 3: b") {
		t.Errorf("moved a line: Same = %v", err)
	}
}
