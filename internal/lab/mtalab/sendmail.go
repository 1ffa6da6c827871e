package mtalab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// sendmailPkgs are the Debian packages whose files make a runnable
// Sendmail; libwrap0 is a dependency that dpkg -x does not pull.
var sendmailPkgs = []string{"sendmail-bin", "sendmail-cf", "sendmail-base", "libwrap0"}

// CacheDir returns the directory holding Sendmail's .debs (debs/) and
// their extraction (sendmail-root/): $TLSGATE_LAB_CACHE, by default
// /var/cache/tlsgate-lab. scripts/install-test-deps.sh fills the same
// directory.
func CacheDir() string {
	if d := os.Getenv("TLSGATE_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/tlsgate-lab"
}

// sendmailBin is the daemon binary inside the extracted root.
const sendmailBin = "usr/libexec/sendmail/sendmail"

var sendmailMu sync.Mutex

// SendmailRoot returns the directory into which Sendmail's .debs are
// extracted (CacheDir()/sendmail-root). If it is not complete yet, it
// downloads the .debs with apt-get download into CacheDir()/debs (reusing
// any there), extracts them with dpkg -x and clears the setgid bit of the
// binary (with it, the loader ignores LD_LIBRARY_PATH and libwrap.so.0 is
// not found). It locks CacheDir()/.lock so that parallel test processes
// do this once.
func SendmailRoot() (string, error) {
	cache := CacheDir()
	root := filepath.Join(cache, "sendmail-root")
	if sendmailReady(root) {
		return root, nil
	}
	if err := needRoot(); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("m4"); err != nil {
		return "", fmt.Errorf("m4 not found (needed to build sendmail.cf): %w", err)
	}
	sendmailMu.Lock()
	defer sendmailMu.Unlock()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("Sendmail cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("Sendmail cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("Sendmail cache: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if sendmailReady(root) {
		return root, nil
	}

	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", fmt.Errorf("Sendmail cache: %w", err)
	}
	files, missing := globDebs(debs)
	if len(missing) > 0 {
		if _, err := exec.LookPath("apt-get"); err != nil {
			return "", fmt.Errorf("Sendmail .debs %v not in %s and no apt-get: %w", missing, debs, err)
		}
		// apt-get download fetches as user _apt, which must be able to
		// write here; without that user apt downloads as root.
		_ = exec.Command("chown", "_apt", debs).Run()
		cmd := exec.Command("apt-get", append([]string{"download"}, missing...)...)
		cmd.Dir = debs
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get download %v in %s: %w: %s", missing, debs, err, bytes.TrimSpace(out))
		}
		if files, missing = globDebs(debs); len(missing) > 0 {
			return "", fmt.Errorf("apt-get download left no .deb of %v in %s", missing, debs)
		}
	}
	return extractSendmail(root, files)
}

// globDebs finds the .debs of sendmailPkgs in dir.
func globDebs(dir string) (files, missing []string) {
	for _, p := range sendmailPkgs {
		m, _ := filepath.Glob(filepath.Join(dir, p+"_*.deb"))
		if len(m) == 0 {
			missing = append(missing, p)
		}
		files = append(files, m...)
	}
	return files, missing
}

func extractSendmail(root string, debs []string) (string, error) {
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	for _, d := range debs {
		if out, err := exec.Command("dpkg", "-x", d, tmp).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg -x %s %s: %w: %s", d, tmp, err, bytes.TrimSpace(out))
		}
	}
	if err := os.Chmod(filepath.Join(tmp, sendmailBin), 0o755); err != nil {
		return "", fmt.Errorf("clear setgid of the extracted sendmail: %w", err)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	if !sendmailReady(root) {
		return "", fmt.Errorf("extracted Sendmail in %s is not usable", root)
	}
	return root, nil
}

// sendmailReady reports whether root holds a complete extraction with a
// binary that is not setgid.
func sendmailReady(root string) bool {
	if _, err := os.Stat(filepath.Join(root, ".complete")); err != nil {
		return false
	}
	st, err := os.Stat(filepath.Join(root, sendmailBin))
	if err != nil || st.Mode()&os.ModeSetgid != 0 {
		return false
	}
	_, err = os.Stat(filepath.Join(root, "usr/share/sendmail/cf/m4/cf.m4"))
	return err == nil
}

