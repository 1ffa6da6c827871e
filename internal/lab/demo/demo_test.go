package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// TestDemo plays the whole demo ("make demo") with a freshly built
// tlsgate binary and checks its counts and the lines it must show. It
// needs root and Postfix (skipped without them, failed when CI=true).
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo starts a real Postfix; skipped with -short")
	}
	mtalab.RequirePostfix(t)
	bin := filepath.Join(t.TempDir(), "tlsgate")
	build := exec.Command(goTool(), "build", "-o", bin, "github.com/tlsgate/tlsgate/cmd/tlsgate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tlsgate: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, verbose bytes.Buffer
	start := time.Now()
	sum, err := Run(ctx, Options{Tlsgate: bin, Out: &out, Verbose: &verbose})
	took := time.Since(start)
	if err != nil || sum != Want || t.Failed() {
		t.Logf("demo output:\n%s\nharness log:\n%s", out.String(), verbose.String())
	}
	if err != nil {
		t.Errorf("Run: %v", err)
	}
	if sum != Want {
		t.Errorf("summary: %s\nwant:    %s", sum, Want)
	}
	text := out.String()
	for _, want := range []string{
		// 1a: tlsgate's headers in the delivered copy.
		"by mx.lab.test (tlsgate) with ESMTPS",
		"(endpoint=company-b policy=pass)",
		"Authentication-Results: mx.lab.test; x-tls=pass policy.endpoint=company-b",
		"(verified OK)",
		// 1b and 1c: the refusals, Postfix's and tlsgate's lines.
		"S: 451 4.7.1 TLS required by local policy for this peer",
		"S: 550 5.7.1 TLS required by local policy for this peer",
		"milter-reject: MAIL from out.company-b.example[127.0.0.2]: 451 4.7.1",
		"tlsgate: result=defer endpoint=company-b client=",
		"tlsgate: result=reject endpoint=company-c client=",
		// 2a and 2b.
		"answer=\"OK secure match=mx1.company-b.example",
		"Verified TLS connection established to mx1.company-b.example[127.0.0.1]",
		"status=sent",
		"answer=\"OK encrypt\"",
		"status=deferred (TLS is required, but was not offered by host mx.company-c.example[127.0.0.1])",
		"-Queue ID-",
		Want.String(),
		"removed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	for _, bad := range []string{"PROBLEM", "STILL RUNNING", "NOT removed"} {
		if strings.Contains(text, bad) {
			t.Errorf("the demo's output contains %q", bad)
		}
	}
	if took > 60*time.Second {
		t.Errorf("the demo took %v; it should take well under a minute", took.Round(time.Second))
	}
	t.Logf("demo took %v", took.Round(100*time.Millisecond))
}

// goTool returns the go command that runs this test.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
