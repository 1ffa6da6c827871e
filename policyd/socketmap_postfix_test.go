package policyd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// findPostmap locates Postfix's postmap: on PATH, else in the sbin directories Debian and
// source installs use. Without it the test is skipped, or fails under CI=true, where
// Postfix is part of the test environment.
func findPostmap(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("postmap"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/postmap", "/usr/local/sbin/postmap"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("postmap (Postfix) not found, and CI=true: install postfix")
	}
	t.Skip("postmap (Postfix) not found")
	return ""
}

// TestSocketmapWithPostmap queries the server with Postfix's own socketmap client,
// "postmap -q KEY socketmap:unix:PATH:NAME", and checks what Postfix makes of each answer.
func TestSocketmapWithPostmap(t *testing.T) {
	postmap := findPostmap(t)
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	_, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), Logger: logs.logger()})
	_, tcpSpec := startSocketmap(t, "tcp", SocketmapOptions{Lookuper: LookupFunc(testLookuper), Logger: logs.logger()})

	type outcome int
	const (
		found outcome = iota
		notFound
		lookupError
	)
	tests := []struct {
		key     string
		want    outcome
		value   string // stdout for found
		errText string // in stderr for lookupError
	}{
		{key: "found.example", want: found, value: "secure match=mx.found.example"},
		{key: "[127.0.0.1]:10026", want: notFound},
		{key: "Mixed.Case.Example", want: notFound},
		{key: "echo:Mixed.Case", want: found, value: "echo:Mixed.Case"}, // key arrives un-folded
		{key: "temp.example", want: lookupError, errText: "try later"},
		{key: "timeout.example", want: lookupError, errText: "too slow"},
		{key: "perm.example", want: lookupError, errText: "broken"},
		{key: "panic.example", want: lookupError, errText: "internal error"},
		{key: "emptyok.example", want: lookupError, errText: "internal error"},
		{key: "big:99997", want: found, value: strings.Repeat("x", 99997)},
		{key: "big:99998", want: lookupError, errText: "reply too long"},
	}
	// postmap sleeps 1 s before exiting on a fatal error (a lookup error), so all
	// queries run at once, each its own process.
	type result struct {
		name           string
		tc             int
		code           int
		stdout, stderr bytes.Buffer
		err            error
	}
	var results []*result
	var wg sync.WaitGroup
	for _, sp := range []string{spec, tcpSpec} {
		// postmap names TCP endpoints inet:host:port, like our specs.
		for i, tc := range tests {
			r := &result{name: strings.SplitN(sp, ":", 2)[0] + "/" + tc.key, tc: i}
			results = append(results, r)
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, postmap, "-c", conf, "-q", tc.key, "socketmap:"+sp+":tlspolicy")
				cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
				err := cmd.Run()
				var ee *exec.ExitError
				if errors.As(err, &ee) && ctx.Err() == nil {
					r.code = ee.ExitCode()
				} else if err != nil {
					r.err = err
				}
			})
		}
	}
	wg.Wait()
	for _, r := range results {
		tc := tests[r.tc]
		t.Run(r.name, func(t *testing.T) {
			if r.err != nil {
				t.Fatalf("postmap: %v; stderr: %s", r.err, r.stderr.String())
			}
			// postmap -q exits 0 when found, 1 when not found, and 1 with
			// "query error" on stderr for a lookup error.
			got := found
			switch {
			case r.code == 0:
			case r.code == 1 && strings.Contains(r.stderr.String(), "query error"):
				got = lookupError
			case r.code == 1:
				got = notFound
			default:
				t.Fatalf("postmap exit %d; stderr: %s", r.code, r.stderr.String())
			}
			if got != tc.want {
				t.Fatalf("postmap outcome %d (exit %d), want %d; stdout %q; stderr %s", got, r.code, tc.want, truncate(r.stdout.Bytes()), r.stderr.String())
			}
			if tc.want == found && strings.TrimSuffix(r.stdout.String(), "\n") != tc.value {
				t.Fatalf("postmap printed %q, want %q", truncate(r.stdout.Bytes()), truncate([]byte(tc.value)))
			}
			if tc.want == lookupError && !strings.Contains(r.stderr.String(), tc.errText) {
				t.Fatalf("postmap stderr lacks %q: %s", tc.errText, r.stderr.String())
			}
			if tc.want == notFound && r.stdout.Len() != 0 {
				t.Fatalf("postmap printed %q for a key not found", r.stdout.String())
			}
		})
	}
}
