package debsys

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func need(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// TestSystem: the system is private (host name, hosts, network, files)
// and what it writes lands in the upper layer only.
func TestSystem(t *testing.T) {
	need(t)
	s := New(t, Options{Hosts: []string{"127.0.0.2 sink.partner.test"}})
	if got := strings.TrimSpace(s.Run(t, "hostname")); got != "mx.lab.test" {
		t.Errorf("hostname %q", got)
	}
	if got := s.Run(t, "getent hosts sink.partner.test"); !strings.HasPrefix(got, "127.0.0.2") {
		t.Errorf("getent hosts sink.partner.test = %q", got)
	}
	if got := strings.Fields(s.Run(t, "ls /sys/class/net")); len(got) != 1 || got[0] != "lo" {
		t.Errorf("interfaces %v, want only lo", got)
	}
	if got := s.Run(t, "cat /sys/class/net/lo/operstate; cat /etc/resolv.conf"); !strings.Contains(got, "nameserver 127.0.0.1") {
		t.Errorf("resolv.conf: %q", got)
	}
	if got := s.Run(t, "echo $$; readlink /proc/1/exe"); !strings.Contains(got, filepath.Base(os.Args[0])) {
		t.Errorf("PID 1 is not the test binary: %q", got)
	}
	s.Run(t, "echo probe >/etc/debsys-probe; rm /etc/debian_version; mkdir -p /var/lib/debsys-probe")
	if _, err := os.Stat("/etc/debsys-probe"); err == nil {
		t.Fatal("a file written in the system appeared on the host")
	}
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		t.Fatalf("a file removed in the system vanished on the host: %v", err)
	}
	if b, err := s.ReadFile("/etc/debsys-probe"); err != nil || string(b) != "probe\n" {
		t.Errorf("ReadFile: %q %v", b, err)
	}
	ch, err := s.Changes()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"/etc/debsys-probe": false, "/etc/debian_version": true, "/var/lib/debsys-probe": false}
	for _, c := range ch {
		if del, ok := want[c.Path]; ok {
			if c.Deleted != del {
				t.Errorf("%s: deleted %v, want %v", c.Path, c.Deleted, del)
			}
			delete(want, c.Path)
		}
		if strings.HasPrefix(c.Path, "/run/") || strings.HasPrefix(c.Path, "/tmp/") {
			t.Errorf("tmpfs path in the upper layer: %s", c.Path)
		}
	}
	if len(want) > 0 {
		t.Errorf("Changes misses %v", want)
	}

	// policy-rc.d denies every service, then only the allowed ones.
	if out, _ := s.Sh("/usr/sbin/policy-rc.d postfix start || echo rc=$?"); !strings.Contains(out, "rc=101") {
		t.Errorf("policy-rc.d: %q", out)
	}
	if err := s.AllowServices("tlsgate"); err != nil {
		t.Fatal(err)
	}
	if out, _ := s.Sh("/usr/sbin/policy-rc.d tlsgate.service start && echo a=$?; /usr/sbin/policy-rc.d postfix start || echo b=$?"); !strings.Contains(out, "a=0") || !strings.Contains(out, "b=101") {
		t.Errorf("policy-rc.d with tlsgate allowed: %q", out)
	}

	// A listener made in the system's network namespace serves the
	// system's loopback.
	var ln net.Listener
	if err := s.InNetNS(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.2:25"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
	}()
	s.Run(t, "bash -c 'exec 3<>/dev/tcp/127.0.0.2/25 && echo hello >&3'")
	select {
	case l := <-got:
		if l != "hello\n" {
			t.Errorf("listener read %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Error("the system could not reach the listener")
	}

	dir, pid := s.dir, s.PID()
	s.Close()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left behind", dir)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if !strings.Contains(string(b), ") Z ") {
			t.Errorf("init %d still running", pid)
		}
	}
}

