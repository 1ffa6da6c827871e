package debsys

// The systemctl shim: a stand-in for systemctl inside a System, where
// systemd is not PID 1 and the real systemctl can only edit unit files.
// It is this test binary, put in place of /usr/bin/systemctl by
// InstallSystemctl, and it runs the real unit file's ExecStart, so a test
// exercises the unit that ships.
//
// Verbs it carries out itself: start, stop, restart, try-restart, reload,
// reload-or-restart, try-reload-or-restart, is-active, status and
// daemon-reload (a no-op: the unit file is read at every call). A service
// with no unit file but an init script in /etc/init.d (Debian's sendmail)
// is run through its script, as systemd-sysv-generator's unit would
// (forking daemons included). Every
// other verb (enable, disable, is-enabled, preset, mask, unmask, cat, ...)
// and every call with --root, --user or --global goes to the real
// systemctl, which does those without a running systemd (with --root=/
// added, so that it never looks for one).
//
// From the unit file and its drop-ins (NAME.d/*.conf in the unit
// directories) start honours: ConditionPathExists= (an unmet condition
// skips the start and succeeds, as with systemd), Type= simple, exec or
// notify (NOTIFY_SOCKET is set and start waits for READY=1, like systemd),
// User=, Group= (with the user's supplementary groups, as systemd sets
// them), UMask=, Environment=, WorkingDirectory= and ExecStart=; reload
// runs ExecReload= with $MAINPID as the service's user; stop sends SIGTERM
// to the main process and SIGKILL after TimeoutStopSec= (default 90s).
// It does NOT apply any sandboxing (ProtectSystem=, ReadWritePaths=,
// SystemCallFilter=, CapabilityBoundingSet=, ...), Restart=, resource
// limits or dependencies: what those do is only proved on a real systemd.
// The service's stdout and stderr go to /var/log/debsys-systemctl/NAME.log
// (so JOURNAL_STREAM is not set); the main PID is kept in
// /run/debsys-systemctl/NAME.pid.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ShimLogDir is where the systemctl shim writes each service's output
// (NAME.log, e.g. /var/log/debsys-systemctl/tlsgate.service.log).
const ShimLogDir = "/var/log/debsys-systemctl"

const shimRunDir = "/run/debsys-systemctl"

// realSystemctl is where InstallSystemctl moves the system's own
// systemctl; the shim hands it the verbs it does not carry out itself.
const realSystemctl = "/usr/lib/debsys/systemctl.real"

// InstallSystemctl replaces the system's /usr/bin/systemctl with the
// systemctl shim (this test binary; see systemctl.go) and keeps the real
// one as /usr/lib/debsys/systemctl.real. It replaces rather than shadows
// it because apt runs maintainer scripts with a PATH of its own.
func (s *System) InstallSystemctl() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	if _, err := os.Stat(s.Path(realSystemctl)); err != nil {
		if err := os.MkdirAll(filepath.Dir(s.Path(realSystemctl)), 0o755); err != nil {
			return err
		}
		if err := os.Rename(s.Path("/usr/bin/systemctl"), s.Path(realSystemctl)); err != nil {
			return err
		}
	}
	return s.WriteFile("/usr/bin/systemctl", b, 0o755)
}

// ShimLog returns what the unit's processes have written so far under the
// systemctl shim.
func (s *System) ShimLog(unit string) string {
	b, _ := s.ReadFile(ShimLogDir + "/" + unitName(unit) + ".log")
	return string(b)
}

func systemctlMain(args []string) int {
	var verb string
	var units []string
	quiet := false
	for _, a := range args {
		switch {
		case a == "--root" || strings.HasPrefix(a, "--root=") || a == "--user" || a == "--global":
			return delegate(args)
		case a == "-q" || a == "--quiet":
			quiet = true
		case strings.HasPrefix(a, "-"):
			// --system, --no-block, --no-pager, --full, ...: no meaning here.
		case verb == "":
			verb = a
		default:
			units = append(units, unitName(a))
		}
	}
	say := func(format string, a ...any) {
		if !quiet {
			fmt.Printf(format, a...)
		}
	}
	if len(units) == 1 {
		if script, ok := sysvScript(units[0]); ok {
			if rc, handled := runSysV(script, verb, quiet); handled {
				return rc
			}
		}
	}
	var do func(u *unitFile) error
	switch verb {
	case "daemon-reload":
		return 0
	case "is-active":
		rc := 3
		for _, name := range units {
			if _, ok := mainPID(name); ok {
				say("active\n")
				rc = 0
			} else {
				say("inactive\n")
			}
		}
		return rc
	case "status":
		return status(units)
	case "start":
		do = start
	case "stop":
		do = stop
	case "restart":
		do = func(u *unitFile) error {
			if err := stop(u); err != nil {
				return err
			}
			return start(u)
		}
	case "try-restart":
		do = func(u *unitFile) error {
			if _, ok := mainPID(u.name); !ok {
				return nil
			}
			if err := stop(u); err != nil {
				return err
			}
			return start(u)
		}
	case "reload":
		do = reload
	case "reload-or-restart", "try-reload-or-restart":
		do = func(u *unitFile) error {
			if _, ok := mainPID(u.name); !ok {
				if verb == "try-reload-or-restart" {
					return nil
				}
				return start(u)
			}
			if len(u.get("ExecReload")) == 0 {
				if err := stop(u); err != nil {
					return err
				}
				return start(u)
			}
			return reload(u)
		}
	default:
		return delegate(args)
	}
	if len(units) == 0 {
		fmt.Fprintf(os.Stderr, "systemctl (debsys shim): %s needs a unit\n", verb)
		return 1
	}
	for _, name := range units {
		u, err := loadUnit(name)
		if err == nil {
			err = do(u)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "systemctl (debsys shim): %s %s: %v\n", verb, name, err)
			return 1
		}
	}
	return 0
}

