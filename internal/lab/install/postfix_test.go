package install

import (
	"crypto/x509/pkix"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/debsys"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// TestReadmeInstallBlocks: README.md has every block the install tests
// run, each a non-empty ```sh block.
func TestReadmeInstallBlocks(t *testing.T) {
	b := readmeBlocks(t)
	for _, name := range []string{"package", "source", "config", "ca-store", "ssl-cert", "postfix", "start", "submission", "uninstall",
		"sendmail-config", "sendmail-ca", "sendmail-wire", "sendmail-start", "sendmail-uninstall"} {
		if strings.TrimSpace(b[name]) == "" {
			t.Errorf("README.md has no install-test block %q", name)
		}
	}
}

// labConfig is the tlsgate.toml the test puts where the admin edits the
// example: Debian's snakeoil certificate and key (mode 0640, group
// ssl-cert) as server_cert/server_key, a covered inbound client, and
// outbound endpoints for the sinks.
const labConfig = `mta = "postfix"
postfix_version = "3.7"

[milter]
listen      = "unix:/var/spool/postfix/tlsgate/milter.sock"
authserv_id = "mx.lab.test"

[policyd]
listen   = "unix:/var/spool/postfix/tlsgate/policy.sock"
map_name = "tlspolicy"

[certs]
ca_store         = "/etc/tlsgate/ca"
ca_bundle        = "/var/lib/tlsgate/ca-bundle.pem"
trust_anchor_dir = "/var/spool/postfix/tlsgate/tafiles"
server_cert      = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
server_key       = "/etc/ssl/private/ssl-cert-snakeoil.key"

# A partner that must send with TLS: its server is 127.0.0.5.
[[endpoint]]
name   = "inbound-partner"
hosts  = ["127.0.0.5"]
action = "defer"
  [endpoint.inbound]
  encryption = true

# Delivered only with a certificate for sink.partner.test that chains to the
# CA store: 127.0.0.2 has one, 127.0.0.6 one for wrong.partner.test,
# 127.0.0.11 one from a CA the store does not have.
[[endpoint]]
name  = "verified"
hosts = ["verified.partner.test", "wrongname.partner.test", "unknownca.partner.test",
         "127.0.0.2", "127.0.0.6", "127.0.0.11"]   # transport sends [address]:2525
  [endpoint.outbound]
  encryption    = true
  validate_cert = true
  cn            = "sink.partner.test"

# Delivered only with a certificate issued by Lab Test CA (a tafile= pin):
# 127.0.0.4 has one, 127.0.0.3 one from Other CA, which the CA store also
# trusts.
[[endpoint]]
name  = "issuer-pinned"
hosts = ["wrongissuer.partner.test", "pinned.partner.test", "127.0.0.3", "127.0.0.4"]
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"
  issuer_cn     = "Lab Test CA"

# A certificate no CA needs to sign, pinned by its SHA-256: 127.0.0.8 has it,
# 127.0.0.9 another one.
[[endpoint]]
name  = "fingerprint-pinned"
hosts = ["fingerprint.partner.test", "wrongfp.partner.test", "127.0.0.8", "127.0.0.9"]
  [endpoint.outbound]
  validate_cert = false
  fingerprints  = ["sha256:%s"]

# Encrypted or not at all: 127.0.0.10 offers no STARTTLS.
[[endpoint]]
name  = "encrypted"
hosts = ["notls.partner.test", "127.0.0.10"]
  [endpoint.outbound]
  encryption = true
`

// labTransport routes each test domain to its sink (the system has no DNS).
const labTransport = `verified.partner.test    smtp:[127.0.0.2]:2525
wrongname.partner.test   smtp:[127.0.0.6]:2525
wrongissuer.partner.test smtp:[127.0.0.3]:2525
pinned.partner.test      smtp:[127.0.0.4]:2525
plain.partner.test       smtp:[127.0.0.7]:2525
fingerprint.partner.test smtp:[127.0.0.8]:2525
wrongfp.partner.test     smtp:[127.0.0.9]:2525
notls.partner.test       smtp:[127.0.0.10]:2525
unknownca.partner.test   smtp:[127.0.0.11]:2525
`

const mailLog = "/var/log/mail.log"

// TestInstallPostfix installs the package on Debian's own Postfix
// ("Internet Site", Debian's master.cf with smtpd and smtp chrooted) and
// follows README.md's "Install on Debian" blocks literally. It proves the
// maintainer scripts without systemd as PID 1 and with it (simulated:
// /run/systemd/system and the debsys systemctl shim, which runs the unit's
// real ExecStart as its User/Group), inbound refusal of a covered plaintext
// client, verified outbound with the right certificate name, a tafile=
// issuer pin read from Postfix's chroot, an upgrade that restarts the
// daemon and keeps /etc/tlsgate, the fail-closed outage, the submission
// exemption, and that purge leaves the system user and the admin's files
// and nothing else.
func TestInstallPostfix(t *testing.T) {
	gate(t)
	tm := newTimer(t)
	blocks := readmeBlocks(t)

	// The package, twice: the second is the upgrade.
	debDir := t.TempDir()
	v1 := packageVersion(t)
	v2 := v1 + "+upgrade"
	deb1 := buildDeb(t, debDir, v1)
	deb2 := buildDeb(t, debDir, v2)
	tm.step("make deb (two versions)")
	if out, err := exec.Command("lintian", "--fail-on", "error,warning", deb1).CombinedOutput(); err != nil {
		t.Errorf("lintian on %s: %v\n%s", deb1, err, out)
	} else {
		t.Logf("lintian %s:\n%s", filepath.Base(deb1), out)
	}
	tm.step("lintian")

	pki := testpki.NewT(t)
	sys := &system{debsys.New(t, debsys.Options{Hostname: "mx.lab.test"}), t}
	if err := sys.InstallSystemctl(); err != nil {
		t.Fatal(err)
	}

	debianPostfix(t, sys)
	sinks := startSinks(t, sys, pki)
	baseline := changeSet(t, sys)
	tm.step("Debian Postfix")

	// Without systemd as PID 1: the scripts create the user, groups and
	// directories, enable the unit and start nothing; purge undoes it.
	if err := sys.WriteFile("/root/"+filepath.Base(deb1), mustRead(t, deb1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sys.WriteFile("/root/"+filepath.Base(deb2), mustRead(t, deb2), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dpkg -i without systemd:\n%s", sys.must("dpkg -i /root/"+filepath.Base(deb1)+" 2>&1"))
	checkInstalled(t, sys, pkgUnit, pkgPostfixTmpfiles)
	if out, _ := sys.Sh("pgrep -x tlsgate || echo none"); strings.TrimSpace(out) != "none" {
		t.Errorf("tlsgate runs after an install without systemd: %s", out)
	}
	sys.must("dpkg --purge tlsgate 2>&1")
	for _, p := range []string{"/usr/sbin/tlsgate", "/var/spool/postfix/tlsgate", "/var/lib/tlsgate", "/etc/tmpfiles.d/tlsgate-postfix.conf",
		"/etc/systemd/system/multi-user.target.wants/tlsgate.service", "/var/spool/postfix/var"} {
		if sys.exists(p) {
			t.Errorf("after dpkg --purge without systemd: %s is still there", p)
		}
	}
	sys.must("getent passwd tlsgate; getent group tlsgate")
	tm.step("install and purge without systemd")

	// With systemd (simulated) and the README, literally.
	sys.withSystemd()
	run := sys.readme(blocks)
	// Only the first package may match the README's glob.
	sys.must("mkdir -p /root/v2 && mv /root/" + filepath.Base(deb2) + " /root/v2/")
	// The postinst asked (the simulated) systemd to start the unit, and the
	// unit's condition held it back.
	if out := run("package"); !strings.Contains(out, "tlsgate.service: a Condition is not met, not started") {
		t.Errorf("the postinst did not try to start tlsgate, or the unit has no ConditionPathExists=:\n%s", out)
	}
	checkInstalled(t, sys, pkgUnit, pkgPostfixTmpfiles)
	if out := sys.must("systemctl is-active tlsgate || true"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("tlsgate started before /etc/tlsgate/tlsgate.toml exists: %s", out)
	}
	run("config")
	if err := sys.WriteFile("/etc/tlsgate/tlsgate.toml", []byte(fmt.Sprintf(labConfig, pki.Sink.Fingerprint)), 0o644); err != nil {
		t.Fatal(err)
	}
	cas := append(mustRead(t, pki.CA.CertFile), mustRead(t, pki.OtherCA.CertFile)...)
	if err := sys.WriteFile("/root/partner-cas.pem", cas, 0o644); err != nil {
		t.Fatal(err)
	}
	run("ca-store")
	// Debian's snakeoil key is 0640 root:ssl-cert: refused until tlsgate
	// is in ssl-cert, and then accepted.
	if out := sys.fails("tlsgate check -c /etc/tlsgate/tlsgate.toml"); !strings.Contains(out, "which user tlsgate is not in") || !strings.Contains(out, "adduser tlsgate ssl-cert") {
		t.Errorf("check before adduser tlsgate ssl-cert:\n%s", out)
	}
	run("ssl-cert")
	run("postfix")
	run("start")
	waitSockets(t, sys)
	tm.step("README install")

	if log := sys.ShimLog("tlsgate"); regexp.MustCompile(`(?m)^<\d>`).MatchString(log) {
		t.Errorf("tlsgate's stderr is not the journal, yet its lines carry <N> prefixes:\n%s", log)
	}

	inbound(t, sys)
	tm.step("inbound")
	outbound(t, sys, sinks)
	tm.step("outbound")
	upgrade(t, sys, v2)
	tm.step("upgrade")
	outage(t, sys, sinks, run)
	tm.step("outage")

	// Uninstall as README says: Postfix gets its main.cf back, so a
	// covered plaintext client is accepted again (no tlsgate milter).
	run("uninstall")
	if out, _ := sys.Sh("pgrep -x tlsgate || echo none"); strings.TrimSpace(out) != "none" {
		t.Errorf("tlsgate still runs after apt purge: %s", out)
	}
	// The prerm stopped it (SIGTERM from the unit's stop) before dpkg
	// removed its files.
	if log := sys.ShimLog("tlsgate"); !strings.Contains(log[strings.LastIndex(log, "-- debsys shim: start"):], "NOQUEUE: stop signal=terminated") {
		t.Errorf("tlsgate's last run did not end with a stop by SIGTERM:\n%s", log)
	}
	out, _ := sys.Sh("swaks --server 127.0.0.1 --local-interface 127.0.0.5 --from a@partner.test --to root@mx.lab.test 2>&1")
	if !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Errorf("after the uninstall Postfix does not accept mail again:\n%s", out)
	}
	checkPurged(t, sys, baseline)
	tm.step("uninstall")
}

// debianPostfix configures the system's Postfix as an administrator gets
// it from Debian ("Internet Site"; Debian's master.cf chroots smtpd,
// cleanup and smtp), adds what the lab needs around it and starts it.
func debianPostfix(t *testing.T, sys *system) {
	t.Helper()
	// Debian's Postfix as an administrator gets it: "Internet Site".
	sys.must(`debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select Internet Site
postfix postfix/mailname string mx.lab.test
EOF
rm -f /etc/postfix/main.cf
dpkg-reconfigure -f noninteractive postfix 2>&1`)
	for _, svc := range []string{"smtp      inet", "smtp      unix", "cleanup   unix"} {
		if out := sys.must("grep '^" + svc + "' /etc/postfix/master.cf"); !regexp.MustCompile(`^\S+\s+\S+\s+\S+\s+\S+\s+y\s`).MatchString(out) {
			t.Fatalf("Debian's master.cf does not chroot %q: %s", svc, out)
		}
	}
	// The lab around it: no syslog daemon, so Postfix logs to a file; TLS
	// log lines; the sinks are the partners' servers (no DNS here); a
	// submission service, which Debian ships commented out.
	if err := sys.WriteFile("/etc/postfix/transport", []byte(labTransport), 0o644); err != nil {
		t.Fatal(err)
	}
	sys.must(`postconf -e maillog_file=/var/log/mail.log smtp_tls_loglevel=1 smtpd_tls_loglevel=1 \
	'transport_maps = texthash:/etc/postfix/transport'
postconf -M 'submission/inet=submission inet n - y - - smtpd'
postfix check
postfix start`)
	if !waitFor(30*time.Second, func() bool { return sys.logSize(mailLog) > 0 }) {
		t.Fatal("Postfix wrote no log")
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sinks are the partners' servers, on the system's loopback, port 2525
// (Postfix listens on port 25 of every address).
type sinks struct {
	verified, wrongName, wrongIssuer, pinned, plain, fingerprint, wrongFP, noTLS, unknownCA *sink
}

func startSinks(t *testing.T, sys *system, pki *testpki.PKI) *sinks {
	t.Helper()
	var s sinks
	startSinkSpecs(t, sys, []sinkSpec{
		{"127.0.0.2:2525", sinkTLS(t, pki.Sink), &s.verified},
		{"127.0.0.6:2525", sinkTLS(t, pki.WrongCN), &s.wrongName},
		{"127.0.0.3:2525", sinkTLS(t, pki.OtherCASink), &s.wrongIssuer},
		{"127.0.0.4:2525", sinkTLS(t, pki.Sink), &s.pinned},
		{"127.0.0.7:2525", nil, &s.plain},
		{"127.0.0.8:2525", sinkTLS(t, pki.Sink), &s.fingerprint},
		{"127.0.0.9:2525", sinkTLS(t, pki.WrongCN), &s.wrongFP},
		{"127.0.0.10:2525", nil, &s.noTLS},
		{"127.0.0.11:2525", sinkTLS(t, unknownCASink(t, pki)), &s.unknownCA},
	})
	return &s
}

// unknownCASink is a certificate for sink.partner.test from a CA that is
// not in the CA store; the sink sends the CA with it.
func unknownCASink(t *testing.T, pki *testpki.PKI) *testpki.Cert {
	t.Helper()
	ca, err := pki.Issue(testpki.Options{Name: "unknown-ca", IsCA: true, KeyType: testpki.ECDSAP256,
		Subject: pkix.Name{Country: []string{"DE"}, Organization: []string{"Nobody"}, CommonName: "Unknown CA"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.Issue(testpki.Options{Name: "unknown-ca-sink", Signer: ca, KeyType: testpki.ECDSAP256,
		Subject: pkix.Name{CommonName: "sink.partner.test"}, DNSNames: []string{"sink.partner.test"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// changeSet is the set of paths in the system's upper layer now.
func changeSet(t *testing.T, sys *system) map[string]bool {
	t.Helper()
	ch, err := sys.Changes()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, c := range ch {
		m[c.Path] = true
	}
	return m
}

// Where the package and make install put the unit and the Postfix
// tmpfiles.d file.
const (
	pkgUnit            = "/lib/systemd/system/tlsgate.service"
	pkgPostfixTmpfiles = "/usr/share/tlsgate/tmpfiles.d/tlsgate-postfix.conf"
	srcUnit            = "/usr/local/lib/systemd/system/tlsgate.service"
	srcPostfixTmpfiles = "/usr/local/share/tlsgate/tmpfiles.d/tlsgate-postfix.conf"
)

// checkInstalled: what the maintainer scripts (or README's manual steps)
// must have done, with the unit and Postfix tmpfiles.d file at these paths.
func checkInstalled(t *testing.T, sys *system, unit, postfixTmpfiles string) {
	t.Helper()
	out := sys.must(`getent passwd tlsgate; getent group tlsgate; id -nG postfix
stat -c '%U:%G %a %n' /run/tlsgate /var/lib/tlsgate /var/spool/postfix/tlsgate /var/spool/postfix/tlsgate/tafiles
readlink /var/spool/postfix/var/spool/postfix/tlsgate /etc/tmpfiles.d/tlsgate-postfix.conf /etc/systemd/system/multi-user.target.wants/tlsgate.service`)
	for _, want := range []string{
		"tlsgate:x:", ":/nonexistent:/usr/sbin/nologin",
		"tlsgate:x:",
		"postfix tlsgate",
		"tlsgate:tlsgate 750 /run/tlsgate", "tlsgate:tlsgate 750 /var/lib/tlsgate",
		"tlsgate:tlsgate 750 /var/spool/postfix/tlsgate\n", "tlsgate:tlsgate 750 /var/spool/postfix/tlsgate/tafiles",
		"../../../tlsgate\n" + postfixTmpfiles + "\n" + unit + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("after install: want %q in\n%s", want, out)
		}
	}
	if m := regexp.MustCompile(`(?m)^tlsgate:x:(\d+):`).FindStringSubmatch(out); m == nil || len(m[1]) > 3 {
		t.Errorf("tlsgate is not a system user:\n%s", out)
	}
	// The unit as systemd would load it.
	if out, err := sys.Sh("systemd-analyze verify " + unit + " 2>&1"); err != nil {
		t.Errorf("systemd-analyze verify tlsgate.service: %v\n%s", err, out)
	}
}

// waitSockets waits for tlsgate's sockets and checks who may use them.
func waitSockets(t *testing.T, sys *system) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool {
		return sys.exists("/var/spool/postfix/tlsgate/milter.sock") && sys.exists("/var/spool/postfix/tlsgate/policy.sock")
	}) {
		t.Fatalf("tlsgate made no sockets; its log:\n%s", sys.ShimLog("tlsgate"))
	}
	out := sys.must("stat -c '%U:%G %a %n' /var/spool/postfix/tlsgate/*.sock; ls /var/spool/postfix/tlsgate/tafiles")
	for _, want := range []string{"tlsgate:tlsgate 660 /var/spool/postfix/tlsgate/milter.sock", "tlsgate:tlsgate 660 /var/spool/postfix/tlsgate/policy.sock", "issuer-pinned.pem"} {
		if !strings.Contains(out, want) {
			t.Errorf("sockets: want %q in\n%s", want, out)
		}
	}
}

// inbound: a covered client without TLS is deferred at MAIL FROM, an
// uncovered one is accepted.
func inbound(t *testing.T, sys *system) {
	t.Helper()
	mark := sys.logSize(mailLog)
	out, _ := sys.Sh("swaks --server 127.0.0.1 --local-interface 127.0.0.5 --helo mx.partner.test --from orders@partner.test --to root@mx.lab.test 2>&1")
	if !regexp.MustCompile(`(?m)^<\*\* +451 4\.7\.1 `).MatchString(out) || strings.Contains(out, "queued as") {
		t.Errorf("a covered client without TLS was not deferred at MAIL FROM:\n%s", out)
	}
	line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`milter-reject: MAIL from \S+\[127\.0\.0\.5\]: 451 4\.7\.1 `), 10*time.Second)
	if err != nil {
		t.Error(err)
	} else {
		t.Logf("Postfix: %s", line)
	}
	if !waitFor(10*time.Second, func() bool {
		return regexp.MustCompile(`tlsgate: result=defer endpoint=inbound-partner .*client=\S+\[127\.0\.0\.5\]`).MatchString(sys.ShimLog("tlsgate"))
	}) {
		t.Errorf("tlsgate logged no deferral:\n%s", sys.ShimLog("tlsgate"))
	}
	out, _ = sys.Sh("swaks --server 127.0.0.1 --from someone@elsewhere.test --to root@mx.lab.test 2>&1")
	if !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Errorf("an uncovered client was not accepted:\n%s", out)
	}
}

func sendmail(t *testing.T, sys *system, to string) {
	t.Helper()
	sys.must("printf 'Subject: install test to " + to + "\\n\\nhello\\n' | sendmail -f root@mx.lab.test " + to)
}

// outbound: verified delivery with the right name, a name mismatch and a
// wrong issuer deferred before any envelope, the issuer pin's tafile read
// by the chrooted smtp(8), an uncovered destination unchanged.
func outbound(t *testing.T, sys *system, s *sinks) {
	t.Helper()
	mark := sys.logSize(mailLog)
	for _, d := range []string{"verified", "wrongname", "wrongissuer", "pinned", "plain", "fingerprint", "wrongfp", "notls", "unknownca"} {
		sendmail(t, sys, "user@"+d+".partner.test")
	}
	want := []struct {
		re   string
		what string
	}{
		{`Verified TLS connection established to 127\.0\.0\.2\[127\.0\.0\.2\]:2525`, "verified TLS to the right name"},
		{`to=<user@verified\.partner\.test>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:2525, .*status=sent`, "delivery to the right name"},
		{`server certificate verification failed for 127\.0\.0\.6\[127\.0\.0\.6\]:2525: num=62:hostname mismatch`, "the name mismatch"},
		{`to=<user@wrongname\.partner\.test>, relay=127\.0\.0\.6\[127\.0\.0\.6\]:2525, .*dsn=4\.7\.5, status=deferred \(Server certificate not verified\)`, "deferral on the name"},
		{`CA certificate verification failed for 127\.0\.0\.3\[127\.0\.0\.3\]:2525: num=65:no matching DANE TLSA records`, "the wrong issuer under the tafile= pin"},
		{`to=<user@wrongissuer\.partner\.test>, relay=127\.0\.0\.3\[127\.0\.0\.3\]:2525, .*dsn=4\.7\.5, status=deferred \(Server certificate not verified\)`, "deferral on the issuer"},
		{`Verified TLS connection established to 127\.0\.0\.4\[127\.0\.0\.4\]:2525`, "verified TLS under the issuer pin"},
		{`to=<user@pinned\.partner\.test>, relay=127\.0\.0\.4\[127\.0\.0\.4\]:2525, .*status=sent`, "delivery under the issuer pin"},
		{`to=<user@plain\.partner\.test>, relay=127\.0\.0\.7\[127\.0\.0\.7\]:2525, .*status=sent`, "the uncovered destination"},
		{`to=<user@fingerprint\.partner\.test>, relay=127\.0\.0\.8\[127\.0\.0\.8\]:2525, .*status=sent`, "delivery to the pinned fingerprint"},
		{`server certificate verification failed for 127\.0\.0\.9\[127\.0\.0\.9\]:2525: num=65:no matching DANE TLSA records`, "the fingerprint mismatch"},
		{`to=<user@wrongfp\.partner\.test>, relay=127\.0\.0\.9\[127\.0\.0\.9\]:2525, .*dsn=4\.7\.5, status=deferred \(Server certificate not verified\)`, "deferral on the fingerprint"},
		{`: certificate verification failed for 127\.0\.0\.11\[127\.0\.0\.11\]:2525: untrusted issuer /C=DE/O=Nobody/CN=Unknown CA`, "a CA the store does not have"},
		{`to=<user@unknownca\.partner\.test>, relay=127\.0\.0\.11\[127\.0\.0\.11\]:2525, .*dsn=4\.7\.5, status=deferred \(Server certificate not verified\)`, "deferral on the chain"},
		{`to=<user@notls\.partner\.test>, relay=127\.0\.0\.10\[127\.0\.0\.10\]:2525, .*dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered by host 127\.0\.0\.10\[127\.0\.0\.10\]\)`, "encryption required, no STARTTLS"},
	}
	for _, w := range want {
		line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(w.re), 60*time.Second)
		if err != nil {
			t.Errorf("%s: %v", w.what, err)
			continue
		}
		t.Logf("Postfix (%s): %s", w.what, line[strings.Index(line, "postfix/"):])
	}
	for name, sk := range map[string]*sink{"verified": s.verified, "pinned": s.pinned, "fingerprint": s.fingerprint} {
		msgs, tlsOK := sk.messages()
		if len(msgs) != 1 || !tlsOK[0] {
			t.Errorf("%s sink: %d messages, TLS %v; want 1 over TLS", name, len(msgs), tlsOK)
		}
	}
	for name, sk := range map[string]*sink{"wrong name": s.wrongName, "wrong issuer": s.wrongIssuer, "wrong fingerprint": s.wrongFP, "no STARTTLS": s.noTLS, "unknown CA": s.unknownCA} {
		if n := sk.mails(); n != 0 {
			t.Errorf("%s sink saw %d MAIL FROM; the envelope must not be sent", name, n)
		}
	}
	// The chrooted smtp(8) opened the pin by the path tlsgate answered.
	if out := sys.must("tlsgate query -c /etc/tlsgate/tlsgate.toml outbound '[127.0.0.4]:2525'"); !strings.Contains(out, "tafile=/var/spool/postfix/tlsgate/tafiles/issuer-pinned.pem") {
		t.Errorf("the pinned endpoint's answer has no tafile=: %s", out)
	}
}

// upgrade installs the second package: /etc/tlsgate is kept and the running
// daemon restarted.
func upgrade(t *testing.T, sys *system, v2 string) {
	t.Helper()
	before := sys.must("systemctl status tlsgate; sha256sum /etc/tlsgate/tlsgate.toml; ls -R /etc/tlsgate")
	oldPID := regexp.MustCompile(`Main PID: (\d+)`).FindStringSubmatch(before)
	sys.must("apt install -y ./v2/tlsgate_" + v2 + "_amd64.deb 2>&1")
	after := sys.must("systemctl status tlsgate; sha256sum /etc/tlsgate/tlsgate.toml; ls -R /etc/tlsgate")
	newPID := regexp.MustCompile(`Main PID: (\d+)`).FindStringSubmatch(after)
	switch {
	case oldPID == nil || newPID == nil:
		t.Errorf("tlsgate not running around the upgrade:\n%s\n---\n%s", before, after)
	case oldPID[1] == newPID[1]:
		t.Errorf("the upgrade did not restart tlsgate (PID %s)", oldPID[1])
	}
	hashRe := regexp.MustCompile(`(?m)^[0-9a-f]{64}  /etc/tlsgate/tlsgate.toml$`)
	if hashRe.FindString(before) != hashRe.FindString(after) {
		t.Errorf("the upgrade changed /etc/tlsgate/tlsgate.toml")
	}
	if out := sys.must("tlsgate version"); !strings.Contains(out, v2) {
		t.Errorf("after the upgrade tlsgate version says %q, want %s", out, v2)
	}
	waitSockets(t, sys)
}

// outage: with tlsgate stopped every SMTP client gets 4xx, every delivery
// is deferred before any envelope, sendmail(1) still queues, and the
// submission service exempted as README says still accepts; once tlsgate
// is back the queue is delivered.
func outage(t *testing.T, sys *system, s *sinks, run func(string) string) {
	t.Helper()
	verifiedBefore, plainBefore := s.verified.mails(), s.plain.mails()
	sys.must("systemctl stop tlsgate")
	// An upgrade (here: the same package again) leaves a stopped tlsgate
	// stopped.
	sys.must("dpkg -i /root/v2/tlsgate_*_amd64.deb 2>&1")
	if out := sys.must("systemctl is-active tlsgate || true"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("an upgrade started a stopped tlsgate: %s", out)
	}
	if sys.exists("/var/spool/postfix/tlsgate/milter.sock") {
		t.Log("tlsgate left its milter socket behind when it stopped")
	}
	mark := sys.logSize(mailLog)
	out, _ := sys.Sh("swaks --server 127.0.0.1 --from someone@elsewhere.test --to root@mx.lab.test 2>&1")
	if !regexp.MustCompile(`(?m)^<\*\* +4\d\d `).MatchString(out) || strings.Contains(out, "queued as") {
		t.Errorf("an uncovered client was not given 4xx while tlsgate is down:\n%s", out)
	}
	if line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`milter-reject: CONNECT from \S+\[127\.0\.0\.1\]: 451 4\.7\.1 Service unavailable - try again later`), 10*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("Postfix (outage, inbound): %s", line[strings.Index(line, "postfix/"):])
	}
	sendmail(t, sys, "user2@plain.partner.test")
	sendmail(t, sys, "user2@verified.partner.test")
	for _, re := range []string{
		`to=<user2@plain\.partner\.test>, .*status=deferred \(client TLS configuration problem\)`,
		`to=<user2@verified\.partner\.test>, .*status=deferred \(client TLS configuration problem\)`,
		`warning: .*tlsgate/policy\.sock.*`,
	} {
		line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(re), 60*time.Second)
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("Postfix (outage, outbound): %s", line[strings.Index(line, "postfix/"):])
	}
	// The exemption README describes, then a submission during the outage.
	run("submission")
	out, _ = sys.Sh("swaks --server 127.0.0.1 --port 587 --from root@mx.lab.test --to user3@plain.partner.test 2>&1")
	if !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Errorf("the exempted submission service did not accept mail during the outage:\n%s", out)
	}
	if n := s.verified.mails() - verifiedBefore; n != 0 {
		t.Errorf("the verified sink saw %d MAIL FROM during the outage", n)
	}
	if n := s.plain.mails() - plainBefore; n != 0 {
		t.Errorf("the plain sink saw %d MAIL FROM during the outage", n)
	}
	// Back: everything queued is delivered.
	mark = sys.logSize(mailLog)
	sys.must("systemctl start tlsgate")
	waitSockets(t, sys)
	sys.must("postqueue -f")
	for _, to := range []string{`user2@plain\.partner\.test`, `user2@verified\.partner\.test`, `user3@plain\.partner\.test`} {
		if _, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`to=<`+to+`>, .*status=sent`), 60*time.Second); err != nil {
			t.Errorf("after the outage: %v", err)
		}
	}
}

