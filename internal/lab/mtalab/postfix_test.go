package mtalab

import (
	"crypto/tls"
	"fmt"
	"net/smtp"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// sendMail sends one message to addr with net/smtp; tlsCfg non-nil means
// STARTTLS first (which must be offered).
func sendMail(t *testing.T, addr string, tlsCfg *tls.Config, from, to, subject string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Hello("client.lab.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if tlsCfg != nil {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatalf("%s does not offer STARTTLS", addr)
		}
		if err := c.StartTLS(tlsCfg); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
	}
	if err := c.Mail(from); err != nil {
		t.Fatalf("MAIL FROM: %v", err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatalf("RCPT TO: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d@client.lab.test>\r\n\r\nbody line\r\n.leading dot\r\n",
		from, to, subject, time.Now().UnixNano())
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
}

func TestPostfixRelaysPlain(t *testing.T) {
	t.Parallel()
	sink := StartSink(t, SinkOptions{})
	pf := StartPostfix(t, PostfixOptions{
		Transport: map[string]string{"partner.test": sink.Nexthop()},
	})
	sendMail(t, pf.SMTPAddr("smtp"), nil, "sender@lab.test", "user@partner.test", "plain")
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "sender@lab.test" || len(m.To) != 1 || m.To[0] != "user@partner.test" || m.TLS != nil {
		t.Errorf("sink got %+v", m)
	}
	if !strings.Contains(string(m.Data), "Subject: plain\r\n") || !strings.Contains(string(m.Data), "\r\n.leading dot\r\n") {
		t.Errorf("data:\n%s", m.Data)
	}
	if _, err := pf.WaitLog(regexp.MustCompile(`postfix/smtp\[\d+\]: \w+: to=<user@partner.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent`), 10*time.Second); err != nil {
		t.Error(err)
	}
	if err := pf.WaitQueueEmpty(10 * time.Second); err != nil {
		t.Error(err)
	}
	checkLoopbackOnly(t, pf.ns.id, pf.SMTPAddr("smtp"))
	if err := pf.Stop(); err != nil {
		t.Fatal(err)
	}
	if pf.master.alive() {
		t.Errorf("master %d alive after Stop", pf.MasterPID())
	}
	if left := nsProcs(pf.ns.id); len(left) > 0 {
		t.Errorf("processes left in the namespace: %v", left)
	}

}

func TestPostfixRelaysTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.NewT(t)
	sink := StartSink(t, SinkOptions{TLS: pki.Sink})
	pf := StartPostfix(t, PostfixOptions{
		Transport:    map[string]string{"tls.partner.test": sink.Nexthop()},
		TLS:          pki.Server,
		ClientCAFile: pki.CA.CertFile,
		SMTPCAFile:   pki.CA.CertFile,
	})
	if v, err := pf.Postconf("smtp_tls_security_level"); err != nil || v != "may" {
		t.Errorf("smtp_tls_security_level = %q, %v", v, err)
	}
	client, err := tls.LoadX509KeyPair(pki.Client.CertFile, pki.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	sendMail(t, pf.SMTPAddr("smtp"), &tls.Config{
		ServerName:   "mx.lab.test",
		RootCAs:      pki.CA.Pool(),
		Certificates: []tls.Certificate{client},
	}, "sender@lab.test", "user@tls.partner.test", "tls both legs")

	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.TLS == nil || m.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("sink saw no TLS: %+v", m)
	}
	t.Logf("sink: %s %s", m.TLS.VersionName, m.TLS.CipherSuite)
	// Inbound: smtpd verified our client certificate against the lab CA.
	if _, err := pf.WaitLog(regexp.MustCompile(`postfix/smtpd\[\d+\]: Trusted TLS connection established from localhost\[127\.0\.0\.1\]`), 10*time.Second); err != nil {
		t.Error(err)
	}
	if !strings.Contains(string(m.Data), `(Client CN "client.lab.test", Issuer "Lab Test CA" (verified OK))`) {
		t.Errorf("no verified client cert in Received:\n%s", m.Data)
	}
	// Outbound: smtp trusted the sink's certificate (may + CAfile gives
	// "Trusted"; a matching policy would give "Verified").
	if _, err := pf.WaitLog(regexp.MustCompile(`postfix/smtp\[\d+\]: (Trusted|Verified) TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: TLSv1\.[23]`), 10*time.Second); err != nil {
		t.Error(err)
	}
	if _, err := pf.WaitLog(regexp.MustCompile(`to=<user@tls.partner.test>, .*status=sent`), 10*time.Second); err != nil {
		t.Error(err)
	}
}

// TestPostfixDefersAndQueue checks Queue, Flush, Reload and the
// sink's refusal hook: a sink that answers 451 to RCPT keeps the message
// in Postfix's deferred queue with that reason, and it goes out after the
// sink accepts again and the queue is flushed.
func TestPostfixDefersAndQueue(t *testing.T) {
	t.Parallel()
	var refuse sync.Mutex
	refusing := true
	sink := StartSink(t, SinkOptions{Reply: func(stage, arg string) string {
		refuse.Lock()
		defer refuse.Unlock()
		if stage == "RCPT" && refusing {
			return "451 4.7.1 lab says try later"
		}
		return ""
	}})
	pf := StartPostfix(t, PostfixOptions{
		Transport: map[string]string{"partner.test": sink.Nexthop()},
		Services:  []Service{{Name: "nomilter", Overrides: []string{"smtpd_milters=", "smtpd_recipient_restrictions="}}},
	})
	if pf.SMTPAddr("nomilter") == pf.SMTPAddr("smtp") {
		t.Fatal("services share a port")
	}
	sendMail(t, pf.SMTPAddr("nomilter"), nil, "sender@lab.test", "user@partner.test", "deferred")
	if _, err := pf.WaitLog(regexp.MustCompile(`status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 451 4\.7\.1 lab says try later`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	q, err := pf.WaitQueue(func(q []QueueEntry) bool {
		return len(q) == 1 && q[0].Queue == "deferred"
	}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].Queue != "deferred" || q[0].Sender != "sender@lab.test" || len(q[0].Recipients) != 1 ||
		q[0].Recipients[0].Address != "user@partner.test" || !strings.Contains(q[0].Recipients[0].Reason, "lab says try later") {
		t.Fatalf("queue: %+v", q)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("sink completed %d messages", n)
	}
	if env := sink.Envelopes(); len(env) == 0 || len(env[0].To) != 0 {
		t.Errorf("envelopes: %+v", env)
	}
	if err := pf.Reload(); err != nil {
		t.Fatal(err)
	}
	refuse.Lock()
	refusing = false
	refuse.Unlock()
	mark := pf.LogMark()
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`to=<user@partner.test>, .*status=sent`), 10*time.Second); err != nil {
		t.Error(err)
	}
	if err := pf.WaitQueueEmpty(10 * time.Second); err != nil {
		t.Error(err)
	}
}

// TestPostfixHooks checks that the Milter, PolicyService and
// TLSPolicyMaps options reach Postfix: the milter is contacted (and, being
// broken, makes smtpd tempfail), the policy server sees the RCPT request
// and the socketmap sees the TLS policy lookup of the nexthop.
func TestPostfixHooks(t *testing.T) {
	t.Parallel()
	sink := StartSink(t, SinkOptions{})
	milter, milterSeen := startBrokenMilter(t)
	policy, policySeen := startPolicy(t)
	smap, smapSeen := startSocketmap(t)
	pf := StartPostfix(t, PostfixOptions{
		Transport:     map[string]string{"partner.test": sink.Nexthop()},
		Milter:        fmt.Sprintf("inet:127.0.0.1:%d", port(milter)),
		PolicyService: fmt.Sprintf("inet:127.0.0.1:%d", port(policy)),
		TLSPolicyMaps: fmt.Sprintf("socketmap:inet:127.0.0.1:%d:tlspolicy", port(smap)),
		Services:      []Service{{Name: "nomilter", Overrides: []string{"smtpd_milters="}}},
	})
	if v, _ := pf.Postconf("milter_default_action"); v != "tempfail" {
		t.Fatalf("milter_default_action = %q", v)
	}

	// With the broken milter: a temporary failure, nothing relayed.
	c, err := smtp.Dial(pf.SMTPAddr("smtp"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Hello("client.lab.test")
	if err == nil {
		err = c.Mail("sender@lab.test")
	}
	if err == nil {
		err = c.Rcpt("user@partner.test")
	}
	c.Close()
	if err == nil || !strings.HasPrefix(err.Error(), "4") {
		t.Errorf("session with a broken milter: err = %v, want a 4xx", err)
	}
	if !milterSeen.has("cmd=O") {
		t.Errorf("milter saw %q, want an SMFIC_OPTNEG", milterSeen.all())
	}

	// Without the milter: policy and socketmap are asked, mail goes out.
	sendMail(t, pf.SMTPAddr("nomilter"), nil, "sender@lab.test", "user@partner.test", "hooks")
	if _, err := sink.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if !policySeen.has("request=smtpd_access_policy") || !policySeen.has("recipient=user@partner.test") {
		t.Errorf("policy server saw %q", policySeen.all())
	}
	if want := fmt.Sprintf("tlspolicy [127.0.0.1]:%d", sink.Port()); !smapSeen.has(want) {
		t.Errorf("socketmap saw %q, want %q", smapSeen.all(), want)
	}
	if len(sink.Envelopes()) != 1 {
		t.Errorf("sink envelopes: %+v", sink.Envelopes())
	}
}

// TestPostfixPrivateHosts: names resolve only through the namespace's
// hosts file (hosts: files), never through the system's resolver.
func TestPostfixPrivateHosts(t *testing.T) {
	t.Parallel()
	sink := StartSink(t, SinkOptions{})
	pf := StartPostfix(t, PostfixOptions{
		Transport: map[string]string{
			"dom.partner.test":    fmt.Sprintf("smtp:mx.dom.partner.test:%d", sink.Port()),
			"nohost.partner.test": fmt.Sprintf("smtp:missing.partner.test:%d", sink.Port()),
		},
		Hosts: []string{"127.0.0.1 mx.dom.partner.test"},
	})
	for file, want := range map[string]string{
		"nsswitch.conf": "hosts: files\n",
		"hosts":         "127.0.0.1 mx.dom.partner.test\n",
		"resolv.conf":   "nameserver 127.0.0.1\n",
	} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/%s", pf.MasterPID(), file))
		if err != nil || !strings.Contains(string(data), want) {
			t.Errorf("master's /etc/%s lacks %q (%v):\n%s", file, want, err, data)
		}
	}
	if self, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(self), "mtalab") {
		t.Error("the test process sees the private resolv.conf: the bind mount leaked")
	}
	sendMail(t, pf.SMTPAddr("smtp"), nil, "sender@lab.test", "user@dom.partner.test", "by name")
	sendMail(t, pf.SMTPAddr("smtp"), nil, "sender@lab.test", "user@nohost.partner.test", "no such host")
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].To[0] != "user@dom.partner.test" {
		t.Errorf("sink got %+v", msgs[0])
	}
	if _, err := pf.WaitLog(regexp.MustCompile(`to=<user@dom\.partner\.test>, relay=mx\.dom\.partner\.test\[127\.0\.0\.1\]:\d+, .*status=sent`), 10*time.Second); err != nil {
		t.Error(err)
	}
	if _, err := pf.WaitLog(regexp.MustCompile(`to=<user@nohost\.partner\.test>, relay=none, .*status=bounced \(unable to look up host missing\.partner\.test: Name or service not known\)`), 20*time.Second); err != nil {
		t.Error(err)
	}
	if n := len(sink.Envelopes()); n != 1 {
		t.Errorf("sink saw %d envelopes, want 1", n)
	}
}

// checkLoopbackOnly asserts that the MTA in namespace ns listens on
// 127.0.0.1 only, and on want among others.
func checkLoopbackOnly(t *testing.T, ns, want string) {
	t.Helper()
	ls, err := nsListeners(ns)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range ls {
		if !strings.HasPrefix(l, "127.0.0.1:") {
			t.Errorf("listens on %s, not loopback", l)
		}
		found = found || l == want
	}
	if !found {
		t.Errorf("listeners %v lack %s", ls, want)
	}
}
