package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary TOML to the compiler: it must never panic, and
// every failure must be a *LoadError whose problems name the file.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.toml"))
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.toml", data)
		if err != nil {
			le, ok := err.(*LoadError)
			if !ok || len(le.Problems) == 0 {
				t.Fatalf("error %T %v", err, err)
			}
			for _, pr := range le.Problems {
				if pr.File != "fuzz.toml" || pr.Msg == "" {
					t.Fatalf("bad problem %+v", pr)
				}
			}
			return
		}
		for _, ep := range p.Endpoints {
			for _, h := range ep.Hosts {
				if _, err := p.Outbound(h.Canonical()); err != nil && p.MTA == Postfix && h.Kind != PatternPrefix {
					t.Fatalf("own pattern %q is not a valid key: %v", h.Canonical(), err)
				}
			}
		}
	})
}
