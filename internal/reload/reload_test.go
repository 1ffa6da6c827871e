package reload

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
	"log/slog"
)

const good = `mta = "postfix"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`

func TestReloadKeepsOldPolicyOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.toml")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	h, err := New(path, slog.New(logx.NewWriter(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	old := h.Policy()
	if err := os.WriteFile(path, []byte(good+"\n[[endpoint]]\nname = \"b\"\nhosts = [\"a.example\"]\n  [endpoint.outbound]\n  encryption = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); err == nil {
		t.Fatal("reload of a bad file succeeded")
	}
	if h.Policy() != old || h.Generation() != 1 {
		t.Fatal("bad reload replaced the policy")
	}
	if !strings.Contains(logs.String(), "reload result=failed") || !strings.Contains(logs.String(), "line=10") {
		t.Errorf("logs: %s", logs.String())
	}
	if err := os.WriteFile(path, []byte(strings.Replace(good, "a.example", "c.example", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	var results []string
	h.OnReload = func(r string, g uint64) { results = append(results, r) }
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	if h.Generation() != 2 || h.Policy() == old {
		t.Fatal("good reload not in force")
	}
	if a, _ := h.Policy().At(time.Now()).PostfixPolicy("c.example"); !a.Found {
		t.Error("new policy does not answer")
	}
	if len(results) != 1 || results[0] != "ok" {
		t.Errorf("OnReload: %v", results)
	}
}

// TestConcurrentReload checks that readers always see a complete policy
// while reloads run (go test -race).
func TestConcurrentReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.toml")
	os.WriteFile(path, []byte(good), 0o644)
	h, err := New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if a, err := h.Policy().At(time.Now()).PostfixPolicy("a.example"); err != nil || !a.Found {
					t.Errorf("lookup during reload: %+v %v", a, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if err := h.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if h.Generation() != 201 {
		t.Errorf("generation %d", h.Generation())
	}
}

// TestPrepareAndCommit: Prepare sees the policy in force and the new one;
// a Prepare error or a commit error keeps the old policy (and is logged
// as the reason); commit runs before the new policy is in force, once.
func TestPrepareAndCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.toml")
	os.WriteFile(path, []byte(good), 0o644)
	var logs bytes.Buffer
	h, err := New(path, slog.New(logx.NewWriter(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := h.Policy()
	var commits int
	var inForceAtCommit *policy.Policy
	// A changed file, so that a reload makes a new policy (an unchanged
	// one gives the same).
	if err := os.WriteFile(path, []byte(strings.Replace(good, "a.example", "b.example", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		prepareErr error
		commitErr  error
	}{
		{"prepare refuses", errors.New("restart needed: [milter] listen changed"), nil},
		{"commit fails", nil, errors.New("trust: put x.pem in place: boom")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			h.Prepare = func(cur, next *policy.Policy) (func() error, error) {
				if cur != first || next == first {
					t.Errorf("Prepare(cur %p, next %p), in force %p", cur, next, first)
				}
				if tc.prepareErr != nil {
					return nil, tc.prepareErr
				}
				return func() error { return tc.commitErr }, nil
			}
			if err := h.Reload(); err == nil {
				t.Fatal("reload succeeded")
			}
			want := tc.prepareErr
			if want == nil {
				want = tc.commitErr
			}
			if h.Policy() != first || h.Generation() != 1 || !strings.Contains(logs.String(), "reload result=failed") || !strings.Contains(logs.String(), want.Error()) {
				t.Errorf("generation %d, logs:\n%s", h.Generation(), logs.String())
			}
		})
	}
	h.Prepare = func(cur, next *policy.Policy) (func() error, error) {
		return func() error { commits++; inForceAtCommit = h.Policy(); return nil }, nil
	}
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	if commits != 1 || inForceAtCommit != first || h.Policy() == first || h.Generation() != 2 {
		t.Errorf("commits %d, in force at commit: old %v, generation %d", commits, inForceAtCommit == first, h.Generation())
	}
}

// TestUnchangedReload: a reload of unchanged files keeps the same policy
// object (nothing compiled, nothing assembled) and says so.
func TestUnchangedReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.toml")
	os.WriteFile(path, []byte(good), 0o644)
	var logs bytes.Buffer
	h, err := New(path, slog.New(logx.NewWriter(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := h.Policy()
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	if h.Policy() != first || h.Generation() != 2 || !strings.Contains(logs.String(), "reload result=ok file="+path+" generation=2 endpoints=1 files=1 files_changed=0 compiled=0 added=0 changed=0 removed=0 took=") {
		t.Errorf("unchanged reload: same policy %v, generation %d, logs:\n%s", h.Policy() == first, h.Generation(), logs.String())
	}
}
