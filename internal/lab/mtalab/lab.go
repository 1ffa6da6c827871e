// Package mtalab starts real MTAs on loopback for tlsgate's end-to-end
// tests: a private Postfix instance from Debian's package ([StartPostfix]),
// a Sendmail 8.17 run from Debian's .debs without installing them
// ([StartSendmail]) and SMTP sinks written in Go ([StartSink]). It is the
// heart of the lab (internal/lab).
//
// The recipe, and the pitfalls it avoids, are in
// shared/reference/real-mta-lab.md. In short:
//
//   - Everything listens on 127.0.0.1, on ports picked free at run time
//     ([FreePort]), so tests may run in parallel. Nothing binds port 25.
//   - Each MTA runs in a private mount namespace (unshare -m) where
//     /etc/resolv.conf says "nameserver 127.0.0.1", /etc/nsswitch.conf says
//     "hosts: files" and /etc/hosts lists the lab's names, so no DNS query
//     can leave the machine. If the namespace cannot be made the test fails;
//     it never runs an MTA without it.
//   - Postfix logs to a maillog file (maillog_file, postlogd). Sendmail only
//     logs through syslog(3); mtalab gives its namespace a private /dev (a
//     tmpfs with null, zero, random and urandom bound in) whose /dev/log is
//     a unix datagram socket served by the test process, which writes each
//     message as a line to the instance's maillog file.
//   - Processes are stopped by the PID in the MTA's pid file, never by name;
//     stragglers are found as the live processes left in the instance's
//     mount namespace and killed by PID. On this kind of machine PID 1 does
//     not reap orphans, so a stopped daemon may linger as a zombie; a
//     zombie counts as gone.
//
// The entry points take a [T]: a test passes its *testing.T, a program (the
// demo, the benchmark) a [Runner], so that no command links package
// testing.
//
// Root is required (Postfix's master and Sendmail run as root, and so does
// unshare -m). [Require], [RequirePostfix] and [RequireSendmail] skip a test
// when the MTAs are missing, or fail it when the environment has CI=true.
// scripts/install-test-deps.sh installs everything.
package mtalab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// InstallHint is the command that installs the lab's dependencies.
const InstallHint = "sudo scripts/install-test-deps.sh (from the repository root)"

// Require skips the test (or fails it when the environment has CI=true)
// unless both Postfix and Sendmail can be run; see [RequirePostfix] and
// [RequireSendmail].
func Require(t T) {
	t.Helper()
	RequirePostfix(t)
	RequireSendmail(t)
}

// RequirePostfix skips the test (or fails it when CI=true) unless this
// process runs as root and Postfix's commands and unshare are installed.
func RequirePostfix(t T) {
	t.Helper()
	if err := postfixAvailable(); err != nil {
		unavailable(t, err)
	}
}

// RequireSendmail skips the test (or fails it when CI=true) unless the
// extracted Sendmail is in the cache directory or can be put there (with
// apt-get download and dpkg -x); see [SendmailRoot].
func RequireSendmail(t T) {
	t.Helper()
	if _, err := SendmailRoot(); err != nil {
		unavailable(t, err)
	}
}

func unavailable(t T, err error) {
	t.Helper()
	msg := fmt.Sprintf("mtalab: %v; install with: %s", err, InstallHint)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s", msg)
	}
	t.Skipf("%s", msg)
}

func needRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (euid %d): Postfix's master, Sendmail and unshare -m need it", os.Geteuid())
	}
	return nil
}

var (
	unshareOnce sync.Once
	unshareErr  error
)

// checkUnshare verifies once per process that a private mount namespace
// with bind mounts can be made.
func checkUnshare() error {
	unshareOnce.Do(func() {
		if _, err := exec.LookPath("unshare"); err != nil {
			unshareErr = fmt.Errorf("unshare (util-linux) not found: %w", err)
			return
		}
		out, err := exec.Command("unshare", "-m", "--propagation", "private",
			"sh", "-c", "mount --bind /etc/hosts /etc/hosts").CombinedOutput()
		if err != nil {
			unshareErr = fmt.Errorf("unshare -m with bind mounts is not permitted here (%v: %s); "+
				"mtalab refuses to run an MTA without its private resolv.conf/hosts/nsswitch.conf, "+
				"because DNS queries could then leave the machine", err, bytes.TrimSpace(out))
		}
	})
	return unshareErr
}