// SendmailOptions configure [StartSendmail].
type SendmailOptions struct {
	// Hostname is $j (confDOMAIN_NAME). Default: "sm.lab.test".
	Hostname string
	// SmartHostPort, if not 0, sends all mail to esmtp:[127.0.0.1] on
	// this port (SMART_HOST plus ESMTP_MAILER_ARGS "TCP $h PORT"), for
	// example a [Sink]'s port. Default: 0: mail would go by MX, which
	// cannot be resolved in the lab, so it stays queued.
	SmartHostPort int
	// Milter is the S= socket of an INPUT_MAIL_FILTER named "labmilter",
	// for example "inet:10030@127.0.0.1" or "unix:/run/x.sock".
	// Default: "" (none).
	Milter string
	// MilterFlags are the other INPUT_MAIL_FILTER equates.
	// Default: "F=T, T=C:10s;S:10s;R:10s;E:30s" (tempfail when the filter
	// is unavailable).
	MilterFlags string
	// AccessMap, if set, is the socket of the access map as a socket map:
	// FEATURE(`access_db', `socket -T<TMPF> -d5 ACCESSMAP'), for example
	// "unix:/run/x.sock" or "inet:10031@127.0.0.1". Every access lookup
	// then goes there. Default: "" (no access map).
	AccessMap string
	// TLS is the server and client certificate (testpki.PKI.Server or a
	// certificate for Hostname). Default: nil, no STARTTLS.
	TLS *testpki.Cert
	// CAFile is confCACERT, the trusted CAs (testpki.PKI.CA.CertFile);
	// its directory is confCACERT_PATH. Default: "".
	CAFile string
	// LogLevel is Sendmail's LogLevel. Default: 9 (the cf default); 14
	// adds STARTTLS and milter details.
	LogLevel int
	// MC are extra .mc lines inserted before the MAILER lines, for example
	// "define(`confMILTER_MACROS_HELO', `{tls_version}, {verify}')dnl".
	MC []string
	// MCAfterMailer are extra .mc lines appended after the MAILER lines,
	// for example a LOCAL_TRY_TLS ruleset (cf/m4/cfhead.m4 warns when
	// LOCAL_* rulesets come before MAILER()). Default: none.
	MCAfterMailer []string
	// Hosts are extra /etc/hosts lines inside the namespace.
	Hosts []string
	// Nameserver is the nameserver of the namespace's resolv.conf, as
	// PostfixOptions.Nameserver; with one other than 127.0.0.1 Sendmail
	// also looks host names and MX records up in DNS (service switch
	// "hosts dns files"). Default: "127.0.0.1".
	Nameserver string
}

// Sendmail is a running Sendmail daemon; see [StartSendmail].
type Sendmail struct {
	t        T
	dir      string
	root     string
	cf       string
	queueDir string
	pidFile  string
	port     int
	observer
	logSock *net.UnixConn
	logDone chan struct{}
	binds   [][2]string
	hostDev string
	// nameserver is the one of the namespace's resolv.conf.
	nameserver string
	daemon     proc
	ns         namespace

	stopOnce sync.Once
	stopErr  error
}

