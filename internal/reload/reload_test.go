package reload

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tlsgate/tlsgate/internal/logx"
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
	if a, _ := h.Policy().PostfixPolicy("c.example"); !a.Found {
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
				if a, err := h.Policy().PostfixPolicy("a.example"); err != nil || !a.Found {
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