// checkNameserver accepts the nameserver an MTA may be given: 127.0.0.1
// (nothing answers: names come from the private hosts file), or another
// loopback address when this process's network namespace has no interface
// but lo (the dnslab lab's namespace, where its validating resolver
// listens on 127.0.0.53), so that no DNS query can leave the machine.
func checkNameserver(ns string) error {
	if ns == "127.0.0.1" {
		return nil
	}
	a, err := netip.ParseAddr(ns)
	if err != nil || !a.Is4() || !a.IsLoopback() {
		return fmt.Errorf("nameserver %q: want an IPv4 loopback address", ns)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("nameserver %s: list interfaces: %w", ns, err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("nameserver %s: the network namespace has interface %q besides lo; a resolver here could send queries off the machine (run the test in the dnslab lab's namespace, dnslab.Main)", ns, i.Name)
		}
	}
	return nil
}

// nsFiles writes the private resolv.conf, hosts and nsswitch.conf into
// etcDir and returns the bind mounts (source, target) that put them over
// the system's files. resolv.conf names nameserver (see checkNameserver);
// with one other than 127.0.0.1 host names are looked up in DNS after the
// hosts file.
func nsFiles(etcDir, fqdn, nameserver string, extraHosts []string) ([][2]string, error) {
	if err := checkNameserver(nameserver); err != nil {
		return nil, err
	}
	hostsDB := "files"
	if nameserver != "127.0.0.1" {
		hostsDB = "files dns"
	}
	short, _ := os.Hostname()
	short, _, _ = strings.Cut(short, ".")
	var hosts strings.Builder
	hosts.WriteString("# mtalab private hosts file\n127.0.0.1\tlocalhost\n")
	fmt.Fprintf(&hosts, "127.0.0.1\t%s", fqdn)
	if short != "" && short != "localhost" && short != fqdn {
		fmt.Fprintf(&hosts, " %s", short)
	}
	hosts.WriteString("\n")
	for _, h := range extraHosts {
		hosts.WriteString(h + "\n")
	}
	files := map[string]string{
		"hosts":         hosts.String(),
		"resolv.conf":   "# mtalab: no DNS query may leave the machine\nnameserver " + nameserver + "\noptions timeout:1 attempts:1\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: " + hostsDB + "\nnetworks: files\nservices: files\nprotocols: files\n",
	}
	var binds [][2]string
	for _, name := range []string{"resolv.conf", "hosts", "nsswitch.conf"} {
		p := filepath.Join(etcDir, name)
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			return nil, err
		}
		binds = append(binds, [2]string{p, "/etc/" + name})
	}
	return binds, nil
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// nsScript returns a sh script that sets up the namespace and execs argv.
// devLog, if set, is a unix socket that becomes /dev/log on a private
// /dev (see the package doc); hostDev is an empty directory used while
// doing so.
func nsScript(binds [][2]string, devLog, hostDev string, env []string, argv []string) string {
	var b strings.Builder
	b.WriteString("set -e\nmount --make-rprivate /\n")
	for _, m := range binds {
		fmt.Fprintf(&b, "mount --bind %s %s\n", shq(m[0]), shq(m[1]))
	}
	if devLog != "" {
		fmt.Fprintf(&b, "mount --bind /dev %s\n", shq(hostDev))
		b.WriteString("mount -t tmpfs -o mode=755,size=1m mtalab-dev /dev\n")
		for _, d := range []string{"null", "zero", "random", "urandom"} {
			fmt.Fprintf(&b, ": > /dev/%s\nmount --bind %s /dev/%s\n", d, shq(filepath.Join(hostDev, d)), d)
		}
		fmt.Fprintf(&b, "umount %s\n", shq(hostDev))
		fmt.Fprintf(&b, ": > /dev/log\nmount --bind %s /dev/log\n", shq(devLog))
	}
	for _, e := range env {
		fmt.Fprintf(&b, "export %s\n", shq(e))
	}
	b.WriteString("exec")
	for _, a := range argv {
		b.WriteString(" " + shq(a))
	}
	b.WriteString("\n")
	return b.String()
}

// runNS runs argv inside a new private mount namespace set up by
// nsScript, waiting at most timeout.
func runNS(timeout time.Duration, binds [][2]string, devLog, hostDev string, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	script := nsScript(binds, devLog, hostDev, env, argv)
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	// Output goes to a file, not a pipe: a daemon that keeps its stdio
	// open must not make us wait for it.
	f, err := os.CreateTemp("", "mtalab-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	out, _ := os.ReadFile(f.Name())
	return string(out), err
}

var (
	portMu    sync.Mutex
	usedPorts = map[int]bool{}
)

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago and
// that this process has not handed out before. It fails the test if none
// can be found.
func FreePort(t T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

func freePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 50 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("mtalab: find a free port on 127.0.0.1: %w", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !usedPorts[p] {
			usedPorts[p] = true
			return p, nil
		}
	}
	return 0, errors.New("mtalab: no unused free port on 127.0.0.1 after 50 tries")
}

// listening reports whether something listens on 127.0.0.1:port (or
// 0.0.0.0:port), from /proc/net/tcp, without connecting (a probe
// connection would open a milter session).
func listening(port int) (bool, error) {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, fmt.Errorf("read /proc/net/tcp: %w", err)
	}
	want := []string{fmt.Sprintf("0100007F:%04X", port), fmt.Sprintf("00000000:%04X", port)}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		if f[1] == want[0] || f[1] == want[1] {
			return true, nil
		}
	}
	return false, nil
}

