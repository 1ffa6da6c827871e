package install

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/debsys"
)

// gate skips the install tests unless CI=true or TLSGATE_INSTALL_TESTS=1;
// under CI a missing prerequisite fails them.
func gate(t *testing.T) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if !ci && os.Getenv("TLSGATE_INSTALL_TESTS") != "1" {
		t.Skip("install tests run under CI=true or with TLSGATE_INSTALL_TESTS=1")
	}
	missing := debsys.Available()
	for _, p := range []string{"make", "swaks", "lintian"} {
		if _, err := exec.LookPath(p); err != nil && missing == nil {
			missing = fmt.Errorf("%s not found (make deps installs it)", p)
		}
	}
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil && missing == nil {
		missing = fmt.Errorf("no Postfix on this host (make deps installs it)")
	}
	if missing != nil {
		if ci {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
}

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

var blockMarker = regexp.MustCompile(`^<!-- install-test: ([a-z0-9-]+) -->$`)

// readmeBlocks returns README.md's install-test blocks by name: the body
// of the ```sh block right after each <!-- install-test: NAME --> line.
func readmeBlocks(t testing.TB) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		m := blockMarker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "```sh" {
			t.Fatalf("README.md:%d: install-test block %q must be followed by a ```sh line", i+1, m[1])
		}
		var body []string
		j := i + 2
		for ; j < len(lines) && lines[j] != "```"; j++ {
			body = append(body, lines[j])
		}
		if j == len(lines) {
			t.Fatalf("README.md:%d: install-test block %q is not closed", i+1, m[1])
		}
		if _, dup := blocks[m[1]]; dup {
			t.Fatalf("README.md:%d: install-test block %q appears twice", i+1, m[1])
		}
		blocks[m[1]] = strings.Join(body, "\n") + "\n"
		i = j
	}
	return blocks
}

// buildDeb runs `make deb` for version into dir and returns the package.
func buildDeb(t testing.TB, dir, version string) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "deb", "DEB_VERSION="+version, "DEB_OUT="+dir, "DEB_STAGE="+filepath.Join(dir, "stage-"+version))
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	p := filepath.Join(dir, "tlsgate_"+version+"_amd64.deb")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("make deb wrote no %s:\n%s", p, out)
	}
	return p
}

// packageVersion is the version make deb gives this checkout.
func packageVersion(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("sh", filepath.Join(repoRoot(t), "deploy/debian/version.sh")).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// system wraps a debsys.System with the checks the install tests repeat.
type system struct {
	*debsys.System
	t *testing.T
}

// must runs script in the system and fails the test if it fails.
func (s *system) must(script string) string {
	s.t.Helper()
	return s.Run(s.t, script)
}

// withSystemd makes maintainer scripts believe systemd runs the system
// (the systemctl shim must be installed) and lets them start tlsgate and
// no other service.
func (s *system) withSystemd() {
	s.t.Helper()
	if err := s.SetSystemdRunning(true); err != nil {
		s.t.Fatal(err)
	}
	if err := s.AllowServices("tlsgate"); err != nil {
		s.t.Fatal(err)
	}
}

// readme returns a function that runs README.md's install-test block
// NAME (of blocks, see readmeBlocks) in the system as it stands, logs it
// and its output, and fails the test when it fails.
func (s *system) readme(blocks map[string]string) func(name string) string {
	return func(name string) string {
		s.t.Helper()
		body, ok := blocks[name]
		if !ok {
			s.t.Fatalf("README.md has no install-test block %q", name)
		}
		out := s.must(body)
		s.t.Logf("README block %q:\n%s\n--- output:\n%s", name, body, out)
		return out
	}
}

// fails runs script, which must fail, and returns its output.
func (s *system) fails(script string) string {
	s.t.Helper()
	out, err := s.Sh(script)
	if err == nil {
		s.t.Fatalf("%s: succeeded, want a failure:\n%s", firstLine(script), out)
	}
	return out
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// exists reports whether path exists in the system (symlinks not followed).
func (s *system) exists(path string) bool {
	_, err := os.Lstat(s.Path(path))
	return err == nil
}

// logSize is a mark in a log file of the system, for waitLog.
func (s *system) logSize(path string) int {
	b, _ := s.ReadFile(path)
	return len(b)
}

// waitLog waits until a line written to path after mark matches re and
// returns it.
func (s *system) waitLog(path string, mark int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := s.ReadFile(path)
		if mark <= len(b) {
			sc := bufio.NewScanner(strings.NewReader(string(b[mark:])))
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if re.MatchString(sc.Text()) {
					return sc.Text(), nil
				}
			}
		}
		if time.Now().After(deadline) {
			tail := string(b)
			if mark <= len(tail) {
				tail = tail[mark:]
			}
			return "", fmt.Errorf("no line matching %q in %s within %v; new lines:\n%s", re, path, timeout, tail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// timer logs how long each step of a test took, and the total.
type timer struct {
	t     *testing.T
	start time.Time
	last  time.Time
	steps []string
}

func newTimer(t *testing.T) *timer {
	now := time.Now()
	tm := &timer{t: t, start: now, last: now}
	t.Cleanup(func() {
		t.Logf("timings: %s; total %.1fs", strings.Join(tm.steps, ", "), time.Since(tm.start).Seconds())
	})
	return tm
}

// step records the time since the previous step under name.
func (tm *timer) step(name string) {
	now := time.Now()
	tm.steps = append(tm.steps, fmt.Sprintf("%s %.1fs", name, now.Sub(tm.last).Seconds()))
	tm.last = now
}
