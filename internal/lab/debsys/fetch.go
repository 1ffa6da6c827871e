package debsys

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// CacheDir is the lab cache (TLSGATE_LAB_CACHE, default
// /var/cache/tlsgate-lab); the same directory scripts/install-test-deps.sh
// fills. Its debs/ holds downloaded packages.
func CacheDir() string {
	if d := os.Getenv("TLSGATE_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/tlsgate-lab"
}

// ArchiveDir is where [FetchDebs] keeps .deb files: CacheDir()/debs.
// Systems see it at the same path (the host's file system is their lower
// layer).
func ArchiveDir() string { return filepath.Join(CacheDir(), "debs") }

// FetchDebs downloads, on the host, what `apt-get install PKGS` would need
// on a system that starts from this host (the packages and their missing
// dependencies) into [ArchiveDir], without installing or removing
// anything on the host. Files already there are not fetched again, so this
// needs the network only once. A system has no network: install what was
// fetched with [System.AptInstall].
func FetchDebs(t testing.TB, pkgs ...string) {
	t.Helper()
	dir := ArchiveDir()
	if err := os.MkdirAll(filepath.Join(dir, "partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	// apt drops to user _apt for downloads; let it write here.
	if out, err := exec.Command("chown", "-R", "_apt", dir).CombinedOutput(); err != nil {
		t.Logf("debsys: chown _apt %s: %v %s", dir, err, out)
	}
	lock, err := os.OpenFile(filepath.Join(CacheDir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	// install-test-deps.sh takes the same lock.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	args := append(aptArgs(), "--download-only", "install")
	cmd := exec.Command("apt-get", append(args, pkgs...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debsys: apt-get --download-only install %s: %v\n%s\n(run apt-get update first if the lists are stale)", strings.Join(pkgs, " "), err, out)
	}
}

// aptArgs make apt use ArchiveDir as its package cache.
func aptArgs() []string {
	return []string{"-y", "-o", "Dir::Cache::archives=" + ArchiveDir()}
}

// AptInstall installs packages inside the system with apt-get from what
// [FetchDebs] downloaded (no download is attempted), with
// --no-install-recommends unless recommends is true. Maintainer scripts
// start services only as [System.AllowServices] allows. It returns apt's
// output and fails the test on error.
func (s *System) AptInstall(t testing.TB, recommends bool, pkgs ...string) string {
	t.Helper()
	args := append(aptArgs(), "--no-download")
	if !recommends {
		args = append(args, "--no-install-recommends")
	}
	args = append(args, "install")
	cmd := s.Command(nil, "apt-get", append(args, pkgs...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debsys: apt-get install %s in the system: %v\n%s\n(fetch them first with FetchDebs)", strings.Join(pkgs, " "), err, out)
	}
	return string(out)
}

// String describes the system for test logs.
func (s *System) String() string { return fmt.Sprintf("debsys system (init PID %d)", s.pid) }