// waitListening waits until all ports listen.
func waitListening(ports []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, p := range ports {
		for {
			ok, err := listening(p)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on 127.0.0.1:%d after %v", p, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// proc identifies a process by PID and start time, so that a reused PID
// is not mistaken for it.
type proc struct {
	pid   int
	start string
}

// procStat returns the state letter and start time of pid.
func procStat(pid int) (state, start string, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", err
	}
	// The command name may contain spaces; fields follow the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return "", "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return "", "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f[0], f[19], nil
}

func newProc(pid int) (proc, error) {
	_, start, err := procStat(pid)
	if err != nil {
		return proc{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return proc{pid: pid, start: start}, nil
}

// alive reports whether p still runs: it exists, is the same process and
// is not a zombie.
func (p proc) alive() bool {
	if p.pid <= 0 {
		return false
	}
	state, start, err := procStat(p.pid)
	if err != nil || start != p.start {
		return false
	}
	return state != "Z" && state != "X"
}

func (p proc) signal(sig syscall.Signal) {
	if p.alive() {
		syscall.Kill(p.pid, sig)
	}
}

// waitGone waits until p is gone, up to timeout.
func (p proc) waitGone(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// mountNS returns the mount namespace of pid ("mnt:[4026...]").
func mountNS(pid int) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
}

// namespace is a process's mount namespace, held open by a descriptor.
// A namespace is known by its inode ("mnt:[4026...]"), and the kernel
// gives a freed inode number to the next namespace created: with tests
// running in parallel, a Sendmail's namespace that has just emptied can
// come back as another test's. Holding the descriptor keeps the namespace,
// and with it the number, ours until release, so that nsProcs and reapNS
// never see (or kill) another instance's processes.
type namespace struct {
	id  string
	pin *os.File
}

// pinNS opens and holds the mount namespace of pid.
func pinNS(pid int) (namespace, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return namespace{}, fmt.Errorf("mount namespace of %d: %w", pid, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return namespace{}, fmt.Errorf("mount namespace of %d: %w", pid, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		f.Close()
		return namespace{}, fmt.Errorf("mount namespace of %d: no inode", pid)
	}
	return namespace{id: fmt.Sprintf("mnt:[%d]", st.Ino), pin: f}, nil
}

// release lets the namespace go. Call it only after the last nsProcs or
// reapNS on it.
func (n *namespace) release() {
	if n.pin != nil {
		n.pin.Close()
		n.pin = nil
	}
}

// nsProcs lists the live processes in mount namespace ns.
func nsProcs(ns string) []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := mountNS(pid); err != nil || got != ns {
			continue
		}
		if p, err := newProc(pid); err == nil && p.alive() {
			out = append(out, p)
		}
	}
	return out
}

// reapNS waits up to timeout for the processes left in ns to exit, then
// kills the rest by PID. It returns the PIDs it had to kill.
func reapNS(ns string, timeout time.Duration) []int {
	if ns == "" {
		return nil
	}
	self, _ := mountNS(os.Getpid())
	if ns == self {
		return nil // never sweep our own namespace
	}
	deadline := time.Now().Add(timeout)
	for len(nsProcs(ns)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var killed []int
	for _, p := range nsProcs(ns) {
		p.signal(syscall.SIGKILL)
		killed = append(killed, p.pid)
	}
	for _, p := range nsProcs(ns) {
		p.waitGone(2 * time.Second)
	}
	return killed
}

// readPIDFile returns the PID on the first line of path.
func readPIDFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad first line %q", path, first)
	}
	return pid, nil
}

// maillog reads a log file written by an MTA.
type maillog struct{ path string }

func (l maillog) String() string {
	data, _ := os.ReadFile(l.path)
	return string(data)
}

// wait returns the first line at or after byte offset from that matches
// re, polling until timeout.
func (l maillog) wait(from int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		s := l.String()
		if from < len(s) {
			for _, line := range strings.Split(s[from:], "\n") {
				if re.MatchString(line) {
					return line, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("mtalab: no line matching %q in %s after %v; last lines:\n%s",
				re, l.path, timeout, l.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail returns the last n lines.
func (l maillog) tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// QueueEntry is one message in an MTA's queue.
type QueueEntry struct {
	// Queue is the queue the message is in: Postfix's "maildrop",
	// "incoming", "active", "deferred" or "hold"; for Sendmail "mqueue"
	// (or "quarantine" for a quarantined qf).
	Queue string
	// ID is the queue ID.
	ID string
	// Sender is the envelope sender ("" for the null sender).
	Sender string
	// Recipients are the recipients still to be delivered.
	Recipients []QueueRecipient
}

// QueueRecipient is a recipient in a queued message.
type QueueRecipient struct {
	// Address is the recipient address.
	Address string
	// Reason is why the last delivery attempt failed, for example
	// "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]";
	// "" if there was none yet. Sendmail keeps one status per message,
	// which is given for each recipient.
	Reason string
}

// waitQueue polls queue until cond holds for it and returns that queue.
func waitQueue(what string, queue func() ([]QueueEntry, error), cond func([]QueueEntry) bool, timeout time.Duration) ([]QueueEntry, error) {
	deadline := time.Now().Add(timeout)
	for {
		q, err := queue()
		if err != nil {
			return q, err
		}
		if cond(q) {
			return q, nil
		}
		if time.Now().After(deadline) {
			return q, fmt.Errorf("mtalab: %s queue: condition not met after %v; queue: %+v", what, timeout, q)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func queueEmpty(q []QueueEntry) bool { return len(q) == 0 }

// labDir makes a short private directory (unix socket paths are limited
// to 108 bytes, and t.TempDir paths can be long), mode 0755 so that the
// MTAs' unprivileged daemons can traverse it. It is removed at cleanup
// unless MTALAB_KEEP=1.
func labDir(t T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("mtalab: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("mtalab: %v", err)
	}
	t.Cleanup(func() {
		if os.Getenv("MTALAB_KEEP") == "1" {
			t.Logf("mtalab: kept %s (MTALAB_KEEP=1)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// nsListeners returns the local addresses ("127.0.0.1:10025", in
// /proc/net/tcp hex decoded) of the listening TCP sockets held by the
// processes of mount namespace ns, from /proc/net/tcp and tcp6.
func nsListeners(ns string) ([]string, error) {
	inodes := map[string]bool{}
	for _, p := range nsProcs(ns) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.pid, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	var out []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			if file == "/proc/net/tcp6" {
				continue // no IPv6
			}
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			out = append(out, decodeProcAddr(f[1]))
		}
	}
	return out, nil
}

// decodeProcAddr turns "0100007F:2745" into "127.0.0.1:10053"; IPv6
// addresses are returned as "[hex]:port".
func decodeProcAddr(s string) string {
	hexIP, hexPort, _ := strings.Cut(s, ":")
	port, _ := strconv.ParseUint(hexPort, 16, 16)
	if len(hexIP) == 8 {
		v, _ := strconv.ParseUint(hexIP, 16, 32)
		return fmt.Sprintf("%d.%d.%d.%d:%d", byte(v), byte(v>>8), byte(v>>16), byte(v>>24), port)
	}
	return fmt.Sprintf("[%s]:%d", hexIP, port)
}

// observer gives an MTA instance its log and queue helpers; Postfix and
// Sendmail embed it.
type observer struct {
	what  string // "Postfix DIR", for error messages
	log   maillog
	queue func() ([]QueueEntry, error)
}

// WaitQueueEmpty waits until the MTA's queue is empty.
func (o *observer) WaitQueueEmpty(timeout time.Duration) error {
	_, err := waitQueue(o.what, o.queue, queueEmpty, timeout)
	return err
}

// WaitQueue polls the queue until cond returns true for it and returns
// that queue; after timeout it returns the last queue and an error. Use
// it rather than reading the queue right after a log line: the MTA may
// not have rewritten its queue file yet.
func (o *observer) WaitQueue(cond func([]QueueEntry) bool, timeout time.Duration) ([]QueueEntry, error) {
	return waitQueue(o.what, o.queue, cond, timeout)
}

// Log returns everything the MTA logged so far.
func (o *observer) Log() string { return o.log.String() }

// LogMark returns the current length of the log, for WaitLogAfter.
func (o *observer) LogMark() int { return len(o.log.String()) }

// WaitLog waits until a log line matches re and returns it; the error
// carries the last lines of the log.
func (o *observer) WaitLog(re *regexp.Regexp, timeout time.Duration) (string, error) {
	return o.log.wait(0, re, timeout)
}

// WaitLogAfter is WaitLog for lines after byte offset mark.
func (o *observer) WaitLogAfter(mark int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	return o.log.wait(mark, re, timeout)
}
