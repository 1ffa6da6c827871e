package mtalab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// Paths of Postfix's commands (Debian's package).
const (
	postfixCmd  = "/usr/sbin/postfix"
	postconfCmd = "/usr/sbin/postconf"
	postqueue   = "/usr/sbin/postqueue"
	postsuper   = "/usr/sbin/postsuper"
)

func postfixAvailable() error {
	if err := needRoot(); err != nil {
		return err
	}
	for _, c := range []string{postfixCmd, postconfCmd, postqueue, postsuper, "/usr/lib/postfix/sbin/master"} {
		if _, err := os.Stat(c); err != nil {
			return fmt.Errorf("Postfix is not installed (%v)", err)
		}
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return fmt.Errorf("Postfix is not installed: no user postfix (%v)", err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return fmt.Errorf("unshare (util-linux) not found: %v", err)
	}
	return nil
}

// Service is an extra smtpd listener of a private Postfix.
type Service struct {
	// Name identifies the service for [Postfix.SMTPAddr]. Required,
	// unique, not "smtp" (the default listener).
	Name string
	// Overrides are "parameter=value" pairs given to this smtpd with -o,
	// for example "smtpd_milters=" or "smtpd_tls_ask_ccert=no".
	Overrides []string
}

// PostfixOptions configure [StartPostfix]. Zero values give a Postfix
// that accepts mail from 127.0.0.0/8 on one smtpd listener ("smtp") and
// routes nothing anywhere (default, relay and local transports are
// error:).
type PostfixOptions struct {
	// Hostname is myhostname. Default: "mx.lab.test".
	Hostname string
	// Services are extra smtpd listeners, each on its own free port.
	Services []Service
	// Transport maps domains (or other transport(5) keys) to nexthops,
	// written to a texthash: transport_maps table, for example
	// "partner.test": sink.Nexthop(). The entry "lab.test": "discard:"
	// is added unless given, so that bounces to the lab's senders go
	// nowhere.
	Transport map[string]string
	// TLS is smtpd's certificate (testpki.PKI.Server); sets
	// smtpd_tls_security_level=may, smtpd_tls_loglevel=1 and
	// smtpd_tls_received_header=yes. Default: nil, no STARTTLS offered.
	TLS *testpki.Cert
	// ClientCAFile is smtpd_tls_CAfile; also sets smtpd_tls_ask_ccert=yes.
	// Default: "" (no client certificates requested).
	ClientCAFile string
	// SMTPCAFile is the smtp client's smtp_tls_CAfile. Default: "".
	SMTPCAFile string
	// SMTPClientCert is the smtp client's certificate (smtp_tls_cert_file
	// and smtp_tls_key_file). Default: nil.
	SMTPClientCert *testpki.Cert
	// SMTPTLSLevel is smtp_tls_security_level. Default: "may".
	SMTPTLSLevel string
	// Milter is smtpd_milters, for example "inet:127.0.0.1:10030".
	// Default: "" (none).
	Milter string
	// TLSPolicyMaps is smtp_tls_policy_maps, for example
	// "socketmap:inet:127.0.0.1:10031:tlspolicy". Default: "".
	TLSPolicyMaps string
	// PolicyService is the argument of check_policy_service in
	// smtpd_recipient_restrictions, for example "inet:127.0.0.1:10032".
	// Default: "".
	PolicyService string
	// MainCF are extra main.cf lines, appended last (so they win).
	MainCF []string
	// MasterCF are extra master.cf lines, appended verbatim (for example
	// a transport "labmx unix - - n - - smtp -o smtp_tcp_port=10028").
	// chroot must be "n".
	MasterCF []string
	// Hosts are extra /etc/hosts lines inside the namespace, for example
	// "127.0.0.1 dom.partner.test mx.dom.partner.test".
	Hosts []string
	// Nameserver is the nameserver of the namespace's resolv.conf.
	// Default: "127.0.0.1", where nothing answers. Another loopback
	// address (the dnslab lab's resolver, 127.0.0.53) is accepted only in a
	// network namespace whose only interface is lo; host names are then
	// also looked up in DNS. smtp_dns_support_level stays "disabled"
	// unless MainCF sets it.
	Nameserver string
	// EtcServices are extra /etc/services lines inside the namespace
	// (after the system's), for example "labsubmit 10587/tcp", so that a
	// next hop may name a sink's port by a service name
	// ("[relay.partner.test]:labsubmit"). Default: the system's file.
	EtcServices []string
}

// Postfix is a running private Postfix instance; see [StartPostfix].
type Postfix struct {
	t        T
	dir      string
	etc      string
	queueDir string
	observer
	ports      map[string]int
	nameserver string
	master     proc
	ns         namespace

	stopOnce sync.Once
	stopErr  error
}

// StartPostfix starts a private Postfix instance for the test and stops it
// at cleanup (on failure, the tail of its maillog is logged). Its
// configuration, queue, data directory and maillog live in a private
// directory under $TMPDIR; [Postfix.Dir] tells which.
//
// The master runs in a private mount namespace (see the package doc) with
// chroot "n" on every master.cf line, inet_interfaces = loopback-only,
// smtp_dns_support_level = disabled, compatibility_level = 3.6 and
// maillog_file. It skips the test (or fails it when CI=true) when Postfix
// is not installed, and fails it when the namespace cannot be made.
func StartPostfix(t T, opts PostfixOptions) *Postfix {
	t.Helper()
	RequirePostfix(t)
	if err := checkUnshare(); err != nil {
		t.Fatalf("mtalab: StartPostfix: %v", err)
	}
	if opts.Hostname == "" {
		opts.Hostname = "mx.lab.test"
	}
	if opts.SMTPTLSLevel == "" {
		opts.SMTPTLSLevel = "may"
	}
	if opts.Nameserver == "" {
		opts.Nameserver = "127.0.0.1"
	}
	dir := labDir(t, "mtalab-pf-")
	p := &Postfix{
		t:        t,
		dir:      dir,
		etc:      filepath.Join(dir, "etc"),
		queueDir: filepath.Join(dir, "spool"),
		observer: observer{log: maillog{filepath.Join(dir, "log", "maillog")}},
		ports:    map[string]int{},
	}
	p.observer.what, p.observer.queue = "Postfix "+dir, p.Queue
	start := time.Now()
	binds, err := p.configure(opts)
	if err != nil {
		t.Fatalf("mtalab: StartPostfix: configure %s: %v", p.etc, err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("mtalab: %v", err)
		}
		p.ns.release() // after the test's own checks of the namespace
		if t.Failed() {
			t.Logf("mtalab: last lines of %s:\n%s", p.log.path, p.log.tail(60))
		}
	})

	out, err := runNS(2*time.Minute, binds, "", "", nil, postfixCmd, "-c", p.etc, "start")
	if err != nil {
		t.Fatalf("mtalab: StartPostfix: postfix -c %s start: %v\n%s\nmaillog:\n%s", p.etc, err, out, p.log.tail(30))
	}
	pid, err := readPIDFile(filepath.Join(p.queueDir, "pid", "master.pid"))
	if err != nil {
		t.Fatalf("mtalab: StartPostfix: %v\n%s", err, out)
	}
	if p.master, err = newProc(pid); err != nil {
		t.Fatalf("mtalab: StartPostfix: master: %v", err)
	}
	if err := p.checkNamespace(); err != nil {
		t.Fatalf("mtalab: StartPostfix: %v", err)
	}
	var ports []int
	for _, port := range p.ports {
		ports = append(ports, port)
	}
	if err := waitListening(ports, 30*time.Second); err != nil {
		t.Fatalf("mtalab: StartPostfix: %v\nmaillog:\n%s", err, p.log.tail(30))
	}
	t.Logf("mtalab: Postfix %s started in %v (master pid %d, smtpd %s)",
		p.dir, time.Since(start).Round(time.Millisecond), pid, p.SMTPAddr("smtp"))
	return p
}

