package mtaconf

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

var update = flag.Bool("update", false, "rewrite deploy/'s snippets from the examples")

// TestDeploySnippets keeps deploy/'s Postfix and Sendmail snippets equal
// to what mta-config generates from the example configurations, merged
// with a main.cf that sets only compatibility_level = 3.6 (Debian's
// defaults otherwise) and with no .mc.
func TestDeploySnippets(t *testing.T) {
	for _, tc := range []struct{ conf, snippet string }{
		{"../../deploy/tlsgate.example.toml", "../../deploy/postfix/main.cf.example"},
		{"../../deploy/tlsgate.sendmail.example.toml", "../../deploy/sendmail/tlsgate.mc.example"},
	} {
		p, err := policy.Load(tc.conf)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if p.MTA == policy.Postfix {
			pf, err := ForPostfix(p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			empty := filepath.Join(t.TempDir(), "main.cf")
			if err := os.WriteFile(empty, []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			v, err := ReadMainCF(empty, pf.Names())
			if err != nil {
				t.Fatal(err)
			}
			changes, err := pf.Merge(v)
			if err != nil {
				t.Fatal(err)
			}
			got = pf.Text(p.File, "a main.cf with compatibility_level = 3.6 and nothing else", changes)
		} else {
			sm, err := ForSendmail(p, SendmailFiles{GroupReadableKey: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got = sm.Text(p.File, "no sendmail.mc")
		}
		got = strings.ReplaceAll(got, "../../deploy/", "deploy/")
		want, err := os.ReadFile(tc.snippet)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			if !*update {
				t.Errorf("%s is stale; regenerate it with: go test ./internal/mtaconf -run TestDeploySnippets -update\ngot:\n%s", tc.snippet, got)
			} else {
				if err := os.WriteFile(tc.snippet, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// mustParse compiles a test configuration or fails the test.
func mustParse(t *testing.T, conf string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("t.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sendmailCF is the directory of Sendmail's cf files in the lab cache
// (internal/lab/mtalab fills it; scripts/install-test-deps.sh too).
func sendmailCF(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("TLSGATE_LAB_CACHE")
	if cache == "" {
		cache = "/var/cache/tlsgate-lab"
	}
	dir := filepath.Join(cache, "sendmail-root/usr/share/sendmail/cf") + "/"
	if _, err := os.Stat(filepath.Join(dir, "m4/cf.m4")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Sendmail's cf files are not in the lab cache: %v", err)
		}
		t.Skipf("Sendmail's cf files are not in the lab cache (%v); scripts/install-test-deps.sh puts them there", err)
	}
	if _, err := exec.LookPath("m4"); err != nil {
		t.Skip("m4 is not installed")
	}
	return dir
}