// StartSendmail starts a real Sendmail 8.17 daemon (sendmail -bd -q15s)
// from the extracted Debian packages (see [SendmailRoot]) on a free port
// of 127.0.0.1, in a private mount namespace, and stops it at cleanup (on
// failure, the tail of its log is logged).
//
// Logging: Sendmail only logs through syslog(3), to /dev/log. The
// namespace gets a private /dev whose /dev/log is a unix datagram socket
// served by this process; every message is written as a line
// "Mmm dd hh:mm:ss HOSTNAME sendmail[PID]: ..." to the instance's maillog
// ([Sendmail.Log], [Sendmail.WaitLog]).
//
// It skips the test (or fails it when CI=true) when Sendmail cannot be
// provided, and fails it when the namespace cannot be made.
func StartSendmail(t T, opts SendmailOptions) *Sendmail {
	t.Helper()
	root, err := SendmailRoot()
	if err != nil {
		unavailable(t, err)
	}
	if err := checkUnshare(); err != nil {
		t.Fatalf("mtalab: StartSendmail: %v", err)
	}
	if opts.Hostname == "" {
		opts.Hostname = "sm.lab.test"
	}
	if opts.MilterFlags == "" {
		opts.MilterFlags = "F=T, T=C:10s;S:10s;R:10s;E:30s"
	}
	if opts.LogLevel == 0 {
		opts.LogLevel = 9
	}
	if opts.Nameserver == "" {
		opts.Nameserver = "127.0.0.1"
	}
	start := time.Now()
	dir := labDir(t, "mtalab-sm-")
	s := &Sendmail{
		t:        t,
		dir:      dir,
		root:     root,
		cf:       filepath.Join(dir, "lab.cf"),
		queueDir: filepath.Join(dir, "queue"),
		pidFile:  filepath.Join(dir, "run", "sendmail.pid"),
		observer: observer{log: maillog{filepath.Join(dir, "maillog")}},
		hostDev:  filepath.Join(dir, "hostdev"),
		logDone:  make(chan struct{}),
	}
	s.observer.what, s.observer.queue = "Sendmail "+dir, s.Queue
	if err := s.configure(opts); err != nil {
		t.Fatalf("mtalab: StartSendmail: configure %s: %v", dir, err)
	}
	if err := s.listenLog(opts.Hostname); err != nil {
		t.Fatalf("mtalab: StartSendmail: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("mtalab: %v", err)
		}
		s.ns.release() // after the test's own checks of the namespace
		if t.Failed() {
			t.Logf("mtalab: last lines of %s:\n%s", s.log.path, s.log.tail(60))
		}
	})

	out, err := s.runNS(time.Minute, "-bd", "-q15s")
	if err != nil {
		t.Fatalf("mtalab: StartSendmail: sendmail -C %s -bd: %v\n%s\nlog:\n%s", s.cf, err, out, s.log.tail(30))
	}
	// The daemon writes its pid file after forking.
	deadline := time.Now().Add(30 * time.Second)
	var pid int
	for {
		if pid, err = readPIDFile(s.pidFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mtalab: StartSendmail: no pid file: %v\n%s\nlog:\n%s", err, out, s.log.tail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.daemon, err = newProc(pid); err != nil {
		t.Fatalf("mtalab: StartSendmail: daemon: %v\nlog:\n%s", err, s.log.tail(30))
	}
	if s.ns, err = pinNS(pid); err != nil {
		t.Fatalf("mtalab: StartSendmail: daemon: %v", err)
	}
	if self, _ := mountNS(os.Getpid()); self == s.ns.id {
		t.Fatalf("mtalab: StartSendmail: daemon %d runs in the test's mount namespace", pid)
	}
	if err := checkResolv(pid, s.nameserver); err != nil {
		t.Fatalf("mtalab: StartSendmail: %v", err)
	}
	if err := waitListening([]int{s.port}, 30*time.Second); err != nil {
		t.Fatalf("mtalab: StartSendmail: %v\nlog:\n%s", err, s.log.tail(30))
	}
	t.Logf("mtalab: Sendmail %s started in %v (pid %d, %s)", dir, time.Since(start).Round(time.Millisecond), pid, s.Addr())
	return s
}

func m4Safe(what, v string) error {
	if strings.ContainsAny(v, "`'\n") {
		return fmt.Errorf("%s %q must not contain ` ' or a newline (m4 quotes)", what, v)
	}
	return nil
}

