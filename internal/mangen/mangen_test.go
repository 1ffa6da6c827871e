package mangen

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite deploy/man/*.[58] from their .md sources")

// TestPagesCurrent keeps the shipped troff pages equal to their sources;
// run "go test ./internal/mangen -update" after editing a .md file.
func TestPagesCurrent(t *testing.T) {
	srcs, _ := filepath.Glob("../../deploy/man/*.md")
	if len(srcs) < 2 {
		t.Fatalf("found %d man sources", len(srcs))
	}
	for _, src := range srcs {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Convert(string(data))
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		page := strings.TrimSuffix(src, ".md")
		if *update {
			if err := os.WriteFile(page, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		have, err := os.ReadFile(page)
		if err != nil || string(have) != out {
			t.Errorf("%s is stale or missing; run: go test ./internal/mangen -update", page)
		}
	}
}

func TestConvert(t *testing.T) {
	out, err := Convert("% tlsgate 8 2026-11-28\n# NAME\ntlsgate - TLS **policies**\n\n- `check` -c FILE\n```\n.dot\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".TH TLSGATE 8 2026-11-28", ".SH NAME", `tlsgate \- TLS \fBpolicies\fR`, `.IP \(bu 2`, `\fBcheck\fR \-c FILE`, `\&.dot`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if _, err := Convert("no header"); err == nil {
		t.Error("missing header accepted")
	}
}