// checkPurged: after the purge the system differs from before the first
// install only by the user and group tlsgate, the administrator's files
// and logs; nothing tlsgate owns and nothing named tlsgate is left.
func checkPurged(t *testing.T, sys *system, baseline map[string]bool) {
	t.Helper()
	sys.must("getent passwd tlsgate; getent group tlsgate")
	f := strings.Fields(sys.must("id -u tlsgate; getent group tlsgate | cut -d: -f3"))
	uid, gid := atou(f[0]), atou(f[1])
	// Files the administrator made following README (or the test made as
	// the administrator), the shim's log, and man-db's cache of formatted
	// pages (made when systemd-analyze verify checked Documentation=; man-db
	// expires it) may stay.
	allowed := regexp.MustCompile(`^(/etc/tlsgate(/.*)?|/root/tlsgate-main\.cf|/root/(v2/)?tlsgate_[^/]+\.deb|/root/v2|/etc/postfix/main\.cf\.before-tlsgate|/var/log/debsys-systemctl/tlsgate\.service\.log|/var/cache/man/cat[58]/tlsgate[.a-z0-9]*\.gz)$`)
	ch, err := sys.Changes()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, c := range ch {
		if c.Deleted || baseline[c.Path] || allowed.MatchString(c.Path) {
			continue
		}
		st, err := os.Lstat(filepath.Join(sys.Upper(), c.Path))
		if err != nil {
			continue
		}
		own := st.Sys().(*syscall.Stat_t)
		if strings.Contains(c.Path, "tlsgate") || own.Uid == uid || own.Gid == gid {
			left = append(left, c.Path)
		}
	}
	if len(left) > 0 {
		t.Errorf("purge left behind:\n%s", strings.Join(left, "\n"))
	}
	for _, p := range []string{"/run/tlsgate", "/etc/systemd/system/tlsgate.service"} {
		if sys.exists(p) {
			t.Errorf("purge left %s", p)
		}
	}
	if out := sys.must("ls -A /etc/tlsgate"); !strings.Contains(out, "tlsgate.toml") || !strings.Contains(out, "ca") {
		t.Errorf("purge removed the administrator's /etc/tlsgate: %q", out)
	}
}

func atou(s string) uint32 {
	var n uint32
	for _, c := range s {
		n = n*10 + uint32(c-'0')
	}
	return n
}