func (s *Sendmail) configure(o SendmailOptions) error {
	etc := filepath.Join(s.dir, "etc")
	for _, d := range []string{etc, filepath.Join(s.dir, "run"), s.hostDev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Mkdir(s.queueDir, 0o700); err != nil {
		return err
	}
	// Sendmail keeps statistics only if the file exists (and logs its
	// absence at high LogLevels).
	if err := os.WriteFile(filepath.Join(s.dir, "run", "statistics"), nil, 0o600); err != nil {
		return err
	}
	for what, v := range map[string]string{"Hostname": o.Hostname, "Milter": o.Milter, "MilterFlags": o.MilterFlags,
		"AccessMap": o.AccessMap, "CAFile": o.CAFile, "dir": s.dir} {
		if err := m4Safe(what, v); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port

	var mc strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&mc, format+"\n", a...) }
	w("divert(-1)\n# mtalab lab Sendmail (tlsgate)\ndivert(0)dnl")
	w("VERSIONID(`tlsgate mtalab')dnl")
	w("OSTYPE(`linux')dnl")
	w("define(`confDOMAIN_NAME', `%s')dnl", o.Hostname)
	w("define(`QUEUE_DIR', `%s')dnl", s.queueDir)
	w("define(`confPID_FILE', `%s')dnl", s.pidFile)
	w("define(`STATUS_FILE', `%s')dnl", filepath.Join(s.dir, "run", "statistics"))
	w("define(`ALIAS_FILE', `')dnl")
	w("define(`confCW_FILE', `-o %s')dnl", filepath.Join(etc, "local-host-names"))
	w("define(`HELP_FILE', `%s')dnl", filepath.Join(etc, "helpfile"))
	w("define(`confHOST_STATUS_DIRECTORY', `')dnl")
	w("define(`confSERVICE_SWITCH_FILE', `%s')dnl", filepath.Join(etc, "service.switch"))
	w("define(`confDONT_PROBE_INTERFACES', `True')dnl")
	// Certificates and the queue may live under /tmp (sticky, world-writable).
	w("define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl")
	w("define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl")
	w("define(`confTO_IDENT', `0')dnl")
	// Do not refuse or queue because tests load the machine.
	w("define(`confQUEUE_LA', `1000')dnl")
	w("define(`confREFUSE_LA', `1000')dnl")
	w("define(`confDELAY_LA', `0')dnl")
	w("define(`confLOG_LEVEL', `%d')dnl", o.LogLevel)
	w("FEATURE(`accept_unresolvable_domains')dnl")
	w("FEATURE(`promiscuous_relay')dnl")
	w("FEATURE(`nocanonify')dnl")
	w("FEATURE(`no_default_msa')dnl")
	w("DAEMON_OPTIONS(`Port=%d, Addr=127.0.0.1, Name=MTA-lab, Family=inet')dnl", port)
	if o.SmartHostPort != 0 {
		w("define(`SMART_HOST', `esmtp:[127.0.0.1]')dnl")
		w("define(`ESMTP_MAILER_ARGS', `TCP $h %d')dnl", o.SmartHostPort)
	}
	if o.TLS != nil {
		w("define(`confSERVER_CERT', `%s')dnl", o.TLS.CertFile)
		w("define(`confSERVER_KEY', `%s')dnl", o.TLS.KeyFile)
		w("define(`confCLIENT_CERT', `%s')dnl", o.TLS.CertFile)
		w("define(`confCLIENT_KEY', `%s')dnl", o.TLS.KeyFile)
		for what, v := range map[string]string{"TLS.CertFile": o.TLS.CertFile, "TLS.KeyFile": o.TLS.KeyFile} {
			if err := m4Safe(what, v); err != nil {
				return err
			}
		}
	}
	if o.CAFile != "" {
		w("define(`confCACERT_PATH', `%s')dnl", filepath.Dir(o.CAFile))
		w("define(`confCACERT', `%s')dnl", o.CAFile)
	}
	if o.AccessMap != "" {
		w("FEATURE(`access_db', `socket -T<TMPF> -d5 %s')dnl", o.AccessMap)
	}
	if o.Milter != "" {
		w("INPUT_MAIL_FILTER(`labmilter', `S=%s, %s')dnl", o.Milter, o.MilterFlags)
	}
	for _, l := range o.MC {
		w("%s", l)
	}
	w("MAILER(`local')dnl")
	w("MAILER(`smtp')dnl")
	for _, l := range o.MCAfterMailer {
		w("%s", l)
	}
	mcPath := filepath.Join(s.dir, "lab.mc")
	if err := os.WriteFile(mcPath, []byte(mc.String()), 0o644); err != nil {
		return err
	}
	cfDir := filepath.Join(s.root, "usr/share/sendmail/cf") + "/"
	cmd := exec.Command("m4", "-D_CF_DIR_="+cfDir, filepath.Join(cfDir, "m4/cf.m4"), mcPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cf, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("m4 %s: %w: %s", mcPath, err, stderr.String())
	}
	// m4 warns about promiscuous_relay (expected, loopback only); any
	// other diagnostic is a configuration error.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.Contains(line, "promiscuous_relay") && !strings.Contains(line, "relay.  Do NOT use it") {
			return fmt.Errorf("m4 %s: %s", mcPath, stderr.String())
		}
	}
	if err := os.WriteFile(s.cf, cf, 0o644); err != nil {
		return err
	}
	hosts := "hosts files\n"
	if o.Nameserver != "127.0.0.1" {
		hosts = "hosts dns files\n"
	}
	if err := os.WriteFile(filepath.Join(etc, "service.switch"), []byte(hosts+"aliases files\n"), 0o644); err != nil {
		return err
	}
	s.nameserver = o.Nameserver
	s.binds, err = nsFiles(etc, o.Hostname, o.Nameserver, o.Hosts)
	return err
}

