package install

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/debsys"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// smConfig is the tlsgate.toml the Sendmail test puts where the
// administrator edits the example: Debian's own certificate and key
// (/etc/mail/tls, the key 0640 root:smmsp), the CA bundle root writes,
// inbound clients by address and outbound partners by domain and by the
// address of their server, so that Sendmail's tls_server check judges
// the server before MAIL FROM.
const smConfig = `mta = "sendmail"

[milter]
listen      = "unix:/run/tlsgate/milter.sock"
authserv_id = "mx.lab.test"

[policyd]
listen = "unix:/run/tlsgate/policy.sock"

[certs]
ca_store    = "/etc/tlsgate/ca"
ca_bundle   = "/etc/mail/tls/tlsgate-ca.pem"
server_cert = "/etc/mail/tls/sendmail-server.crt"
server_key  = "/etc/mail/tls/sendmail-common.key"

# A partner's server that must send with TLS.
[[endpoint]]
name   = "inbound-tls"
hosts  = ["127.0.0.20"]
action = "defer"
  [endpoint.inbound]
  encryption = true

# Partner servers that must present this certificate subject.
[[endpoint]]
name   = "inbound-dn"
hosts  = ["127.0.0.21", "127.0.0.22"]
action = "defer"
  [endpoint.inbound]
  validate_cert = true
  subject_dn    = "C=DE, O=Lab Test, CN=client.lab.test"

[[endpoint]]
name  = "verified"
hosts = ["verified.partner.test", "127.0.0.2"]
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"

[[endpoint]]
name  = "wrong-cn"
hosts = ["wrongcn.partner.test", "127.0.0.6"]
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"

[[endpoint]]
name  = "wrong-subject"
hosts = ["subject.partner.test", "127.0.0.3"]
  [endpoint.outbound]
  validate_cert = true
  subject_dn    = "C=DE, O=Lab Test, CN=other.partner.test"

[[endpoint]]
name  = "unknown-ca"
hosts = ["unknownca.partner.test", "127.0.0.11"]
  [endpoint.outbound]
  validate_cert = true

[[endpoint]]
name  = "strong"
hosts = ["bits.partner.test", "127.0.0.8"]
  [endpoint.outbound]
  encryption = true
  min_bits   = 256

[[endpoint]]
name  = "no-starttls"
hosts = ["notls.partner.test", "127.0.0.10"]
  [endpoint.outbound]
  encryption = true
`

// smMailertable routes each test domain to its sink (the system has no
// DNS); the sinks listen on port 25 of their address (Debian's Sendmail
// listens on 127.0.0.1 only).
const smMailertable = `verified.partner.test   esmtp:[127.0.0.2]
subject.partner.test    esmtp:[127.0.0.3]
wrongcn.partner.test    esmtp:[127.0.0.6]
plain.partner.test      esmtp:[127.0.0.7]
bits.partner.test       esmtp:[127.0.0.8]
notls.partner.test      esmtp:[127.0.0.10]
unknownca.partner.test  esmtp:[127.0.0.11]
`

// smSinks are the partners' servers for the Sendmail test.
type smSinks struct {
	verified, subject, wrongCN, plain, bits, noTLS, unknownCA *sink
}

