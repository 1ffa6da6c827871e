package trust

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Two generations of a policy on the same CA store: in B, endpoint "a"
// pins the other CA and a third endpoint "zz" pins one too (its file
// comes last).
const (
	genA = `
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  issuer_cn = "lab test ca"
[[endpoint]]
name = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  issuer_dn = "CN=Other CA, O=Other Org, C=DE"
`
	genB = `
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  issuer_dn = "CN=Other CA, O=Other Org, C=DE"
[[endpoint]]
name = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  issuer_cn = "lab test ca"
[[endpoint]]
name = "zz"
hosts = ["z.example"]
  [endpoint.outbound]
  issuer_cn = "lab test ca"
`
)

// reparse compiles text on the settings of p (same store, bundle and
// trust-anchor directory).
func reparse(t *testing.T, p *policy.Policy, text string) *policy.Policy {
	t.Helper()
	s := p.Settings
	q, err := policy.Parse("t.toml", []byte(`mta = "postfix"
[certs]
ca_store = "`+s.CAStore+`"
ca_bundle = "`+s.CABundle+`"
trust_anchor_dir = "`+s.TrustAnchorDir+`"
`+text))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// snapshot reads every file below dir (names relative to dir).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[rel] = string(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameFiles fails unless the files below dir are exactly before, with no
// temporary file left.
func sameFiles(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := snapshot(t, dir)
	for name, data := range before {
		if after[name] != data {
			t.Errorf("%s changed", name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s left behind", name)
		}
	}
}

// TestStageFailureWritesNothing: generation B cannot be staged because the
// last trust-anchor file's place is taken by a directory. The bundle and
// the files of generation A stay byte-identical and no temporary file is
// left.
func TestStageFailureWritesNothing(t *testing.T) {
	p, _, dir := setup(t, genA)
	plan, err := Prepare(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "ta", "zz.pem"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	q := reparse(t, p, genB)
	planB, err := Prepare(q)
	if err != nil {
		t.Fatal(err)
	}
	st, err := planB.Stage(q)
	if err == nil || st != nil || !strings.Contains(err.Error(), "zz.pem is not a regular file") {
		t.Fatalf("Stage = %v, %v; want the directory refused", st, err)
	}
	sameFiles(t, dir, before)
}

// TestCommitRestores: generation B is staged, then the last file's place
// is taken by a directory before Commit: its rename fails, the files
// already replaced get generation A's bytes back, the new file that did
// not exist before is removed, and no temporary or backup file is left.
// A second Commit is refused.
func TestCommitRestores(t *testing.T) {
	p, _, dir := setup(t, genA)
	plan, err := Prepare(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(p); err != nil {
		t.Fatal(err)
	}
	q := reparse(t, p, genB)
	planB, err := Prepare(q)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	st, err := planB.Stage(q)
	if err != nil {
		t.Fatal(err)
	}
	files := st.Files()
	if len(files) != 4 || !strings.HasSuffix(files[0], "bundle.pem") || !strings.HasSuffix(files[3], "zz.pem") {
		t.Fatalf("staged %v", files)
	}
	// A non-empty directory: rename(2) cannot replace it.
	if err := os.MkdirAll(filepath.Join(dir, "ta", "zz.pem", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = st.Commit()
	if err == nil || !strings.Contains(err.Error(), "zz.pem") || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("Commit = %v; want zz.pem refused", err)
	}
	os.RemoveAll(filepath.Join(dir, "ta", "zz.pem"))
	sameFiles(t, dir, before)
	if err := st.Commit(); err == nil {
		t.Error("second Commit accepted")
	}
}

// TestCommitReplaces: a committed generation B is in place, file by file,
// and Abort after Commit changes nothing.
func TestCommitReplaces(t *testing.T) {
	p, _, dir := setup(t, genA)
	plan, _ := Prepare(p)
	if err := plan.Write(p); err != nil {
		t.Fatal(err)
	}
	a := snapshot(t, dir)
	q := reparse(t, p, genB)
	planB, _ := Prepare(q)
	st, err := planB.Stage(q)
	if err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, dir); len(got) != len(a)+4 {
		t.Errorf("staging wrote %d files, want 4 temporary ones", len(got)-len(a))
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	st.Abort()
	b := snapshot(t, dir)
	if len(b) != len(a)+1 || b["ta/zz.pem"] == "" {
		t.Fatalf("after commit: %d files, want %d", len(b), len(a)+1)
	}
	if b["ta/a.pem"] != a["ta/b.pem"] || b["ta/b.pem"] != a["ta/a.pem"] || b["ta/zz.pem"] != a["ta/a.pem"] {
		t.Error("generation B's anchors are not in place")
	}
	for name := range b {
		if strings.Contains(name, ".tmp-") {
			t.Errorf("%s left behind", name)
		}
	}
}

// TestAbortRemovesTemporaries: an aborted stage leaves the files as they
// were.
func TestAbortRemovesTemporaries(t *testing.T) {
	p, _, dir := setup(t, genA)
	plan, _ := Prepare(p)
	if err := plan.Write(p); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	planB, _ := Prepare(reparse(t, p, genB))
	st, err := planB.Stage(reparse(t, p, genB))
	if err != nil {
		t.Fatal(err)
	}
	st.Abort()
	sameFiles(t, dir, before)
	if err := st.Commit(); err == nil {
		t.Error("Commit after Abort accepted")
	}
}