// sysvScript returns the init script of a service that has no unit file,
// as systemd-sysv-generator would wrap it (Debian's sendmail has only
// /etc/init.d/sendmail).
func sysvScript(name string) (string, bool) {
	if _, err := loadUnit(name); err == nil {
		return "", false
	}
	script := "/etc/init.d/" + strings.TrimSuffix(name, ".service")
	fi, err := os.Stat(script)
	return script, err == nil && fi.Mode()&0o111 != 0
}

// runSysV carries out verb with an init script, as systemd does for a
// generated unit: the script's own verbs, try-restart only when it is
// running, is-active from its status. SYSTEMCTL_SKIP_REDIRECT keeps
// Debian's init-functions from handing the call back to systemctl. It
// reports false for the verbs it does not carry out.
func runSysV(script, verb string, quiet bool) (int, bool) {
	run := func(arg string, out bool) int {
		cmd := exec.Command(script, arg)
		cmd.Env = append(os.Environ(), "SYSTEMCTL_SKIP_REDIRECT=1")
		if out {
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		}
		if err := cmd.Run(); err != nil {
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				return ee.ExitCode()
			}
			fmt.Fprintln(os.Stderr, "systemctl (debsys shim):", err)
			return 1
		}
		return 0
	}
	switch verb {
	case "start", "stop", "restart", "reload", "force-reload", "status":
		return run(verb, true), true
	case "reload-or-restart":
		return run("reload", true), true
	case "try-restart", "try-reload-or-restart":
		if run("status", false) != 0 {
			return 0, true
		}
		return run("restart", true), true
	case "is-active":
		if run("status", false) == 0 {
			if !quiet {
				fmt.Println("active")
			}
			return 0, true
		}
		if !quiet {
			fmt.Println("inactive")
		}
		return 3, true
	}
	return 0, false
}

// delegate runs the real systemctl, offline (--root=/ unless the caller
// chose a root): maintainer scripts see /run/systemd/system and would
// otherwise make it look for a running systemd.
func delegate(args []string) int {
	offline := true
	for _, a := range args {
		if a == "--root" || strings.HasPrefix(a, "--root=") || a == "--user" || a == "--global" {
			offline = false
		}
	}
	if offline {
		args = append([]string{"--root=/"}, args...)
	}
	cmd := exec.Command(realSystemctl, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "systemctl (debsys shim):", err)
		return 1
	}
	return 0
}

func unitName(n string) string {
	if !strings.Contains(n, ".") {
		return n + ".service"
	}
	return n
}

// unitFile is a parsed unit: every assignment of every section, in order,
// unit file first, then drop-ins by name.
type unitFile struct {
	name string
	path string
	vals map[string][]string // "Section.Key" and "Key" (first section that has it)
}

var unitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"}

