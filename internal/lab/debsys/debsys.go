// Package debsys gives a test a throwaway Debian system to install and run
// packages in without touching the host: the host's root file system seen
// through an overlay whose upper layer is a temporary directory, chrooted,
// in private mount, network, PID, UTS and IPC namespaces.
//
// Inside, /proc, /sys (read-only), a minimal /dev, and fresh tmpfs /run and
// /tmp are mounted; the loopback interface is up and is the only one, so
// nothing the system does can leave the machine; /etc/hosts,
// /etc/resolv.conf (nameserver 127.0.0.1, where nothing answers unless a
// test starts a resolver) and /etc/hostname are the system's own; and
// /usr/sbin/policy-rc.d answers 101, so maintainer scripts start no
// service unless the test allows it ([System.AllowServices]). Everything
// written goes to the upper layer: the host's /etc, /usr and /var are
// never modified, and [System.Changes] lists what the system changed.
//
// A test runs commands inside with [System.Command], [System.Sh] and
// [System.Run] (through nsenter, as root, with a clean environment),
// reaches the system's files from the host with [System.Path], and opens
// sockets on the system's loopback with [System.InNetNS]. Packages that are
// not installed on the host are fetched beforehand with [FetchDebs] (the
// system has no network) and installed from the lab cache with apt or dpkg.
//
// The PID 1 of the namespaces is this test binary started again in a
// special mode (see init): it mounts the overlay, chroots and then only
// reaps orphans, so that daemons that double-fork do not linger as
// zombies. Close kills it by its PID, which ends every process of the
// system, and the mounts go with the mount namespace.
//
// Without systemd as PID 1 there is no service manager;
// [System.InstallSystemctl] puts a small systemctl in place of the real
// one that starts and stops units from their unit files (see systemctl.go
// for exactly what it does and does not do), and [System.SetSystemdRunning]
// makes maintainer scripts take their systemd branch.
//
// Requirements: root, Linux with overlayfs, util-linux nsenter.
package debsys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure [New].
type Options struct {
	// Hostname is the system's host name, also written to /etc/hostname
	// and mapped to 127.0.1.1 in /etc/hosts. Default: "mx.lab.test".
	Hostname string
	// Hosts are extra /etc/hosts lines, e.g. "127.0.0.2 sink.partner.test".
	Hosts []string
}

// System is a running throwaway Debian system; see the package doc.
type System struct {
	dir  string // host directory with upper/, work/, merged/
	init *exec.Cmd
	pid  int

	mu     sync.Mutex
	closed bool
	waited chan struct{}
}

// initEnv marks the test binary's re-execution as the system's PID 1.
const initEnv = "TLSGATE_DEBSYS_INIT"

// defaultPath is root's PATH on Debian.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Available says why this process cannot make a [System], or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("debsys: needs root (mount, chroot, namespaces)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return errors.New("debsys: nsenter (util-linux) not found")
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !bytes.Contains(b, []byte("\toverlay\n")) {
		return errors.New("debsys: the kernel has no overlay file system")
	}
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		return errors.New("debsys: the host is not Debian")
	}
	return nil
}

// New starts a system; t.Cleanup closes it. It fails the test when the
// system cannot be made.
func New(t testing.TB, opts Options) *System {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	if opts.Hostname == "" {
		opts.Hostname = "mx.lab.test"
	}
	// A directory of our own rather than t.TempDir: the upper layer holds
	// files of many owners and whiteout devices, and Close must unmount
	// (by ending the namespace) before anything is removed.
	dir, err := os.MkdirTemp("", "debsys-")
	if err != nil {
		t.Fatal(err)
	}
	s := &System{dir: dir, waited: make(chan struct{})}
	t.Cleanup(s.Close)
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{initEnv + "=1", "PATH=" + defaultPath,
		"DEBSYS_DIR=" + dir, "DEBSYS_HOSTNAME=" + opts.Hostname,
		"DEBSYS_HOSTS=" + strings.Join(opts.Hosts, "\n")}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Setsid:     true,
		// Should the test binary die, the system dies with it.
		Pdeathsig: syscall.SIGKILL,
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("debsys: start the system's init: %v", err)
	}
	s.init, s.pid = cmd, cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(s.waited)
	}()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		switch {
		case line == "ready\n":
			ready <- nil
		case err != nil:
			ready <- fmt.Errorf("init exited: %v", err)
		default:
			ready <- fmt.Errorf("init said %q", line)
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case err = <-ready:
	case <-time.After(60 * time.Second):
		err = errors.New("init did not get ready within 60s")
	}
	if err != nil {
		<-time.After(100 * time.Millisecond)
		t.Fatalf("debsys: %v; its stderr:\n%s", err, stderr.String())
	}
	t.Logf("debsys: system %s up (init PID %d, upper layer %s)", opts.Hostname, s.pid, s.Upper())
	return s
}

// PID is the host PID of the system's PID 1.
func (s *System) PID() int { return s.pid }

// Upper is the host path of the overlay's upper layer: every file the
// system created or changed, and a whiteout (a 0:0 character device) for
// every host file it deleted.
func (s *System) Upper() string { return filepath.Join(s.dir, "upper") }

