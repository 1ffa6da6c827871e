package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/mtaconf"
)

// rcptLog records the RCPT TO addresses a sink was offered, also those it
// refused, so that a test can tell "never offered" from "refused".
type rcptLog struct {
	mu    sync.Mutex
	addrs []string
}

func (r *rcptLog) add(a string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = append(r.addrs, strings.ToLower(strings.Trim(a, "<> ")))
}

// count returns how often rcpt was offered.
func (r *rcptLog) count(rcpt string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.addrs {
		if a == rcpt {
			n++
		}
	}
	return n
}

// TestSendmailAccessMap runs a real Sendmail 8.17 whose access map is a
// socket map answered by tlsgate (mta = "sendmail"), wired by the .mc
// lines of "tlsgate mta-config". Sendmail asks tls_rcpt:ADDRESS before
// each RCPT TO; tlsgate answers TEMP+ENCR/TEMP+VERIFY with CN:, CS: and
// CI: (xtext DNs). It proves:
//   - a covered peer without STARTTLS is deferred and never offered the
//     recipient, while an uncovered one gets its mail in clear;
//   - a subject DN (CS:) or issuer DN (CI:) mismatch is deferred;
//   - the peer matching CN, CS and CI gets the mail over verified TLS;
//   - while tlsgate is down, even that peer's mail stays queued (the
//     socket map fails with a temporary error), and once it is back the
//     mail goes out exactly once;
//   - while tlsgate is down, Sendmail still uses STARTTLS with that peer
//     (the Local_try_tls ruleset mta-config prints after MAILER()), so the
//     peer never sees MAIL FROM in clear. A control Sendmail built from
//     the same lines without that ruleset shows the fail-open it closes:
//     its try_tls lookup tempfails, it skips STARTTLS and sends MAIL FROM
//     in clear before tls_rcpt defers the recipient;
//   - an uncovered peer still gets TLS when it offers STARTTLS and clear
//     text when it does not.
func TestSendmailAccessMap(t *testing.T) {
	mtalab.Require(t)
	start := time.Now()
	l := newLab(t)
	p := l.pki
	sinkDN := "CN=sink.partner.test,O=Lab Test,C=DE"
	labCA := "CN=Lab Test CA,O=Lab Test,C=DE"
	l.writeConfig(gateConfig{
		MTA: "sendmail", Listen: "unix:" + filepath.Join(l.dir, "policy.sock"), ServerCert: p.Server,
		Endpoints: []string{
			endpoint("plain", []string{"plain.sm.test"}, "[endpoint.outbound]\nencryption = true"),
			endpoint("good", []string{"good.sm.test"}, `[endpoint.outbound]
validate_cert = true
cn = "sink.partner.test"
subject_dn = "`+sinkDN+`"
issuer_dn = "`+labCA+`"`),
			endpoint("subject-mismatch", []string{"csbad.sm.test"}, `[endpoint.outbound]
validate_cert = true
subject_dn = "CN=wrong.partner.test,O=Lab Test,C=DE"
issuer_dn = "`+labCA+`"`),
			endpoint("issuer-mismatch", []string{"cibad.sm.test"}, `[endpoint.outbound]
validate_cert = true
subject_dn = "`+sinkDN+`"
issuer_dn = "CN=Other CA,O=Other Org,C=DE"`),
		},
	}.render(l))
	mc, afterMailer := sendmailMC(t, l)
	wantMC := "FEATURE(`access_db', `socket -T<TMPF> -d5 unix:" + filepath.Join(l.dir, "policy.sock") + "')dnl"
	if !contains(mc, wantMC) {
		t.Fatalf("mta-config did not print %q:\n%s", wantMC, strings.Join(mc, "\n"))
	}
	if !contains(afterMailer, "LOCAL_TRY_TLS") {
		t.Fatalf("mta-config did not print LOCAL_TRY_TLS after %q:\n%s", mtaconf.SendmailAfterMailer, strings.Join(afterMailer, "\n"))
	}
	g := newGate(l)
	g.Start()

	// Sendmail A relays to a sink without STARTTLS, Sendmail B to one
	// with the lab's sink.partner.test certificate, which at first
	// refuses every RCPT TO so that mail stays queued.
	plain := mtalab.StartSink(t, mtalab.SinkOptions{})
	var refuse atomic.Bool
	refuse.Store(true)
	offered := &rcptLog{}
	tlsSink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.Sink, Reply: func(stage, arg string) string {
		if stage == "RCPT" {
			offered.add(arg)
			if refuse.Load() {
				return "451 4.7.1 lab says try later"
			}
		}
		return ""
	}})
	smA := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: plain.Port(), MC: mc, MCAfterMailer: afterMailer})
	smB := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: tlsSink.Port(), MC: mc, MCAfterMailer: afterMailer, LogLevel: 14})
	// The control: the same lines without those after MAILER(), and its
	// own sink, refusing like tlsSink until the daemon-down step.
	ctlSink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.Sink, Reply: func(stage, arg string) string {
		if stage == "RCPT" && refuse.Load() {
			return "451 4.7.1 lab says try later"
		}
		return ""
	}})
	smC := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: ctlSink.Port(), MC: mc, LogLevel: 14})

	send := func(sm *mtalab.Sendmail, rcpt string) {
		t.Helper()
		mustSubmit(t, sm.Addr(), message{From: "sender@lab.test", To: []string{rcpt}, Subject: "via sendmail " + rcpt})
	}
	// deferred waits for Sendmail's deferral of rcpt after mark (a 4.x.x
	// status: "stat=Deferred", or "stat=Operating system error" after a
	// map failure); reject must match the tls_rcpt ruleset's refusal
	// logged before it.
	deferred := func(sm *mtalab.Sendmail, mark int, rcpt, reject string) {
		t.Helper()
		q := regexp.QuoteMeta(rcpt)
		line, err := sm.WaitLogAfter(mark, regexp.MustCompile(`ruleset=tls_rcpt, arg1=`+q+`, relay=\S+, reject=`+reject), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Sendmail: %s", line[strings.Index(line, "ruleset="):])
		line, err = sm.WaitLogAfter(mark, regexp.MustCompile(`sendmail\[\d+\]: \w+: to=<`+q+`>, .*dsn=4\.\d+\.\d+, stat=`), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Sendmail: %s", line[strings.Index(line, "to=<"):])
	}
	stillQueued := func(sm *mtalab.Sendmail, rcpts ...string) {
		t.Helper()
		if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool {
			for _, r := range rcpts {
				if len(queued(q, r)) != 1 {
					return false
				}
			}
			return true
		}, 10*time.Second); err != nil {
			t.Error(err)
		}
	}

	markA, markB, markC := smA.LogMark(), smB.LogMark(), smC.LogMark()
	send(smA, "user@plain.sm.test")
	send(smA, "user@open.sm.test")
	send(smB, "user@good.sm.test")
	send(smB, "user@csbad.sm.test")
	send(smB, "user@cibad.sm.test")
	send(smC, "user@good.sm.test")

	t.Run("no-starttls-deferred", func(t *testing.T) {
		deferred(smA, markA, "user@plain.sm.test", `403 4\.7\.0 encryption too weak 0 less than 40`)
		stillQueued(smA, "user@plain.sm.test")
		if env := envelopesTo(plain, "user@plain.sm.test"); len(env) != 0 {
			t.Errorf("the sink without STARTTLS was offered the covered recipient: %+v", env)
		}
		if lines := g.lookups("tls_rcpt:user@plain.sm.test"); len(lines) == 0 || !strings.Contains(lines[0], `answer="OK TEMP+ENCR:`) {
			t.Errorf("tlsgate lookups of tls_rcpt:user@plain.sm.test: %q", lines)
		}
	})
	t.Run("uncovered-delivered", func(t *testing.T) {
		if !waitUntil(30*time.Second, func() bool { return countTo(plain.Messages())["user@open.sm.test"] == 1 }) {
			t.Fatal("uncovered recipient not delivered")
		}
		for _, line := range g.lookups("tls_rcpt:user@open.sm.test") {
			if !strings.Contains(line, `answer="NOTFOUND "`) {
				t.Errorf("uncovered key answered: %s", line)
			}
		}
	})
	t.Run("subject-dn-mismatch-deferred", func(t *testing.T) {
		deferred(smB, markB, "user@csbad.sm.test", `403 4\.7\.0 Cert Subject /C=DE/O=Lab\+20Test/CN=sink\.partner\.test does not match /C=DE/O=Lab\+20Test/CN=wrong\.partner\.test`)
		stillQueued(smB, "user@csbad.sm.test")
		if n := offered.count("user@csbad.sm.test"); n != 0 {
			t.Errorf("the sink was offered the recipient %d time(s)", n)
		}
		if lines := g.lookups("tls_rcpt:user@csbad.sm.test"); len(lines) == 0 || !strings.Contains(lines[0], "+CS:/C=DE/O=Lab+20Test/CN=wrong.partner.test") {
			t.Errorf("tlsgate lookups: %q", lines)
		}
	})
	t.Run("issuer-dn-mismatch-deferred", func(t *testing.T) {
		deferred(smB, markB, "user@cibad.sm.test", `403 4\.7\.0 Cert Issuer /C=DE/O=Lab\+20Test/CN=Lab\+20Test\+20CA does not match /C=DE/O=Other\+20Org/CN=Other\+20CA`)
		stillQueued(smB, "user@cibad.sm.test")
		if n := offered.count("user@cibad.sm.test"); n != 0 {
			t.Errorf("the sink was offered the recipient %d time(s)", n)
		}
		if lines := g.lookups("tls_rcpt:user@cibad.sm.test"); len(lines) == 0 || !strings.Contains(lines[0], "++CI:/C=DE/O=Other+20Org/CN=Other+20CA") {
			t.Errorf("tlsgate lookups: %q", lines)
		}
	})
	t.Run("good-peer-passes-tls-checks", func(t *testing.T) {
		// tls_rcpt let the recipient through: the sink saw (and refused)
		// it over verified TLS.
		if _, err := smB.WaitLogAfter(markB, regexp.MustCompile(`to=<user@good\.sm\.test>, .*stat=Deferred: 451 4\.7\.1 lab says try later`), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := smC.WaitLogAfter(markC, regexp.MustCompile(`to=<user@good\.sm\.test>, .*stat=Deferred: 451 4\.7\.1 lab says try later`), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := smB.WaitLogAfter(markB, regexp.MustCompile(`STARTTLS=client, relay=\[127\.0\.0\.1\], version=TLSv1\.[23], verify=OK`), 5*time.Second); err != nil {
			t.Error(err)
		}
		if lines := g.lookups("tls_rcpt:user@good.sm.test"); len(lines) == 0 ||
			!strings.Contains(lines[0], `answer="OK TEMP+VERIFY+CN:sink.partner.test++CS:/C=DE/O=Lab+20Test/CN=sink.partner.test++CI:/C=DE/O=Lab+20Test/CN=Lab+20Test+20CA"`) {
			t.Errorf("tlsgate lookups: %q", lines)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("daemon-down-deferred", func(t *testing.T) {
		g.Stop()
		// A queue run that looked tls_rcpt up just before the stop meets
		// the still refusing peer; only then does the peer accept.
		time.Sleep(time.Second)
		refuse.Store(false)
		before := offered.count("user@good.sm.test")
		envBefore, ctlBefore := len(tlsSink.Envelopes()), len(ctlSink.Envelopes())
		sessBefore, ctlSessBefore := len(tlsSink.Sessions()), len(ctlSink.Sessions())
		mark, markC := smB.LogMark(), smC.LogMark()
		if err := smB.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := smC.Flush(); err != nil {
			t.Fatal(err)
		}
		// Sendmail cannot open the socket map: every access lookup is a
		// temporary failure (-T<TMPF>), tls_rcpt included.
		deferred(smB, mark, "user@good.sm.test", `451 4\.3\.0 Temporary system failure`)
		stillQueued(smB, "user@good.sm.test", "user@csbad.sm.test", "user@cibad.sm.test")
		if n := offered.count("user@good.sm.test") - before; n != 0 {
			t.Errorf("with tlsgate down, the sink was offered the recipient %d more time(s)", n)
		}
		if n := len(tlsSink.Messages()); n != 0 {
			t.Errorf("with tlsgate down, the sink received %d message(s)", n)
		}
		// The Try_TLS: lookup fails too, but Local_try_tls answers
		// first: Sendmail uses STARTTLS, then tls_rcpt keeps every
		// recipient back. The peer sees at most a MAIL FROM over TLS,
		// never one in clear, a recipient or data.
		for _, m := range tlsSink.Envelopes()[envBefore:] {
			if len(m.To) != 0 || m.Completed {
				t.Errorf("with tlsgate down, the sink got an envelope with recipients or data: %+v", m)
			}
			if m.TLS == nil {
				t.Errorf("with tlsgate down, the covered peer got MAIL FROM:<%s> in clear", m.From)
			}
		}
		sess := tlsSink.Sessions()[sessBefore:]
		if len(sess) == 0 {
			t.Fatal("Sendmail did not connect to the covered peer while tlsgate was down: the check above saw nothing")
		}
		for _, s := range sess {
			t.Logf("tlsgate down, with Local_try_tls: session %d TLS=%v commands %q", s.ID, s.TLS != nil, s.Commands)
			if s.TLS == nil {
				t.Errorf("with tlsgate down, Sendmail did not use STARTTLS with the covered peer: %q", s.Commands)
			}
		}

		tryTLS := regexp.MustCompile(`ruleset=try_tls, arg1=\S+, relay=\S+, reject=451 4\.3\.0`)
		if lines := logLines(smB.Log()[mark:], tryTLS); len(lines) != 0 {
			t.Errorf("try_tls refused STARTTLS despite Local_try_tls: %s", lines[0])
		}

		// The control shows what Local_try_tls prevents: the failed
		// Try_TLS: lookup turns STARTTLS off.
		if _, err := smC.WaitLogAfter(markC, tryTLS, 30*time.Second); err != nil {
			t.Error(err)
		}
		if _, err := smC.WaitLogAfter(markC, regexp.MustCompile(`ruleset=tls_rcpt, arg1=user@good\.sm\.test, relay=\S+, reject=451 4\.3\.0 Temporary system failure`), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		stillQueued(smC, "user@good.sm.test")
		clear := 0
		for _, m := range ctlSink.Envelopes()[ctlBefore:] {
			if len(m.To) != 0 || m.Completed {
				t.Errorf("control: the sink got an envelope with recipients or data: %+v", m)
			}
			if m.TLS == nil {
				clear++
			}
		}
		for _, s := range ctlSink.Sessions()[ctlSessBefore:] {
			t.Logf("tlsgate down, without Local_try_tls (control): session %d TLS=%v commands %q", s.ID, s.TLS != nil, s.Commands)
		}
		t.Logf("tlsgate down, without Local_try_tls (control): %d MAIL FROM in clear to the covered peer", clear)
		if clear == 0 {
			t.Errorf("control: without Local_try_tls Sendmail was expected to skip STARTTLS and send MAIL FROM in clear "+
				"while the access map is down (the fail-open the ruleset closes); it did not: envelopes %+v", ctlSink.Envelopes()[ctlBefore:])
		}
	})
	t.Run("daemon-back-delivered-once", func(t *testing.T) {
		g.Start()
		mark := smB.LogMark()
		if err := smB.Flush(); err != nil {
			t.Fatal(err)
		}
		msgs, err := tlsSink.WaitMessages(1, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m := msgs[0]; m.TLS == nil || len(m.To) != 1 || m.To[0] != "user@good.sm.test" {
			t.Errorf("sink got %+v", m)
		}
		if _, err := smB.WaitLogAfter(mark, regexp.MustCompile(`to=<user@good\.sm\.test>, .*stat=Sent`), 10*time.Second); err != nil {
			t.Error(err)
		}
		stillQueued(smB, "user@csbad.sm.test", "user@cibad.sm.test")
		if err := smA.Flush(); err != nil {
			t.Fatal(err)
		}
		stillQueued(smA, "user@plain.sm.test")
		if err := smC.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := ctlSink.WaitMessages(1, 30*time.Second); err != nil {
			t.Error(err)
		}
		// An uncovered recipient through the peer with STARTTLS: TLS, as
		// before (its cleartext counterpart is user@open.sm.test via A).
		send(smB, "user@open.sm.test")
		if !waitUntil(30*time.Second, func() bool { return countTo(tlsSink.Messages())["user@open.sm.test"] == 1 }) {
			t.Error("uncovered recipient via the STARTTLS peer not delivered")
		}
		time.Sleep(time.Second) // a duplicate would arrive now
		counts := countTo(tlsSink.Messages())
		if counts["user@good.sm.test"] != 1 || counts["user@open.sm.test"] != 1 || len(counts) != 2 {
			t.Errorf("the TLS sink received %v, want user@good.sm.test and user@open.sm.test exactly once", counts)
		}
		for _, m := range tlsSink.Messages() {
			if m.TLS == nil {
				t.Errorf("the STARTTLS peer received %v in clear", m.To)
			}
		}
		if counts := countTo(ctlSink.Messages()); counts["user@good.sm.test"] != 1 || len(counts) != 1 {
			t.Errorf("the control sink received %v, want user@good.sm.test exactly once", counts)
		}
		if counts := countTo(plain.Messages()); counts["user@open.sm.test"] != 1 || len(counts) != 1 {
			t.Errorf("the cleartext sink received %v, want only user@open.sm.test, once", counts)
		}
		for _, m := range plain.Messages() {
			if m.TLS != nil {
				t.Errorf("the peer without STARTTLS shows a TLS session: %+v", m.TLS)
			}
		}
	})
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// sendmailMC runs "tlsgate mta-config" for l's configuration and returns
// its .mc lines in two parts, split where mtaconf.SendmailAfterMailer
// says: the lines for before the MAILER() lines and those for after them.
func sendmailMC(t *testing.T, l *lab) (before, after []string) {
	t.Helper()
	text := l.tlsgate("mta-config", "-c", l.config)
	t.Logf("tlsgate mta-config .mc lines:\n  %s", strings.ReplaceAll(strings.TrimSpace(text), "\n", "\n  "))
	b, a, _ := strings.Cut(text, mtaconf.SendmailAfterMailer+"\n")
	split := func(s string) []string {
		if s = strings.TrimSpace(s); s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	return split(b), split(a)
}