// TestInstallSendmail installs Debian's own Sendmail package in a
// throwaway Debian system (it replaces Postfix there; the host keeps its
// own), then tlsgate's package, and follows README.md's Sendmail section
// literally. It proves, on that Sendmail:
//   - the wiring: Debian's access db stays the only access map (one
//     Kaccess line, Connect:127 RELAY and "reject@ REJECT" still apply,
//     no m4 warning, Debian's Makefile builds no "socket" map), tlsgate's
//     socket map and rulesets, tlsgate's milter, Debian's 0640
//     sendmail-common.key accepted by check and by Sendmail;
//   - inbound: a covered client without TLS refused at MAIL FROM, with
//     TLS accepted and stamped (Received:, Authentication-Results:), a
//     client certificate asked only of covered clients, a wrong subject
//     DN refused;
//   - outbound: verified delivery; a wrong CN, subject DN, CA, too weak a
//     cipher and a server without STARTTLS each refused by tls_server
//     before MAIL FROM, the mail queued; an uncovered destination
//     delivered as before;
//   - the CA file: a bundle root does not own makes Sendmail log "unsafe"
//     and drop STARTTLS, and check refuses it first;
//   - the outage: with tlsgate stopped every client gets 4xx, no server
//     sees MAIL FROM (covered or not), local submissions wait in the
//     submission queue, and everything goes out once tlsgate is back;
//   - removal as README says gives Sendmail its configuration back.
func TestInstallSendmail(t *testing.T) {
	gate(t)
	tm := newTimer(t)
	blocks := readmeBlocks(t)
	debDir := t.TempDir()
	deb := buildDeb(t, debDir, packageVersion(t))
	tm.step("make deb")
	debsys.FetchDebs(t, "sendmail")
	tm.step("fetch sendmail")

	pki := testpki.NewT(t)
	sys := &system{debsys.New(t, debsys.Options{Hostname: "mx.lab.test", Hosts: []string{"127.0.0.99 partner.test"}}), t}
	if err := sys.InstallSystemctl(); err != nil {
		t.Fatal(err)
	}
	startSyslog(t, sys, mailLog)
	debianSendmail(t, sys)
	sinks := startSendmailSinks(t, sys, pki)
	tm.step("Debian Sendmail")

	sys.withSystemd()
	run := sys.readme(blocks)
	if err := sys.WriteFile("/root/"+filepath.Base(deb), mustRead(t, deb), 0o644); err != nil {
		t.Fatal(err)
	}
	run("package")
	// Sendmail runs as root: no Sendmail user joins group tlsgate.
	if out := sys.must("id -nG smmsp; id -nG smmta"); strings.Contains(out, "tlsgate") {
		t.Errorf("the package added a Sendmail user to group tlsgate: %s", out)
	}
	run("sendmail-config")
	if err := sys.WriteFile("/etc/tlsgate/tlsgate.toml", []byte(smConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sys.WriteFile("/root/partner-cas.pem", mustRead(t, pki.CA.CertFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := sys.must("stat -c '%U:%G %a' /etc/mail/tls/sendmail-common.key"); strings.TrimSpace(out) != "root:smmsp 640" {
		t.Fatalf("Debian's sendmail-common.key is %s, not root:smmsp 640", out)
	}
	run("sendmail-ca")
	wire := run("sendmail-wire")
	if strings.Contains(wire, "WARNING") || regexp.MustCompile(`(?m)^(Creating|Updating) \S*socket`).MatchString(wire) {
		t.Errorf("the wiring or Debian's make warned, or made a map called socket:\n%s", wire)
	}
	checkSendmailWiring(t, sys)
	run("sendmail-start")
	waitRunSockets(t, sys)
	if out := ehlo(t, sys); !strings.Contains(out, "250-STARTTLS") {
		t.Errorf("Sendmail offers no STARTTLS after the README's steps:\n%s", out)
	}
	tm.step("README install")

	smAccessDB(t, sys)
	tm.step("access db")
	smInbound(t, sys, pki, sinks)
	tm.step("inbound")
	smOutbound(t, sys, sinks)
	tm.step("outbound")
	smUnsafeCA(t, sys)
	tm.step("unsafe CA file")
	smOutage(t, sys, sinks)
	tm.step("outage")

	// Removal as README says: Sendmail's own configuration is back, so
	// the queued mail to the partner without STARTTLS goes out in clear.
	before := sinks.noTLS.mails()
	run("sendmail-uninstall")
	if out := sys.must("grep -c -e tlspolicy -e Xtlsgate /etc/mail/sendmail.cf || true"); strings.TrimSpace(out) != "0" {
		t.Errorf("sendmail.cf still has tlsgate's lines after the README's removal: %s", out)
	}
	if out, _ := sys.Sh("pgrep -x tlsgate || echo none"); strings.TrimSpace(out) != "none" {
		t.Errorf("tlsgate still runs after apt purge: %s", out)
	}
	sys.must("sendmail -q")
	if !waitFor(30*time.Second, func() bool { return sinks.noTLS.mails() > before }) {
		t.Errorf("without tlsgate the queued mail to the partner without STARTTLS stayed queued:\n%s", sys.must("mailq"))
	}
	tm.step("uninstall")

	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		t.Errorf("the host lost its Postfix: %v", err)
	}
}

// debianSendmail installs Debian's Sendmail into the system (apt replaces
// Postfix there) and sets up the lab around it, as the administrator's
// existing configuration: host names from /etc/hosts only (no DNS) and a
// mailertable that routes the test domains to the sinks.
func debianSendmail(t *testing.T, sys *system) {
	t.Helper()
	out := sys.AptInstall(t, false, "sendmail")
	t.Logf("apt-get install sendmail:\n%s", out)
	if got := sys.must("dpkg-query -W -f='${Status}' sendmail-bin; echo; dpkg-query -W -f='${Status}' postfix 2>&1 || true"); !strings.HasPrefix(got, "install ok installed\n") || strings.Contains(got, "\ninstall ok installed") {
		t.Fatalf("in the system: %q, want sendmail-bin installed and postfix gone", got)
	}
	mc, err := sys.ReadFile("/etc/mail/sendmail.mc")
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "FEATURE(`use_cw_file')dnl\n"
	if !strings.Contains(string(mc), anchor) {
		t.Fatalf("Debian's sendmail.mc has no %q line:\n%s", anchor, mc)
	}
	if err := sys.WriteFile("/etc/mail/sendmail.mc", []byte(strings.Replace(string(mc), anchor, "FEATURE(`mailertable')dnl\n"+anchor, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sys.WriteFile("/etc/mail/mailertable", []byte(smMailertable), 0o644); err != nil {
		t.Fatal(err)
	}
	// Debian's Makefile first rewrites itself from the .mc, then builds
	// the new map.
	sys.must(`cp /etc/mail/service.switch-nodns /etc/mail/service.switch
make -C /etc/mail >/dev/null 2>&1
make -C /etc/mail 2>&1
systemctl restart sendmail`)
	if _, err := sys.waitLog(mailLog, 0, regexp.MustCompile(`sm-mta\[\d+\]: starting daemon \(8\.17\.1\.9\)`), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if !waitFor(30*time.Second, func() bool { _, err := sys.Sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/25'"); return err == nil }) {
		t.Fatal("Sendmail does not listen on 127.0.0.1:25")
	}
}

func startSendmailSinks(t *testing.T, sys *system, pki *testpki.PKI) *smSinks {
	t.Helper()
	// The strong partner's server has only AES-128 (TLS 1.2).
	weak := sinkTLS(t, pki.Sink)
	weak.MaxVersion = tls.VersionTLS12
	weak.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	var s smSinks
	startSinkSpecs(t, sys, []sinkSpec{
		{"127.0.0.2:25", sinkTLS(t, pki.Sink), &s.verified},
		{"127.0.0.3:25", sinkTLS(t, pki.Sink), &s.subject},
		{"127.0.0.6:25", sinkTLS(t, pki.WrongCN), &s.wrongCN},
		{"127.0.0.7:25", nil, &s.plain},
		{"127.0.0.8:25", weak, &s.bits},
		{"127.0.0.10:25", nil, &s.noTLS},
		{"127.0.0.11:25", sinkTLS(t, pki.OtherCASink), &s.unknownCA},
	})
	return &s
}

// checkSendmailWiring: what the README's wiring left in Debian's files.
func checkSendmailWiring(t *testing.T, sys *system) {
	t.Helper()
	cf := sys.must("cat /etc/mail/sendmail.cf")
	if n := len(regexp.MustCompile(`(?m)^Kaccess `).FindAllString(cf, -1)); n != 1 {
		t.Errorf("sendmail.cf has %d Kaccess lines, want Debian's one", n)
	}
	for _, want := range []string{
		"\nKaccess hash -T<TMPF> /etc/mail/access\n",
		"\nKtlspolicy socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock\n",
		"\nO CACertFile=/etc/mail/tls/tlsgate-ca.pem\n",
		"\nO InputMailFilters=tlsgate\n",
		"\nSLocal_tls_server\n",
		"\nSLocal_tls_rcpt\n",
		"\nSLocal_srv_features\n",
	} {
		if !strings.Contains(cf, want) {
			t.Errorf("sendmail.cf lacks %q", strings.TrimSpace(want))
		}
	}
	if m := regexp.MustCompile(`(?m)^O DontBlameSendmail=.*$`).FindString(cf); strings.Count(m, "GroupReadableKeyFile") != 1 {
		t.Errorf("DontBlameSendmail must name GroupReadableKeyFile once: %s", m)
	}
	if out := sys.must("grep '^access_db:' /etc/mail/databases; grep -c socket /etc/mail/Makefile || true; ls /etc/mail"); !strings.Contains(out, "access_db:hash:-:/etc/mail/access:skip:") ||
		!strings.Contains(out, "\n0\n") || strings.Contains(out, "socket") {
		t.Errorf("Debian's make tooling sees another access map:\n%s", out)
	}
	// Running --apply again changes nothing.
	if out := sys.must("tlsgate mta-config -c /etc/tlsgate/tlsgate.toml --apply"); !strings.Contains(out, "nothing changed") {
		t.Errorf("a second mta-config --apply changed the .mc:\n%s", out)
	}
}

// waitRunSockets waits for tlsgate's sockets in /run/tlsgate.
func waitRunSockets(t *testing.T, sys *system) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool {
		return sys.exists("/run/tlsgate/milter.sock") && sys.exists("/run/tlsgate/policy.sock")
	}) {
		t.Fatalf("tlsgate made no sockets; its log:\n%s", sys.ShimLog("tlsgate"))
	}
}

// ehlo returns Sendmail's answer to EHLO.
func ehlo(t *testing.T, sys *system) string {
	t.Helper()
	out, _ := sys.Sh("swaks --server 127.0.0.1 --quit-after EHLO 2>&1")
	return out
}

// swaksReplies keeps swaks's lines with the server's replies and errors.
func swaksReplies(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "<") || strings.HasPrefix(l, "***") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// smAccessDB: Debian's access db still applies: Connect:127 RELAY lets a
// loopback client relay (and only it), "reject@ REJECT" refuses.
func smAccessDB(t *testing.T, sys *system) {
	t.Helper()
	relay := "swaks --server 127.0.0.1 --local-interface 127.0.0.13 --from root@mx.lab.test --to user@plain.partner.test --quit-after RCPT 2>&1"
	if out, _ := sys.Sh(relay); !strings.Contains(out, "<-  250 2.1.5 <user@plain.partner.test>... Recipient ok") {
		t.Errorf("Connect:127 RELAY did not let 127.0.0.13 relay:\n%s", swaksReplies(out))
	} else {
		t.Logf("Connect:127 RELAY applies: %s", regexp.MustCompile(`(?m)^<-  250 2\.1\.5 .*$`).FindString(out))
	}
	sys.must("sed -i 's/^Connect:127\\t/#&/' /etc/mail/access && make -C /etc/mail >/dev/null 2>&1")
	if out, _ := sys.Sh(relay); !regexp.MustCompile(`(?m)^<\*\* +[45]\d\d [45]\.\d\.\d <user@plain\.partner\.test>\.\.\. Relaying`).MatchString(out) {
		t.Errorf("without Connect:127 RELAY, 127.0.0.13 could still relay: the access db is not what decides:\n%s", swaksReplies(out))
	}
	sys.must("sed -i 's/^#\\(Connect:127\\t\\)/\\1/' /etc/mail/access && make -C /etc/mail >/dev/null 2>&1")
	out, _ := sys.Sh("swaks --server 127.0.0.1 --from reject@partner.test --to root@mx.lab.test --quit-after RCPT 2>&1")
	if !strings.Contains(out, "Access denied") {
		t.Errorf("Debian's \"reject@ REJECT\" did not apply:\n%s", swaksReplies(out))
	}
}

// smInbound: a covered client without TLS is deferred at MAIL FROM, one
// with TLS is accepted and stamped; a client certificate is asked of
// covered clients only; a wrong subject DN is deferred.
func smInbound(t *testing.T, sys *system, pki *testpki.PKI, s *smSinks) {
	t.Helper()
	for name, c := range map[string]*testpki.Cert{"client": pki.Client, "wrong": pki.WrongCN} {
		if err := sys.WriteFile("/root/"+name+".crt", mustRead(t, c.CertFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := sys.WriteFile("/root/"+name+".key", mustRead(t, c.KeyFile), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mark := sys.logSize(mailLog)
	out, _ := sys.Sh("swaks --server 127.0.0.1 --local-interface 127.0.0.20 --from orders@partner.test --to user@plain.partner.test 2>&1")
	if !regexp.MustCompile(`(?m)^<\*\* +451 4\.7\.1 `).MatchString(out) || strings.Contains(out, "queued as") || strings.Contains(out, "Message accepted") {
		t.Errorf("a covered client without TLS was not deferred at MAIL FROM:\n%s", swaksReplies(out))
	}
	if line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`sm-mta\[\d+\]: \w+: Milter: from=<orders@partner\.test>, reject=451 4\.7\.1 `), 10*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("Sendmail (inbound refusal): %s", line)
	}
	if _, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`tlsgate\[\d+\]: \w+: tlsgate: result=defer endpoint=inbound-tls .*client=\S+\[127\.0\.0\.20\]`), 10*time.Second); err != nil {
		t.Error(err)
	}

	plainBefore := len(s.plainMessages())
	for _, c := range []struct {
		addr, args, want string
	}{
		{"127.0.0.20", "--tls", "x-tls=pass"},
		{"127.0.0.21", "--tls --tls-cert /root/client.crt --tls-key /root/client.key", "x-tls=pass"},
		{"127.0.0.13", "--tls", "x-tls=none"},
	} {
		out, _ := sys.Sh("swaks --server 127.0.0.1 --local-interface " + c.addr + " " + c.args + " --from orders@partner.test --to user@plain.partner.test --header 'Subject: from " + c.addr + "' 2>&1")
		if !strings.Contains(out, "Message accepted for delivery") {
			t.Errorf("%s %s was not accepted:\n%s", c.addr, c.args, swaksReplies(out))
		}
	}
	mark2 := sys.logSize(mailLog)
	out, _ = sys.Sh("swaks --server 127.0.0.1 --local-interface 127.0.0.22 --tls --tls-cert /root/wrong.crt --tls-key /root/wrong.key --from orders@partner.test --to user@plain.partner.test 2>&1")
	if !regexp.MustCompile(`(?m)^<~\* +451 4\.7\.1 `).MatchString(out) || strings.Contains(out, "Message accepted") {
		t.Errorf("a client with the wrong subject DN was not deferred at MAIL FROM:\n%s", swaksReplies(out))
	}
	if line, err := sys.waitLog(mailLog, mark2, regexp.MustCompile(`tlsgate\[\d+\]: \w+: tlsgate: result=defer endpoint=inbound-dn .*client=\S+\[127\.0\.0\.22\] .*verify=OK reason="endpoint=inbound-dn check=subject_dn `), 10*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("tlsgate (subject DN): %s", line)
	}
	// A certificate is asked of covered clients only (Srv_Features).
	for re, what := range map[string]string{
		`STARTTLS=server, relay=\[127\.0\.0\.21\], version=TLSv1\.3, verify=OK,`:  "the covered client's certificate verified",
		`STARTTLS=server, relay=\[127\.0\.0\.22\], version=TLSv1\.3, verify=OK,`:  "the wrong-DN client's certificate verified",
		`STARTTLS=server, relay=\[127\.0\.0\.13\], version=TLSv1\.3, verify=NOT,`: "no certificate asked of an uncovered client",
		`STARTTLS=server, relay=\[127\.0\.0\.20\], version=TLSv1\.3, verify=NOT,`: "no certificate asked of a client whose endpoint needs none",
	} {
		if line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(re), 10*time.Second); err != nil {
			t.Errorf("%s: %v", what, err)
		} else {
			t.Logf("Sendmail (%s): %s", what, line)
		}
	}
	// The stamps, as the partner's server received the relayed mail.
	if !waitFor(30*time.Second, func() bool { return len(s.plainMessages()) >= plainBefore+3 }) {
		t.Fatalf("the relayed messages did not arrive: %d of 3", len(s.plainMessages())-plainBefore)
	}
	for _, m := range s.plainMessages()[plainBefore:] {
		ar := regexp.MustCompile(`(?m)^Authentication-Results: mx\.lab\.test; x-tls=\w+`).FindString(m)
		rcv := regexp.MustCompile(`(?m)^Received: from .*\r?\n\tby mx\.lab\.test \(tlsgate\) with ESMTPS id \w+`).FindString(m)
		if ar == "" || rcv == "" {
			t.Errorf("a relayed message lacks tlsgate's stamps:\n%s", m)
			continue
		}
		subj := regexp.MustCompile(`(?m)^Subject: from (\S+)`).FindStringSubmatch(m)
		t.Logf("stamps on the message from %v: %s | %s", subj, ar, strings.ReplaceAll(rcv, "\n", " "))
		if subj != nil && subj[1] == "127.0.0.13" && !strings.Contains(ar, "x-tls=none") || subj != nil && subj[1] != "127.0.0.13" && !strings.Contains(ar, "x-tls=pass") {
			t.Errorf("message from %s: %s", subj[1], ar)
		}
	}
}

// plainMessages are the messages the sink without STARTTLS received.
func (s *smSinks) plainMessages() []string {
	msgs, _ := s.plain.messages()
	return msgs
}

func smSendmail(t *testing.T, sys *system, to string, args ...string) {
	t.Helper()
	sys.must("printf 'Subject: install test to " + to + "\\n\\nhello\\n' | sendmail " + strings.Join(args, " ") + " -f root@mx.lab.test " + to)
}

// smOutbound: verified delivery, each failed requirement refused by
// tls_server before MAIL FROM, an uncovered destination as before.
func smOutbound(t *testing.T, sys *system, s *smSinks) {
	t.Helper()
	mark := sys.logSize(mailLog)
	for _, d := range []string{"verified", "wrongcn", "subject", "unknownca", "bits", "notls", "plain"} {
		smSendmail(t, sys, "user@"+d+".partner.test")
	}
	for _, w := range []struct{ re, what string }{
		{`STARTTLS=client, relay=\[127\.0\.0\.2\], version=TLSv1\.3, verify=OK,`, "verified TLS"},
		{`to=<user@verified\.partner\.test>, .*relay=\[127\.0\.0\.2\] \[127\.0\.0\.2\], dsn=2\.0\.0, stat=Sent`, "delivery to the right name"},
		{`ruleset=tls_server, arg1=OK, relay=\[127\.0\.0\.6\], reject=403 4\.7\.0 CN wrong\.partner\.test does not match sink\.partner\.test`, "the CN"},
		{`ruleset=tls_server, arg1=OK, relay=\[127\.0\.0\.3\], reject=403 4\.7\.0 Cert Subject /C=DE/O=Lab\+20Test/CN=sink\.partner\.test does not match /C=DE/O=Lab\+20Test/CN=other\.partner\.test`, "the subject DN"},
		{`STARTTLS=client, relay=\[127\.0\.0\.11\], version=TLSv1\.3, verify=FAIL,`, "a CA the bundle does not have"},
		{`ruleset=tls_server, arg1=FAIL, relay=\[127\.0\.0\.11\], reject=403 4\.7\.0 authentication failed`, "the chain"},
		{`ruleset=tls_server, arg1=OK, relay=\[127\.0\.0\.8\], reject=403 4\.7\.0 encryption too weak 128 less than 256`, "the cipher strength"},
		{`ruleset=tls_server, arg1=NONE, relay=\[127\.0\.0\.10\], reject=403 4\.7\.0 encryption too weak 0 less than 40`, "no STARTTLS"},
		{`to=<user@notls\.partner\.test>, .*relay=\[127\.0\.0\.10\] \[127\.0\.0\.10\], dsn=4\.7\.0, stat=Deferred: 403 4\.7\.0 encryption too weak 0 less than 40`, "deferral without STARTTLS"},
		{`to=<user@plain\.partner\.test>, .*relay=\[127\.0\.0\.7\] \[127\.0\.0\.7\], dsn=2\.0\.0, stat=Sent`, "the uncovered destination"},
	} {
		line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(w.re), 60*time.Second)
		if err != nil {
			t.Errorf("%s: %v", w.what, err)
			continue
		}
		t.Logf("Sendmail (%s): %s", w.what, line[strings.Index(line, "sm-mta["):])
	}
	if msgs, tlsOK := s.verified.messages(); len(msgs) != 1 || !tlsOK[0] {
		t.Errorf("verified sink: %d messages, TLS %v; want 1 over TLS", len(msgs), tlsOK)
	}
	for name, sk := range map[string]*sink{"wrong CN": s.wrongCN, "wrong subject": s.subject, "unknown CA": s.unknownCA, "weak cipher": s.bits, "no STARTTLS": s.noTLS} {
		if n := sk.mails(); n != 0 {
			t.Errorf("%s sink saw %d MAIL FROM; the envelope must not be sent", name, n)
		}
	}
	if out := sys.must("mailq"); !strings.Contains(out, "user@notls.partner.test") || !strings.Contains(out, "encryption too weak 0 less than 40") {
		t.Errorf("the mail to the partner without STARTTLS is not queued:\n%s", out)
	}
}

// smUnsafeCA: a CA bundle root does not own is refused by Sendmail ("file
// ... unsafe", no STARTTLS), and tlsgate check refuses it first.
func smUnsafeCA(t *testing.T, sys *system) {
	t.Helper()
	sys.must("chown tlsgate /etc/mail/tls/tlsgate-ca.pem")
	if out := sys.fails("tlsgate check -c /etc/tlsgate/tlsgate.toml 2>&1"); !strings.Contains(out, "owned by tlsgate, not root") || !strings.Contains(out, "tlsgate certs store bundle --store /etc/tlsgate/ca --out /etc/mail/tls/tlsgate-ca.pem") {
		t.Errorf("check accepted a CA bundle Sendmail refuses, or named no fix:\n%s", out)
	} else {
		t.Logf("tlsgate check: %s", regexp.MustCompile(`(?m)^.*owned by tlsgate.*$`).FindString(out))
	}
	mark := sys.logSize(mailLog)
	sys.must("systemctl restart sendmail")
	if line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`sm-mta\[\d+\]: STARTTLS=server: file /etc/mail/tls/tlsgate-ca\.pem unsafe: Permission denied`), 20*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("Sendmail (CA file not root's): %s", line)
	}
	waitSMTP(t, sys)
	if out := ehlo(t, sys); strings.Contains(out, "STARTTLS") {
		t.Errorf("Sendmail offers STARTTLS with a CA file it calls unsafe:\n%s", out)
	}
	sys.must("tlsgate certs store bundle --store /etc/tlsgate/ca --out /etc/mail/tls/tlsgate-ca.pem; tlsgate check -c /etc/tlsgate/tlsgate.toml; systemctl restart sendmail")
	waitSMTP(t, sys)
	if out := ehlo(t, sys); !strings.Contains(out, "250-STARTTLS") {
		t.Errorf("no STARTTLS with the bundle root wrote again:\n%s", out)
	}
}

// waitSMTP waits until Sendmail greets on 127.0.0.1:25.
func waitSMTP(t *testing.T, sys *system) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool {
		out, _ := sys.Sh("swaks --server 127.0.0.1 --quit-after CONNECT 2>&1")
		return strings.Contains(out, "<-  220 ")
	}) {
		t.Fatal("Sendmail does not greet on 127.0.0.1:25")
	}
}