// TestSystemctlShim: the shim runs a unit as its unit file says: the
// condition, Type=notify, User=, Group=, UMask=, ExecReload= with
// $MAINPID, stop; enable and is-enabled go to the real systemctl.
func TestSystemctlShim(t *testing.T) {
	need(t)
	s := New(t, Options{})
	if err := s.InstallSystemctl(); err != nil {
		t.Fatal(err)
	}
	unit := `[Unit]
Description=debsys probe
ConditionPathExists=/etc/probe.conf

[Service]
Type=notify
User=nobody
Group=nogroup
UMask=0027
Environment="GREETING=hello there"
ExecStart=/bin/sh -c 'umask >/tmp/probe.umask; id -u >/tmp/probe.uid; id -g >/tmp/probe.gid; echo "$GREETING" >/tmp/probe.env; systemd-notify --ready; exec sleep 1000'
ExecReload=/bin/sh -c 'echo reloaded $MAINPID by $(id -u) >/tmp/probe.reload'

[Install]
WantedBy=multi-user.target
`
	if err := s.WriteFile("/etc/systemd/system/probe.service", []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := s.Run(t, "command -v systemctl; systemctl start probe 2>/dev/null; systemctl is-active probe || true"); !strings.Contains(out, "/usr/bin/systemctl") || !strings.Contains(out, "inactive") {
		t.Fatalf("without /etc/probe.conf: %q", out)
	}
	s.Run(t, "touch /etc/probe.conf; systemctl start probe.service")
	if out := s.Run(t, "systemctl is-active probe; cat /tmp/probe.umask /tmp/probe.uid /tmp/probe.gid /tmp/probe.env"); out != "active\n0027\n65534\n65534\nhello there\n" {
		t.Errorf("running unit: %q", out)
	}
	pid, ok := 0, false
	if b, err := s.ReadFile(shimRunDir + "/probe.service.pid"); err == nil {
		f := strings.Fields(string(b))
		pid, _ = strconv.Atoi(f[0])
		ok = pid > 0
	}
	if !ok {
		t.Fatal("no pid file")
	}
	s.Run(t, "systemctl reload probe")
	if b, _ := s.ReadFile("/tmp/probe.reload"); !strings.Contains(string(b), "reloaded ") || !strings.Contains(string(b), " by 65534") {
		t.Errorf("reload wrote %q", b)
	}
	s.Run(t, "systemctl stop probe")
	if out, _ := s.Sh("systemctl is-active probe || echo rc=$?"); out != "inactive\nrc=3\n" {
		t.Errorf("after stop: %q", out)
	}
	s.Run(t, "systemctl try-restart probe")
	if out, _ := s.Sh("systemctl -q is-active probe || echo rc=$?"); out != "rc=3\n" {
		t.Errorf("try-restart started a stopped unit: %q", out)
	}
	s.Run(t, "systemctl restart probe")
	if out := s.Run(t, "systemctl is-active probe"); out != "active\n" {
		t.Errorf("restart: %q", out)
	}
	if out := s.Run(t, "systemctl enable probe 2>&1; systemctl is-enabled probe"); !strings.Contains(out, "enabled") {
		t.Errorf("enable via the real systemctl: %q", out)
	}
	if _, err := os.Lstat(s.Path("/etc/systemd/system/multi-user.target.wants/probe.service")); err != nil {
		t.Errorf("enable made no link: %v", err)
	}
}

// TestSystemctlShimSysV: a service with only an init script (Debian's
// sendmail) is started, stopped and asked through its script, with
// SYSTEMCTL_SKIP_REDIRECT set so that the script does not hand the call
// back to systemctl.
func TestSystemctlShimSysV(t *testing.T) {
	need(t)
	s := New(t, Options{})
	if err := s.InstallSystemctl(); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
echo "$1 redirect=${SYSTEMCTL_SKIP_REDIRECT:-no}" >>/tmp/sysvprobe.calls
case "$1" in
start) (setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! >/run/sysvprobe.pid) ;;
stop) kill "$(cat /run/sysvprobe.pid)"; rm -f /run/sysvprobe.pid ;;
restart) "$0" stop; "$0" start ;;
status) [ -f /run/sysvprobe.pid ] && kill -0 "$(cat /run/sysvprobe.pid)" ;;
*) exit 3 ;;
esac
`
	if err := s.WriteFile("/etc/init.d/sysvprobe", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, _ := s.Sh("systemctl is-active sysvprobe || true; systemctl start sysvprobe; systemctl is-active sysvprobe; systemctl try-restart sysvprobe.service; systemctl stop sysvprobe; systemctl is-active sysvprobe || echo rc=$?")
	if out != "inactive\nactive\ninactive\nrc=3\n" {
		t.Errorf("systemctl on an init script: %q", out)
	}
	calls := s.Run(t, "cat /tmp/sysvprobe.calls")
	if !strings.Contains(calls, "start redirect=1") || !strings.Contains(calls, "restart redirect=1") || strings.Contains(calls, "redirect=no") {
		t.Errorf("init script calls:\n%s", calls)
	}
}

// TestAptInstall: FetchDebs downloads on the host what the system lacks,
// and AptInstall installs it in the system, where installing Sendmail
// replaces Postfix; the host keeps its Postfix. The first run needs the
// network (apt-get on the host), so it runs only with
// TLSGATE_DEBSYS_APT=1.
func TestAptInstall(t *testing.T) {
	need(t)
	if os.Getenv("TLSGATE_DEBSYS_APT") != "1" {
		t.Skip("fetches packages with apt-get on the host; set TLSGATE_DEBSYS_APT=1")
	}
	FetchDebs(t, "sendmail")
	s := New(t, Options{})
	out := s.AptInstall(t, false, "sendmail")
	t.Logf("apt-get install sendmail:\n%s", out)
	if got := s.Run(t, "dpkg-query -W -f='${Status}' sendmail-bin; echo; dpkg-query -W -f='${Status}' postfix 2>&1 || true"); !strings.HasPrefix(got, "install ok installed\n") || strings.Contains(got, "\ninstall ok installed") {
		t.Errorf("in the system: %q, want sendmail-bin installed and postfix gone", got)
	}
	if out, _ := s.Sh("pgrep -x sendmail-mta || pgrep -x sendmail || echo none"); strings.TrimSpace(out) != "none" {
		t.Errorf("a maintainer script started Sendmail despite policy-rc.d: %s", out)
	}
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		t.Errorf("the host lost its Postfix: %v", err)
	}
	if _, err := os.Stat("/usr/lib/sm.bin/sendmail"); err == nil {
		t.Error("Sendmail appeared on the host")
	}
}