func loadUnit(name string) (*unitFile, error) {
	u := &unitFile{name: name, vals: map[string][]string{}}
	for _, d := range unitDirs {
		p := filepath.Join(d, name)
		if t, err := os.Readlink(p); err == nil && t == "/dev/null" {
			return nil, fmt.Errorf("unit %s is masked", name)
		}
		if _, err := os.Stat(p); err == nil {
			u.path = p
			break
		}
	}
	if u.path == "" {
		return nil, fmt.Errorf("unit %s not found", name)
	}
	files := []string{u.path}
	var dropins []string
	seen := map[string]bool{}
	for _, d := range unitDirs {
		ms, _ := filepath.Glob(filepath.Join(d, name+".d", "*.conf"))
		for _, m := range ms {
			if !seen[filepath.Base(m)] {
				seen[filepath.Base(m)] = true
				dropins = append(dropins, m)
			}
		}
	}
	// Drop-ins apply in the order of their file names.
	sort.Slice(dropins, func(i, j int) bool { return filepath.Base(dropins[i]) < filepath.Base(dropins[j]) })
	files = append(files, dropins...)
	for _, f := range files {
		if err := u.parse(f); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (u *unitFile) parse(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	section := ""
	var cont strings.Builder
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if cont.Len() > 0 {
			line = cont.String() + " " + line
			cont.Reset()
		}
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\"))
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return fmt.Errorf("%s: cannot parse %q", path, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			key := section + "." + k
			if v == "" { // an empty assignment resets the list
				u.vals[key] = nil
				continue
			}
			u.vals[key] = append(u.vals[key], v)
		}
	}
	return nil
}

// get returns the values of Service.KEY, or Unit.KEY when the service
// section has none.
func (u *unitFile) get(key string) []string {
	if v := u.vals["Service."+key]; len(v) > 0 {
		return v
	}
	return u.vals["Unit."+key]
}

func (u *unitFile) last(key, def string) string {
	if v := u.get(key); len(v) > 0 {
		return v[len(v)-1]
	}
	return def
}

// pidFile holds "PID STARTTIME" so that a reused PID is not mistaken for
// the service.
func pidFile(name string) string { return filepath.Join(shimRunDir, name+".pid") }

func startTime(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is the state (field 3), f[19] the start time (field 22).
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return "", false
	}
	return f[19], true
}

func mainPID(name string) (int, bool) {
	b, err := os.ReadFile(pidFile(name))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, false
	}
	st, ok := startTime(pid)
	return pid, ok && st == f[1]
}

// credential is the unit's User= and Group= with the supplementary groups
// of User=, as systemd sets them; nil for root.
func credential(u *unitFile) (*syscall.Credential, map[string]string, error) {
	env := map[string]string{"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh"}
	name := u.last("User", "")
	if name == "" {
		return nil, env, nil
	}
	usr, err := user.Lookup(name)
	if err != nil {
		return nil, nil, fmt.Errorf("User=%s: %w", name, err)
	}
	uid, _ := strconv.ParseUint(usr.Uid, 10, 32)
	gid, _ := strconv.ParseUint(usr.Gid, 10, 32)
	if g := u.last("Group", ""); g != "" {
		grp, err := user.LookupGroup(g)
		if err != nil {
			return nil, nil, fmt.Errorf("Group=%s: %w", g, err)
		}
		gid, _ = strconv.ParseUint(grp.Gid, 10, 32)
	}
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, err := usr.GroupIds()
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil {
			c.Groups = append(c.Groups, uint32(n))
		}
	}
	env["HOME"], env["USER"], env["LOGNAME"] = usr.HomeDir, usr.Username, usr.Username
	env["SHELL"] = "/usr/sbin/nologin"
	return c, env, nil
}

// splitCommand splits an Exec line the way systemd does for plain words
// and quotes, and expands $NAME and ${NAME} from env.
func splitCommand(line string, env map[string]string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote, inWord = c, true
		case quote == 0 && (c == ' ' || c == '\t'):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unbalanced quote in %q", line)
	}
	if inWord {
		out = append(out, cur.String())
	}
	for i, w := range out {
		out[i] = os.Expand(w, func(k string) string { return env[k] })
	}
	if len(out) == 0 {
		return nil, errors.New("empty command")
	}
	if strings.ContainsAny(out[0][:1], "-@:+!") {
		return nil, fmt.Errorf("the shim does not support the prefix of %q", out[0])
	}
	return out, nil
}

func conditionsMet(u *unitFile) bool {
	for _, c := range u.vals["Unit.ConditionPathExists"] {
		neg := strings.HasPrefix(c, "!")
		_, err := os.Stat(strings.TrimPrefix(c, "!"))
		if (err == nil) == neg {
			return false
		}
	}
	return true
}

func serviceEnv(u *unitFile, base map[string]string) ([]string, map[string]string) {
	m := map[string]string{"PATH": defaultPath, "LANG": "C.UTF-8"}
	for k, v := range base {
		m[k] = v
	}
	for _, e := range u.get("Environment") {
		words, _ := splitCommand(e, nil)
		for _, w := range words {
			if k, v, ok := strings.Cut(w, "="); ok {
				m[k] = v
			}
		}
	}
	var env []string
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env, m
}

