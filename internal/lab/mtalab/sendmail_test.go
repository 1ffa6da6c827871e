package mtalab

import (
	"crypto/tls"
	"fmt"
	"net/smtp"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

func TestSendmailRelaysPlain(t *testing.T) {
	t.Parallel()
	sink := StartSink(t, SinkOptions{})
	sm := StartSendmail(t, SendmailOptions{SmartHostPort: sink.Port()})
	sendMail(t, sm.Addr(), nil, "sender@lab.test", "user@partner.test", "via sendmail")
	msgs, err := sink.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "sender@lab.test" || len(m.To) != 1 || m.To[0] != "user@partner.test" || m.TLS != nil || m.Helo != "sm.lab.test" {
		t.Errorf("sink got %+v", m)
	}
	if !strings.Contains(string(m.Data), "Subject: via sendmail\r\n") || !strings.Contains(string(m.Data), "by sm.lab.test (8.17") {
		t.Errorf("data:\n%s", m.Data)
	}
	// Sendmail's syslog reaches the maillog through the private /dev/log.
	if _, err := sm.WaitLog(regexp.MustCompile(`sm\.lab\.test sendmail\[\d+\]: \w+: to=<user@partner.test>, .*mailer=esmtp, .*relay=\[127\.0\.0\.1\] \[127\.0\.0\.1\], dsn=2\.0\.0, stat=Sent`), 10*time.Second); err != nil {
		t.Error(err)
	}
	if err := sm.WaitQueueEmpty(10 * time.Second); err != nil {
		t.Error(err)
	}
	checkLoopbackOnly(t, sm.ns.id, sm.Addr())
	if err := sm.Stop(); err != nil {
		t.Fatal(err)
	}
	if sm.daemon.alive() {
		t.Errorf("daemon %d alive after Stop", sm.PID())
	}
	if left := nsProcs(sm.ns.id); len(left) > 0 {
		t.Errorf("processes left in the namespace: %v", left)
	}
}

// TestSendmailQueueAndTLS: STARTTLS on both legs, and a message that
// stays in the queue while the sink refuses it, then goes out with Flush.
func TestSendmailQueueAndTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.NewT(t)
	refusing := make(chan bool, 1)
	refusing <- true
	sink := StartSink(t, SinkOptions{TLS: pki.Sink, Reply: func(stage, arg string) string {
		r := <-refusing
		refusing <- r
		if stage == "RCPT" && r {
			return "451 4.7.1 lab says try later"
		}
		return ""
	}})
	sm := StartSendmail(t, SendmailOptions{SmartHostPort: sink.Port(), TLS: pki.Server, CAFile: pki.CA.CertFile, LogLevel: 14})
	client, err := tls.LoadX509KeyPair(pki.Client.CertFile, pki.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	sendMail(t, sm.Addr(), &tls.Config{ServerName: "mx.lab.test", RootCAs: pki.CA.Pool(), Certificates: []tls.Certificate{client}},
		"sender@lab.test", "user@partner.test", "sendmail tls")
	if _, err := sm.WaitLog(regexp.MustCompile(`stat=Deferred: 451 4\.7\.1 lab says try later`), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	q, err := sm.WaitQueue(func(q []QueueEntry) bool {
		return len(q) == 1 && len(q[0].Recipients) == 1 && q[0].Recipients[0].Reason != ""
	}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if q[0].Queue != "mqueue" || q[0].Sender != "sender@lab.test" || q[0].Recipients[0].Address != "user@partner.test" ||
		!strings.Contains(q[0].Recipients[0].Reason, "lab says try later") {
		t.Fatalf("queue: %+v", q)
	}
	if len(sink.Messages()) != 0 {
		t.Fatal("sink completed a message")
	}
	<-refusing
	refusing <- false
	if err := sm.Flush(); err != nil {
		t.Fatal(err)
	}
	msgs, err := sink.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.TLS == nil {
		t.Fatal("Sendmail did not use STARTTLS to the sink")
	}
	if !strings.Contains(string(m.Data), "verify=OK") {
		t.Errorf("Received header does not show the verified client certificate:\n%s", m.Data)
	}
	if err := sm.WaitQueueEmpty(10 * time.Second); err != nil {
		t.Error(err)
	}
	if _, err := sm.WaitLog(regexp.MustCompile(`STARTTLS=client, relay=\[127\.0\.0\.1\], version=TLSv1\.3, verify=OK`), 5*time.Second); err != nil {
		t.Error(err)
	}
}

// TestSendmailHooks checks that the AccessMap and Milter options reach
// Sendmail: the access map socket gets the connect: lookups (lower-cased
// "access KEY" requests), and the broken milter, with F=T, makes Sendmail
// refuse the mail temporarily; the sink never sees an envelope.
func TestSendmailHooks(t *testing.T) {
	t.Parallel()
	sink := StartSink(t, SinkOptions{})
	smap, smapSeen := startSocketmap(t)
	milter, milterSeen := startBrokenMilter(t)
	sm := StartSendmail(t, SendmailOptions{
		SmartHostPort: sink.Port(),
		AccessMap:     fmt.Sprintf("inet:%d@127.0.0.1", port(smap)),
		Milter:        fmt.Sprintf("inet:%d@127.0.0.1", port(milter)),
	})
	cf, err := os.ReadFile(sm.CFPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Kaccess socket -T<TMPF> -d5 inet:", "Xlabmilter, S=inet:", "F=T"} {
		if !strings.Contains(string(cf), want) {
			t.Errorf("sendmail.cf lacks %q", want)
		}
	}
	c, err := smtp.Dial(sm.Addr())
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
		t.Errorf("session with a broken F=T milter: err = %v, want a 4xx", err)
	}
	if !smapSeen.has("access connect:localhost") || !smapSeen.has("access connect:127.0.0.1") {
		t.Errorf("access map saw %q", smapSeen.all())
	}
	if !milterSeen.has("cmd=O") {
		t.Errorf("milter saw %q, want an SMFIC_OPTNEG", milterSeen.all())
	}
	if _, err := sm.WaitLog(regexp.MustCompile(`Milter \(labmilter\)`), 5*time.Second); err != nil {
		t.Error(err)
	}
	if n := len(sink.Sessions()); n != 0 {
		t.Errorf("sink saw %d sessions", n)
	}
}