// smOutage: with tlsgate stopped every client gets 4xx; queued mail, to
// covered and uncovered destinations, is refused by tls_server before
// MAIL FROM; a local submission waits in the submission queue; once
// tlsgate is back everything but the refused partner goes out.
func smOutage(t *testing.T, sys *system, s *smSinks) {
	t.Helper()
	// Two messages in the MTA's queue (queue-only delivery through
	// sendmail.cf, as a queue run would find them).
	smSendmail(t, sys, "user2@verified.partner.test", "-Am", "-odq")
	smSendmail(t, sys, "user2@plain.partner.test", "-Am", "-odq")
	verifiedBefore, plainBefore, noTLSBefore := s.verified.mails(), s.plain.mails(), s.noTLS.mails()
	sys.must("systemctl stop tlsgate")
	mark := sys.logSize(mailLog)
	out, _ := sys.Sh("swaks --server 127.0.0.1 --local-interface 127.0.0.13 --from orders@partner.test --to user@plain.partner.test 2>&1")
	if !regexp.MustCompile(`(?m)^<\*\* +4\d\d `).MatchString(out) || strings.Contains(out, "Message accepted") {
		t.Errorf("an uncovered client was not given 4xx while tlsgate is down:\n%s", swaksReplies(out))
	} else {
		t.Logf("swaks (outage):\n%s", swaksReplies(out))
	}
	for _, re := range []string{
		`sm-mta\[\d+\]: \w+: Milter \(tlsgate\): local socket name /run/tlsgate/milter\.sock unsafe`,
		`sm-mta\[\d+\]: \w+: Milter: initialization failed, temp failing commands`,
		`SYSERR\(root\): socket map "tlspolicy": local socket name /run/tlsgate/policy\.sock unsafe: No such file or directory`,
	} {
		if line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(re), 10*time.Second); err != nil {
			t.Error(err)
		} else {
			t.Logf("Sendmail (outage, inbound): %s", line)
		}
	}
	smSendmail(t, sys, "user3@plain.partner.test")
	sys.must("sendmail -q")
	for _, re := range []string{
		`ruleset=tls_server, arg1=OK, relay=\[127\.0\.0\.2\], reject=451 4\.3\.0 Temporary system failure: tlsgate TLS policy lookup failed\. Please try again later\.`,
		`ruleset=tls_server, arg1=NONE, relay=\[127\.0\.0\.7\], reject=451 4\.3\.0 Temporary system failure: tlsgate TLS policy lookup failed\. Please try again later\.`,
		`ruleset=tls_server, arg1=NONE, relay=\[127\.0\.0\.10\], reject=451 4\.3\.0 Temporary system failure: tlsgate TLS policy lookup failed\. Please try again later\.`,
		`to=user2@verified\.partner\.test, .*dsn=4\.3\.0, stat=Deferred: 451 4\.3\.0 Temporary system failure`,
		`to=user2@plain\.partner\.test, .*dsn=4\.3\.0, stat=Deferred: 451 4\.3\.0 Temporary system failure`,
	} {
		line, err := sys.waitLog(mailLog, mark, regexp.MustCompile(re), 60*time.Second)
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("Sendmail (outage, outbound): %s", line)
	}
	if n := s.verified.mails() - verifiedBefore; n != 0 {
		t.Errorf("the verified partner saw %d MAIL FROM during the outage", n)
	}
	if n := s.plain.mails() - plainBefore; n != 0 {
		t.Errorf("the uncovered partner saw %d MAIL FROM during the outage", n)
	}
	if n := s.noTLS.mails() - noTLSBefore; n != 0 {
		t.Errorf("the partner without STARTTLS saw %d MAIL FROM during the outage", n)
	}
	if out := sys.must("mailq -Ac"); !strings.Contains(out, "user3@plain.partner.test") {
		t.Errorf("the local submission is not in the submission queue during the outage:\n%s", out)
	}
	// Back: everything queued goes out, the partner without STARTTLS stays
	// refused.
	mark = sys.logSize(mailLog)
	sys.must("systemctl start tlsgate")
	waitRunSockets(t, sys)
	sys.must("sendmail -q; sendmail -Ac -q")
	for _, to := range []string{`user2@verified\.partner\.test`, `user2@plain\.partner\.test`, `user3@plain\.partner\.test`} {
		if _, err := sys.waitLog(mailLog, mark, regexp.MustCompile(`(sm-mta|sendmail)\[\d+\]: \w+: to=<?`+to+`>?, .*stat=Sent`), 60*time.Second); err != nil {
			t.Errorf("after the outage: %v", err)
		}
	}
	if n := s.noTLS.mails() - noTLSBefore; n != 0 {
		t.Errorf("the partner without STARTTLS saw %d MAIL FROM after the outage", n)
	}
}