// checkNamespace verifies that the master runs in its own mount namespace
// and sees the private resolv.conf there.
func (p *Postfix) checkNamespace() error {
	ns, err := pinNS(p.master.pid)
	if err != nil {
		return fmt.Errorf("master: %w", err)
	}
	p.ns = ns // released at cleanup
	if self, _ := mountNS(os.Getpid()); ns.id == self {
		return fmt.Errorf("master %d runs in the test's mount namespace %s, not a private one", p.master.pid, ns.id)
	}
	return checkResolv(p.master.pid, p.nameserver)
}

// checkResolv reads /etc/resolv.conf as process pid sees it: it must name
// nameserver only.
func checkResolv(pid int, nameserver string) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/resolv.conf", pid))
	if err != nil {
		return fmt.Errorf("read resolv.conf of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" && f[1] != nameserver {
			return fmt.Errorf("process %d sees a resolv.conf with %q: the DNS safety net is missing", pid, line)
		}
	}
	if !strings.Contains(string(data), "nameserver "+nameserver+"\n") {
		return fmt.Errorf("process %d does not see the private resolv.conf:\n%s", pid, data)
	}
	return nil
}

const masterCFBase = `# mtalab: chroot is n everywhere.
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// configure writes main.cf, master.cf, the transport table and the
// namespace's files, and returns the namespace's bind mounts.
func (p *Postfix) configure(o PostfixOptions) ([][2]string, error) {
	logDir := filepath.Dir(p.log.path)
	dataDir := filepath.Join(p.dir, "data")
	for _, d := range []string{p.etc, logDir, dataDir, p.queueDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(pu.Uid)
	gid, _ := strconv.Atoi(pu.Gid)
	if err := os.Chown(dataDir, uid, gid); err != nil {
		return nil, err
	}

	// Ports: the default listener first, then the extra services.
	names := []string{"smtp"}
	overrides := map[string][]string{}
	for _, s := range o.Services {
		if s.Name == "" || s.Name == "smtp" || slices.Contains(names, s.Name) {
			return nil, fmt.Errorf("service name %q: empty, \"smtp\" or duplicate", s.Name)
		}
		names = append(names, s.Name)
		overrides[s.Name] = s.Overrides
	}
	var master strings.Builder
	for _, n := range names {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p.ports[n] = port
		fmt.Fprintf(&master, "# mtalab service %q\n127.0.0.1:%d inet n - n - - smtpd\n", n, port)
		for _, ov := range overrides[n] {
			if strings.ContainsAny(ov, " \t\n") || !strings.Contains(ov, "=") {
				return nil, fmt.Errorf("service %q: override %q must be parameter=value without blanks", n, ov)
			}
			fmt.Fprintf(&master, "  -o %s\n", ov)
		}
	}
	master.WriteString(masterCFBase)
	for _, l := range o.MasterCF {
		master.WriteString(l + "\n")
	}

	transport := map[string]string{"lab.test": "discard:"}
	for k, v := range o.Transport {
		transport[k] = v
	}
	var tr strings.Builder
	for _, k := range slices.Sorted(maps.Keys(transport)) {
		fmt.Fprintf(&tr, "%s\t%s\n", k, transport[k])
	}

	main := []string{
		"# mtalab private Postfix instance",
		"compatibility_level = 3.6",
		"queue_directory = " + p.queueDir,
		"data_directory = " + dataDir,
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = " + o.Hostname,
		"mydomain = lab.test",
		"myorigin = $myhostname",
		"mydestination =",
		"inet_interfaces = loopback-only",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"alias_maps =",
		"alias_database =",
		"biff = no",
		"append_dot_mydomain = no",
		"maillog_file = " + p.log.path,
		"maillog_file_prefixes = " + logDir,
		"smtp_dns_support_level = disabled",
		"default_transport = error:lab no route",
		"relay_transport = error:lab no route",
		"local_transport = error:lab no local delivery",
		"transport_maps = texthash:" + filepath.Join(p.etc, "transport"),
		"smtp_tls_security_level = " + o.SMTPTLSLevel,
		"smtp_tls_loglevel = 1",
	}
	if o.TLS != nil {
		main = append(main,
			"smtpd_tls_security_level = may",
			"smtpd_tls_cert_file = "+o.TLS.CertFile,
			"smtpd_tls_key_file = "+o.TLS.KeyFile,
			"smtpd_tls_loglevel = 1",
			"smtpd_tls_received_header = yes")
	}
	if o.ClientCAFile != "" {
		main = append(main, "smtpd_tls_CAfile = "+o.ClientCAFile, "smtpd_tls_ask_ccert = yes")
	}
	if o.SMTPCAFile != "" {
		main = append(main, "smtp_tls_CAfile = "+o.SMTPCAFile)
	}
	if o.SMTPClientCert != nil {
		main = append(main, "smtp_tls_cert_file = "+o.SMTPClientCert.CertFile, "smtp_tls_key_file = "+o.SMTPClientCert.KeyFile)
	}
	if o.Milter != "" {
		main = append(main, "smtpd_milters = "+o.Milter)
	}
	if o.TLSPolicyMaps != "" {
		main = append(main, "smtp_tls_policy_maps = "+o.TLSPolicyMaps)
	}
	if o.PolicyService != "" {
		main = append(main, "smtpd_recipient_restrictions = check_policy_service "+o.PolicyService)
	}
	main = append(main, o.MainCF...)

	files := map[string]string{
		"main.cf":   strings.Join(main, "\n") + "\n",
		"master.cf": master.String(),
		"transport": tr.String(),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(p.etc, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	p.nameserver = o.Nameserver
	binds, err := nsFiles(p.etc, o.Hostname, o.Nameserver, o.Hosts)
	if err != nil || len(o.EtcServices) == 0 {
		return binds, err
	}
	m, err := servicesFile(p.etc, o.EtcServices)
	return append(binds, m), err
}

// servicesFile writes the system's /etc/services with extra lines into
// etcDir and returns the bind mount that puts it over /etc/services.
func servicesFile(etcDir string, extra []string) ([2]string, error) {
	sys, err := os.ReadFile("/etc/services")
	if err != nil && !os.IsNotExist(err) {
		return [2]string{}, err
	}
	p := filepath.Join(etcDir, "services")
	text := string(sys) + "\n# mtalab\n" + strings.Join(extra, "\n") + "\n"
	return [2]string{p, "/etc/services"}, os.WriteFile(p, []byte(text), 0o644)
}

// Dir returns the instance's directory (etc/, spool/, data/, log/maillog).
func (p *Postfix) Dir() string { return p.dir }

// ConfigDir returns the configuration directory (for postconf -c and
// friends).
func (p *Postfix) ConfigDir() string { return p.etc }

// QueueDir returns queue_directory.
func (p *Postfix) QueueDir() string { return p.queueDir }

// MaillogPath returns the path of maillog_file.
func (p *Postfix) MaillogPath() string { return p.log.path }

// MasterPID returns the PID of the master from its pid file at start.
func (p *Postfix) MasterPID() int { return p.master.pid }

// SMTPAddr returns "127.0.0.1:PORT" of the smtpd listener named service
// ("smtp" for the default one). It fails the test for an unknown name.
func (p *Postfix) SMTPAddr(service string) string {
	p.t.Helper()
	port, ok := p.ports[service]
	if !ok {
		p.t.Fatalf("mtalab: Postfix %s has no service %q", p.dir, service)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func (p *Postfix) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mtalab: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Reload runs postfix reload (main.cf and master.cf are re-read).
func (p *Postfix) Reload() error {
	_, err := p.run(postfixCmd, "-c", p.etc, "reload")
	return err
}

// Flush runs postqueue -f: deliver deferred mail now.
func (p *Postfix) Flush() error {
	_, err := p.run(postqueue, "-c", p.etc, "-f")
	return err
}

// Postconf returns the value of main.cf parameter param (postconf -h).
func (p *Postfix) Postconf(param string) (string, error) {
	out, err := p.run(postconfCmd, "-c", p.etc, "-h", param)
	return strings.TrimSpace(out), err
}

// DeleteQueue deletes all queued messages (postsuper -d ALL).
func (p *Postfix) DeleteQueue() error {
	_, err := p.run(postsuper, "-c", p.etc, "-d", "ALL")
	return err
}

// Queue lists the queued messages (postqueue -j).
func (p *Postfix) Queue() ([]QueueEntry, error) {
	out, err := p.run(postqueue, "-c", p.etc, "-j")
	if err != nil {
		return nil, err
	}
	return parsePostqueueJSON(out)
}

// parsePostqueueJSON parses postqueue -j output: one JSON object a line.
func parsePostqueueJSON(out string) ([]QueueEntry, error) {
	var q []QueueEntry
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var m struct {
			QueueName  string `json:"queue_name"`
			QueueID    string `json:"queue_id"`
			Sender     string `json:"sender"`
			Recipients []struct {
				Address     string `json:"address"`
				DelayReason string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, fmt.Errorf("mtalab: parse postqueue -j line %q: %w", line, err)
		}
		e := QueueEntry{Queue: m.QueueName, ID: m.QueueID, Sender: m.Sender}
		for _, r := range m.Recipients {
			e.Recipients = append(e.Recipients, QueueRecipient{Address: r.Address, Reason: r.DelayReason})
		}
		q = append(q, e)
	}
	return q, sc.Err()
}

// Stop stops the instance with postfix stop, verifies that the master
// (by the PID from its pid file) is gone, kills it by PID only if it is
// not, and then kills any process left in the instance's namespace by
// PID. It is idempotent and registered with t.Cleanup.
func (p *Postfix) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Postfix) stop() error {
	if p.master.pid == 0 {
		// Start failed before the PID was known; the master may still
		// have come up.
		pid, err := readPIDFile(filepath.Join(p.queueDir, "pid", "master.pid"))
		if err != nil {
			return nil // never started
		}
		if p.master, err = newProc(pid); err != nil {
			return nil // already gone
		}
		p.ns, _ = pinNS(pid)
	}
	var problems []string
	if out, err := p.run(postfixCmd, "-c", p.etc, "stop"); err != nil && p.master.alive() {
		problems = append(problems, fmt.Sprintf("postfix stop: %v %s", err, out))
	}
	if !p.master.waitGone(15 * time.Second) {
		problems = append(problems, fmt.Sprintf("master %d still running 15s after postfix stop; killed", p.master.pid))
		p.master.signal(syscall.SIGKILL)
		if !p.master.waitGone(5 * time.Second) {
			problems = append(problems, fmt.Sprintf("master %d survived SIGKILL", p.master.pid))
		}
	}
	if killed := reapNS(p.ns.id, 5*time.Second); len(killed) > 0 {
		problems = append(problems, fmt.Sprintf("killed leftover processes %v", killed))
	}
	if len(problems) > 0 {
		return fmt.Errorf("Postfix %s stop: %s", p.dir, strings.Join(problems, "; "))
	}
	return nil
}