// Path is the host path of p inside the system (through /proc/PID/root,
// so it sees the system's mounts). p must be absolute.
func (s *System) Path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", s.pid, filepath.Clean("/"+p))
}

// WriteFile writes a file inside the system, creating its directory.
func (s *System) WriteFile(p string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(s.Path(p)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(s.Path(p), data, perm); err != nil {
		return err
	}
	return os.Chmod(s.Path(p), perm)
}

// ReadFile reads a file inside the system.
func (s *System) ReadFile(p string) ([]byte, error) { return os.ReadFile(s.Path(p)) }

// Command returns a command that runs name inside the system as root, in
// its namespaces and chroot, with the working directory /root and a clean
// environment (root's PATH, HOME, LANG=C.UTF-8,
// DEBIAN_FRONTEND=noninteractive) plus env ("KEY=VALUE").
func (s *System) Command(env []string, name string, args ...string) *exec.Cmd {
	// nsenter would resolve a --wd=DIR argument before it enters the
	// chroot; env -C changes directory inside.
	nsargs := []string{"--target", strconv.Itoa(s.pid), "--mount", "--uts", "--ipc", "--net", "--pid",
		"--root", "--wd", "--", "/usr/bin/env", "-C", "/root", name}
	cmd := exec.Command("nsenter", append(nsargs, args...)...)
	cmd.Env = append([]string{"PATH=" + defaultPath, "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root",
		"DEBIAN_FRONTEND=noninteractive", "TERM=dumb"}, env...)
	return cmd
}

// Sh runs script with "sh -e" inside the system and returns its combined
// output; err is set when it fails (*exec.ExitError for an exit status).
func (s *System) Sh(script string) (string, error) {
	cmd := s.Command(nil, "/bin/sh", "-ec", script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Run is [System.Sh] that fails the test when the script fails.
func (s *System) Run(t testing.TB, script string) string {
	t.Helper()
	out, err := s.Sh(script)
	if err != nil {
		t.Fatalf("debsys: %s: %v\n%s", firstLine(script), err, out)
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

// InNetNS runs f on an OS thread that is inside the system's network
// namespace. Sockets f creates on its own goroutine (net.Listen,
// net.Dial) belong to the system's loopback and keep working from any
// goroutine afterwards; goroutines f starts run in the host's namespace.
func (s *System) InNetNS(f func() error) error {
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", s.pid))
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Unlocked only when the thread is back in the host namespace;
		// otherwise it ends with this goroutine.
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("debsys: enter the network namespace: %w", err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("debsys: leave the network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// AllowServices rewrites /usr/sbin/policy-rc.d so that invoke-rc.d and
// deb-systemd-invoke may act on the named services (with or without
// ".service") and on no other; with no names, nothing may start (exit 101).
func (s *System) AllowServices(names ...string) error {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# debsys: maintainer scripts start no service but these.\n")
	if len(names) > 0 {
		b.WriteString("case \"$1\" in\n")
		for _, n := range names {
			n = strings.TrimSuffix(n, ".service")
			fmt.Fprintf(&b, "%s | %s.service) exit 0 ;;\n", n, n)
		}
		b.WriteString("esac\n")
	}
	b.WriteString("exit 101\n")
	return s.WriteFile("/usr/sbin/policy-rc.d", []byte(b.String()), 0o755)
}

// SetSystemdRunning makes maintainer scripts believe (on) or not (off)
// that systemd is PID 1: they test for /run/systemd/system. With it on,
// install the systemctl shim first ([System.InstallSystemctl]).
func (s *System) SetSystemdRunning(on bool) error {
	if on {
		return os.MkdirAll(s.Path("/run/systemd/system"), 0o755)
	}
	err := os.Remove(s.Path("/run/systemd/system"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Change is one entry of the overlay's upper layer.
type Change struct {
	// Path is the absolute path inside the system.
	Path string
	// Deleted reports a whiteout: a host file the system removed.
	Deleted bool
	// Mode is the entry's type and permissions.
	Mode fs.FileMode
}

// Changes lists what the system has created, changed or deleted relative
// to the host, sorted by path (directories that were only traversed
// appear too). /run and /tmp are tmpfs and never appear.
func (s *System) Changes() ([]Change, error) {
	up := s.Upper()
	var out []Change
	err := filepath.WalkDir(up, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == up {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		c := Change{Path: strings.TrimPrefix(p, up), Mode: fi.Mode()}
		if fi.Mode()&fs.ModeCharDevice != 0 {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
				c.Deleted = true
			}
		}
		out = append(out, c)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// Close ends the system: it kills its PID 1 by PID (the kernel then kills
// every process of the PID namespace), waits for it, and removes the
// overlay's directories. It is safe to call more than once.
func (s *System) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.init != nil && s.init.Process != nil {
		s.init.Process.Signal(syscall.SIGKILL)
		select {
		case <-s.waited:
		case <-time.After(30 * time.Second):
		}
	}
	// The mounts lived in the system's mount namespace and are gone with
	// it; merged/ is an empty directory again.
	os.RemoveAll(s.dir)
}
