package mtalab

import (
	"crypto/tls"
	"fmt"
	"net/smtp"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/testpki"
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
	if err := pf.Stop(); err != nil {
		t.Fatal(err)
	}
	if pf.master.alive() {
		t.Errorf("master %d alive after Stop", pf.MasterPID())
	}
	if left := nsProcs(pf.ns); len(left) > 0 {
		t.Errorf("processes left in the namespace: %v", left)
	}

}

func TestPostfixRelaysTLS(t *testing.T) {
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