func start(u *unitFile) error {
	if _, ok := mainPID(u.name); ok {
		return nil
	}
	if !conditionsMet(u) {
		// systemd skips the start, and systemctl start succeeds.
		fmt.Fprintf(os.Stderr, "systemctl (debsys shim): %s: a Condition is not met, not started\n", u.name)
		return nil
	}
	cred, base, err := credential(u)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(shimRunDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(ShimLogDir, 0o755); err != nil {
		return err
	}
	typ := u.last("Type", "simple")
	var notify *net.UnixConn
	if typ == "notify" || typ == "notify-reload" {
		sock := filepath.Join(shimRunDir, u.name+".notify")
		os.Remove(sock)
		notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			return err
		}
		defer func() { notify.Close(); os.Remove(sock) }()
		os.Chmod(sock, 0o777)
		base["NOTIFY_SOCKET"] = sock
	} else if typ != "simple" && typ != "exec" {
		return fmt.Errorf("Type=%s is not supported by the shim", typ)
	}
	env, envMap := serviceEnv(u, base)
	argv, err := splitCommand(u.last("ExecStart", ""), envMap)
	if err != nil {
		return fmt.Errorf("ExecStart: %w", err)
	}
	log, err := os.OpenFile(filepath.Join(ShimLogDir, u.name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "-- debsys shim: start %s: %s --\n", u.name, strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
	cmd.Dir = u.last("WorkingDirectory", "/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	if m := u.last("UMask", ""); m != "" {
		n, err := strconv.ParseUint(m, 8, 32)
		if err != nil {
			return fmt.Errorf("UMask=%s: %w", m, err)
		}
		unix.Umask(int(n))
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	st, _ := startTime(pid)
	if err := os.WriteFile(pidFile(u.name), []byte(fmt.Sprintf("%d %s\n", pid, st)), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if notify == nil {
		// Type=simple/exec: started once it runs; a quick failure is
		// still reported.
		select {
		case err := <-exited:
			return fmt.Errorf("exited at once (%v); see %s", err, log.Name())
		case <-time.After(200 * time.Millisecond):
		}
		cmd.Process.Release()
		return nil
	}
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := notify.ReadFromUnix(buf)
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == "READY=1" {
					close(ready)
					return
				}
			}
		}
	}()
	timeout := parseSec(u.last("TimeoutStartSec", "90"), 90*time.Second)
	select {
	case <-ready:
		cmd.Process.Release()
		return nil
	case err := <-exited:
		os.Remove(pidFile(u.name))
		return fmt.Errorf("exited before READY=1 (%v); see %s", err, log.Name())
	case <-time.After(timeout):
		cmd.Process.Kill()
		return fmt.Errorf("no READY=1 within %v", timeout)
	}
}

func parseSec(v string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	return def
}

func stop(u *unitFile) error {
	pid, ok := mainPID(u.name)
	if !ok {
		os.Remove(pidFile(u.name))
		return nil
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	deadline := time.Now().Add(parseSec(u.last("TimeoutStopSec", "90"), 90*time.Second))
	for time.Now().Before(deadline) {
		if _, alive := mainPID(u.name); !alive {
			os.Remove(pidFile(u.name))
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	unix.Kill(pid, unix.SIGKILL)
	os.Remove(pidFile(u.name))
	return nil
}

func reload(u *unitFile) error {
	pid, ok := mainPID(u.name)
	if !ok {
		return errors.New("not active, cannot reload")
	}
	lines := u.get("ExecReload")
	if len(lines) == 0 {
		return errors.New("the unit has no ExecReload=")
	}
	cred, base, err := credential(u)
	if err != nil {
		return err
	}
	base["MAINPID"] = strconv.Itoa(pid)
	env, envMap := serviceEnv(u, base)
	for _, l := range lines {
		argv, err := splitCommand(l, envMap)
		if err != nil {
			return fmt.Errorf("ExecReload: %w", err)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ExecReload %s: %v: %s", l, err, out)
		}
	}
	return nil
}

func status(units []string) int {
	rc := 0
	for _, name := range units {
		u, err := loadUnit(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			rc = 4
			continue
		}
		fmt.Printf("* %s - %s\n     Loaded: loaded (%s)\n", name, u.last("Description", name), u.path)
		if pid, ok := mainPID(name); ok {
			fmt.Printf("     Active: active (running) (debsys shim)\n   Main PID: %d\n", pid)
		} else {
			fmt.Printf("     Active: inactive (dead) (debsys shim)\n")
			rc = 3
		}
		f, err := os.Open(filepath.Join(ShimLogDir, name+".log"))
		if err != nil {
			continue
		}
		var tail []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			tail = append(tail, sc.Text())
			if len(tail) > 10 {
				tail = tail[1:]
			}
		}
		f.Close()
		fmt.Println()
		for _, l := range tail {
			fmt.Println(l)
		}
	}
	return rc
}
