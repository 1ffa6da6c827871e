package dnslab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// envInner marks the re-executed test binary running inside the lab's
// namespaces.
const envInner = "TLSGATE_DNSLAB_NETNS"

// unshareArgs make the namespaces: a network namespace holding only lo,
// a private mount namespace (for resolv.conf and hosts), and a PID
// namespace in which the test binary is PID 1, so that nothing it starts
// (nsd forks) can outlive it. --kill-child ends the test binary if
// unshare itself is killed.
var unshareArgs = []string{"--net", "--mount", "--propagation", "private",
	"--pid", "--fork", "--mount-proc", "--kill-child"}

var (
	// inside is true in the re-executed test binary once its namespace is
	// set up.
	inside bool
	// notInside says why the tests run outside the lab namespace.
	notInside error
	// resolvConf is the private resolv.conf bound over /etc/resolv.conf.
	resolvConf string
)

// Main runs the tests of a package that uses the lab. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { dnslab.Main(m) }
//
// As root, Main re-executes the test binary with the same arguments
// under unshare(1) in new network, mount and PID namespaces and exits
// with its status. Inside, it brings lo up (the only interface: no packet
// can leave the machine), binds a private /etc/resolv.conf
// ("nameserver 127.0.0.53", the lab's resolver) and /etc/hosts over the
// system's, and runs the tests. Without root or unshare the tests run
// directly, and [Start] and [Require] skip (or fail under CI=true).
func Main(m *testing.M) { MainFunc(m.Run) }

// MainFunc is Main for a TestMain that does more around the tests (builds
// a binary first, for example): run takes the place of m.Run, inside the
// lab namespace (or directly when it cannot be made), and returns the
// exit status.
func MainFunc(run func() int) {
	if os.Getenv(envInner) == "1" {
		dir, err := setupInside()
		if err != nil {
			notInside = fmt.Errorf("set up the lab namespace: %w", err)
		} else {
			inside = true
		}
		code := run()
		if dir != "" {
			os.RemoveAll(dir)
		}
		os.Exit(code)
	}
	if err := canUnshare(); err != nil {
		notInside = err
		os.Exit(run())
	}
	self, err := os.Executable()
	if err != nil {
		notInside = fmt.Errorf("find the test binary: %w", err)
		os.Exit(run())
	}
	cmd := exec.Command("unshare", append(append(append([]string{}, unshareArgs...), self), os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envInner+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// If this process dies, unshare dies, and --kill-child takes the
	// test binary (PID 1 of its namespace) and everything in it along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		os.Exit(0)
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		os.Exit(exit.ExitCode())
	}
	fmt.Fprintf(os.Stderr, "dnslab: run the tests in the lab namespace: %v\n", err)
	os.Exit(2)
}

// canUnshare checks that this process may make the lab's namespaces.
func canUnshare() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (euid %d) to make network, mount and PID namespaces", os.Geteuid())
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return fmt.Errorf("unshare (util-linux) not found: %w", err)
	}
	out, err := exec.Command("unshare", append(append([]string{}, unshareArgs...), "true")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("unshare %v is not permitted here: %v: %s", unshareArgs, err, out)
	}
	return nil
}

// setupInside brings lo up and binds the private resolv.conf and hosts.
// It returns the directory holding them.
func setupInside() (string, error) {
	if err := loUp(); err != nil {
		return "", err
	}
	// /sys/class/net still shows the parent's namespace; ask the
	// kernel (netlink) instead.
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("list interfaces: %w", err)
	}
	for _, i := range ifs {
		if i.Name != "lo" {
			return "", fmt.Errorf("network namespace has interface %q besides lo", i.Name)
		}
	}
	dir, err := os.MkdirTemp("", "dnslab-etc-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return dir, err
	}
	files := map[string]string{
		"resolv.conf": "# dnslab: the lab's validating resolver; nothing leaves this network namespace\n" +
			"nameserver 127.0.0.53\noptions edns0 trust-ad timeout:2 attempts:2\n",
		"hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
	}
	for name, content := range files {
		src := filepath.Join(dir, name)
		if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			return dir, err
		}
		dst := "/etc/" + name
		if target, err := filepath.EvalSymlinks(dst); err == nil {
			dst = target
		} else {
			return dir, fmt.Errorf("%s: %w (a private copy cannot be bound over it)", dst, err)
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return dir, fmt.Errorf("bind %s over %s: %w", src, dst, err)
		}
	}
	resolvConf = filepath.Join(dir, "resolv.conf")
	return dir, nil
}

// loUp sets the IFF_UP flag of lo.
func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// Inside reports whether the test binary runs in the lab's namespaces
// (see [Main]).
func Inside() bool { return inside }

// ResolvConf returns the path of the private resolv.conf that is bound
// over /etc/resolv.conf in the lab namespace ("nameserver 127.0.0.53"),
// for MTAs that run in a mount namespace of their own; "" outside.
func ResolvConf() string { return resolvConf }