// runNS runs the extracted sendmail with args in a fresh private
// namespace (its own /dev with /dev/log, resolv.conf, hosts,
// nsswitch.conf).
func (s *Sendmail) runNS(timeout time.Duration, args ...string) (string, error) {
	// libwrap.so.0 from the extracted libwrap0 (usr/lib/<triplet>).
	libs, _ := filepath.Glob(filepath.Join(s.root, "usr/lib/*-linux-gnu*"))
	env := []string{"LD_LIBRARY_PATH=" + strings.Join(libs, ":")}
	argv := append([]string{filepath.Join(s.root, sendmailBin), "-C", s.cf}, args...)
	return runNS(timeout, s.binds, filepath.Join(s.dir, "log.sock"), s.hostDev, env, argv...)
}

// syslogLine matches what glibc's syslog(3) sends: "<PRI>Mmm dd hh:mm:ss rest".
var syslogLine = regexp.MustCompile(`^<\d+>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (.*)$`)

// listenLog serves the socket that becomes /dev/log in the namespace.
func (s *Sendmail) listenLog(hostname string) error {
	path := filepath.Join(s.dir, "log.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("syslog socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		conn.Close()
		return err
	}
	f, err := os.OpenFile(s.log.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		conn.Close()
		return err
	}
	s.logSock = conn
	go func() {
		defer close(s.logDone)
		defer f.Close()
		buf := make([]byte, 64*1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msg := strings.TrimRight(string(buf[:n]), "\n\x00")
			if m := syslogLine.FindStringSubmatch(msg); m != nil {
				msg = m[1] + " " + hostname + " " + m[2]
			} else {
				msg = time.Now().Format(time.Stamp) + " " + hostname + " " + msg
			}
			f.WriteString(strings.ReplaceAll(msg, "\n", " ") + "\n")
		}
	}()
	return nil
}

// Dir returns the instance's directory (lab.mc, lab.cf, queue/, run/,
// maillog).
func (s *Sendmail) Dir() string { return s.dir }

// CFPath returns the path of the generated sendmail.cf.
func (s *Sendmail) CFPath() string { return s.cf }

// QueueDir returns the queue directory.
func (s *Sendmail) QueueDir() string { return s.queueDir }

// MaillogPath returns the path of the log file fed from /dev/log.
func (s *Sendmail) MaillogPath() string { return s.log.path }

// PID returns the daemon's PID from its pid file.
func (s *Sendmail) PID() int { return s.daemon.pid }

// Addr returns "127.0.0.1:PORT" of the daemon.
func (s *Sendmail) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// Port returns the daemon's TCP port.
func (s *Sendmail) Port() int { return s.port }

