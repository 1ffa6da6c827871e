package debsys

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// init turns the test binary into the system's PID 1 when New started it
// so (initEnv), or into the systemctl shim when it is called as
// "systemctl" inside a system. Either way the process never returns to
// the tests.
func init() {
	if os.Getenv(initEnv) == "1" {
		os.Exit(initMain())
	}
	if filepath.Base(os.Args[0]) == "systemctl" {
		os.Exit(systemctlMain(os.Args[1:]))
	}
}

// initMain sets the system up and then reaps orphans until it is killed.
// It runs in new mount, network, PID, UTS and IPC namespaces, as PID 1.
func initMain() int {
	if err := setup(os.Getenv("DEBSYS_DIR"), os.Getenv("DEBSYS_HOSTNAME"), os.Getenv("DEBSYS_HOSTS")); err != nil {
		fmt.Fprintf(os.Stderr, "debsys init: %v\n", err)
		fmt.Println("failed")
		return 1
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	fmt.Println("ready")
	os.Stdout.Close()
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			return 0
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}

func setup(dir, hostname, hosts string) error {
	if dir == "" || hostname == "" {
		return fmt.Errorf("DEBSYS_DIR and DEBSYS_HOSTNAME must be set")
	}
	// Nothing mounted here may reach the host's mount tree.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	m := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", m, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", m, err)
	}
	mounts := []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"proc", "/proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"tmpfs", "/dev", "mode=0755,size=1m", unix.MS_NOSUID},
		{"tmpfs", "/run", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/tmp", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
	}
	for _, x := range mounts {
		if err := unix.Mount(x.fstype, m+x.target, x.fstype, x.flags, x.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", x.fstype, x.target, err)
		}
	}
	if err := makeDev(m + "/dev"); err != nil {
		return err
	}
	for _, d := range []string{"/run/lock", "/run/user"} {
		if err := os.MkdirAll(m+d, 0o755); err != nil {
			return err
		}
	}
	unix.Chmod(m+"/run/lock", 0o1777)
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	short, _, _ := strings.Cut(hostname, ".")
	etc := map[string]string{
		"/etc/hostname": hostname + "\n",
		"/etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\t" + hostname + " " + short + "\n" +
			"::1\tlocalhost ip6-localhost ip6-loopback\n" + strings.TrimSpace(hosts) + "\n",
		"/etc/resolv.conf": "# debsys: no DNS leaves this system\nnameserver 127.0.0.1\n",
		// Maintainer scripts start nothing (System.AllowServices changes it).
		"/usr/sbin/policy-rc.d": "#!/bin/sh\n# debsys: maintainer scripts start no service.\nexit 101\n",
	}
	for p, content := range etc {
		os.Remove(m + p) // it may be a symlink to the host's /run
		perm := os.FileMode(0o644)
		if strings.HasSuffix(p, "policy-rc.d") {
			perm = 0o755
		}
		if err := os.WriteFile(m+p, []byte(content), perm); err != nil {
			return err
		}
	}
	if err := unix.Chroot(m); err != nil {
		return fmt.Errorf("chroot %s: %w", m, err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return loopbackUp()
}

// makeDev fills a tmpfs /dev with the nodes programs expect.
func makeDev(dev string) error {
	nodes := []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}
	for _, n := range nodes {
		if err := unix.Mknod(filepath.Join(dev, n.name), unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", n.name, err)
		}
		os.Chmod(filepath.Join(dev, n.name), 0o666)
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", dev+"/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	if err := unix.Mount("tmpfs", dev+"/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	links := map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp brings up lo, the namespace's only interface.
func loopbackUp() error {
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
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}