// Flush runs the queue once (sendmail -C CF -q) in its own private
// namespace and waits for it.
func (s *Sendmail) Flush() error {
	out, err := s.runNS(2*time.Minute, "-q")
	if err != nil {
		return fmt.Errorf("mtalab: sendmail -C %s -q: %w: %s", s.cf, err, strings.TrimSpace(out))
	}
	return nil
}

// Queue lists the queued messages by reading the qf files of the queue
// directory (what mailq shows).
func (s *Sendmail) Queue() ([]QueueEntry, error) {
	ents, err := os.ReadDir(s.queueDir)
	if err != nil {
		return nil, fmt.Errorf("mtalab: Sendmail queue: %w", err)
	}
	var q []QueueEntry
	for _, e := range ents {
		name := e.Name()
		var queue string
		switch {
		case strings.HasPrefix(name, "qf"):
			queue = "mqueue"
		case strings.HasPrefix(name, "Qf"):
			queue = "quarantine"
		default:
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.queueDir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // delivered meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("mtalab: Sendmail queue: %w", err)
		}
		qe := parseQF(data)
		qe.Queue, qe.ID = queue, name[2:]
		q = append(q, qe)
	}
	slices.SortFunc(q, func(a, b QueueEntry) int { return strings.Compare(a.ID, b.ID) })
	return q, nil
}

// parseQF reads the sender (S), the undelivered recipients (R<flags>:addr)
// and the last status message (M) of a Sendmail qf file.
func parseQF(data []byte) QueueEntry {
	var e QueueEntry
	var status string
	var rcpts []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line == "." {
			continue
		}
		switch line[0] {
		case 'S':
			e.Sender = strings.Trim(line[1:], "<>")
		case 'M':
			status = line[1:]
		case 'R':
			if _, addr, ok := strings.Cut(line[1:], ":"); ok {
				rcpts = append(rcpts, strings.Trim(addr, "<>"))
			}
		}
		if line[0] == 'H' {
			break // headers come last, after the envelope
		}
	}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, QueueRecipient{Address: r, Reason: status})
	}
	return e
}

// Stop sends SIGTERM to the daemon's PID from its pid file, waits until
// it is gone (SIGKILL after 15 s), kills any process left in its
// namespace by PID, and closes the log socket. It is idempotent and
// registered with t.Cleanup.
func (s *Sendmail) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Sendmail) stop() error {
	var problems []string
	if s.daemon.pid == 0 {
		// Start failed before the PID was known; the daemon may still
		// have come up.
		if pid, err := readPIDFile(s.pidFile); err == nil {
			if s.daemon, err = newProc(pid); err == nil {
				s.ns, _ = pinNS(pid)
			}
		}
	}
	if s.daemon.pid != 0 {
		if pid, err := readPIDFile(s.pidFile); err == nil && pid != s.daemon.pid {
			problems = append(problems, fmt.Sprintf("pid file now says %d, started as %d", pid, s.daemon.pid))
		}
		s.daemon.signal(syscall.SIGTERM)
		if !s.daemon.waitGone(15 * time.Second) {
			problems = append(problems, fmt.Sprintf("daemon %d still running 15s after SIGTERM; killed", s.daemon.pid))
			s.daemon.signal(syscall.SIGKILL)
			if !s.daemon.waitGone(5 * time.Second) {
				problems = append(problems, fmt.Sprintf("daemon %d survived SIGKILL", s.daemon.pid))
			}
		}
		if killed := reapNS(s.ns.id, 5*time.Second); len(killed) > 0 {
			problems = append(problems, fmt.Sprintf("killed leftover processes %v", killed))
		}
	}
	if s.logSock != nil {
		// Let the last datagrams in before closing.
		time.Sleep(50 * time.Millisecond)
		s.logSock.Close()
		<-s.logDone
	}
	if len(problems) > 0 {
		return fmt.Errorf("Sendmail %s stop: %s", s.dir, strings.Join(problems, "; "))
	}
	return nil
}
