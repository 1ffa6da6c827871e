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

// TestSendmailAccessMap runs a real Sendmail 8.17 wired by the .mc lines of
// "tlsgate mta-config" (mta = "sendmail"): tlsgate's socket map of its
// own, asked by the Local_tls_server and Local_tls_rcpt rulesets that
// Sendmail's tls_server and tls_rcpt run first. tlsgate answers
// TEMP+ENCR/TEMP+VERIFY with CN:, CS: and CI: (xtext DNs). It proves:
//   - a covered peer without STARTTLS is deferred and never offered the
//     recipient, while an uncovered one gets its mail in clear;
//   - a subject DN (CS:) or issuer DN (CI:) mismatch is deferred;
//   - the peer matching CN, CS and CI gets the mail over verified TLS;
//   - while tlsgate is down, even that peer's mail stays queued: the
//     lookup fails with <TMPF> and tlsgate's tls_server ruleset refuses
//     the server right after the STARTTLS step, so the peer never sees
//     MAIL FROM; once tlsgate is back the mail goes out exactly once;
//   - the design it replaces fails open: a control Sendmail whose access
//     map is a "sequence" of tlsgate's socket map and a hash db (the usual
//     way to chain maps) loses the temporary failure (a sequence map has
//     no -T<TMPF>), takes "not covered" for an answer and, with tlsgate
//     down, delivers a covered peer's mail in clear to a server without
//     STARTTLS;
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
	wantK := "Ktlspolicy socket -T<TMPF> -d5 unix:" + filepath.Join(l.dir, "policy.sock")
	if !contains(afterMailer, wantK) || !contains(afterMailer, "LOCAL_TLS_SERVER") || !contains(afterMailer, "LOCAL_TLS_RCPT") {
		t.Fatalf("mta-config did not print %q and the LOCAL_TLS_SERVER and LOCAL_TLS_RCPT hooks after %q:\n%s", wantK, mtaconf.SendmailAfterMailer, strings.Join(afterMailer, "\n"))
	}
	for _, l := range append(mc, afterMailer...) {
		if strings.Contains(l, "socket -T<TMPF>") && strings.Contains(l, "access_db") {
			t.Fatalf("mta-config made tlsgate the access map: %s", l)
		}
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
	// The control: the access map as a sequence of tlsgate's socket map
	// (map name tlspolicy, which tlsgate answers) and an (empty) hash db,
	// with Sendmail's stock rulesets, relaying to a server without
	// STARTTLS.
	ctlSink := mtalab.StartSink(t, mtalab.SinkOptions{})
	ctlMC := []string{
		"LOCAL_CONFIG",
		"Ktlspolicy socket -T<TMPF> -d5 unix:" + filepath.Join(l.dir, "policy.sock"),
		"Kaccess_hash hash -o " + filepath.Join(l.dir, "no-access"),
		"FEATURE(`access_db', `sequence tlspolicy access_hash')dnl",
	}
	smC := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: ctlSink.Port(), MC: ctlMC, LogLevel: 14})

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
	send(smC, "user@plain.sm.test")

	t.Run("control-sequence-map-while-up", func(t *testing.T) {
		// While tlsgate is up the sequence map answers as tlsgate does.
		deferred(smC, markC, "user@plain.sm.test", `403 4\.7\.0 encryption too weak 0 less than 40`)
		if env := envelopesTo(ctlSink, "user@plain.sm.test"); len(env) != 0 {
			t.Errorf("the control's sink was offered the covered recipient: %+v", env)
		}
	})
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
		envBefore, sessBefore := len(tlsSink.Envelopes()), len(tlsSink.Sessions())
		mark, markC := smB.LogMark(), smC.LogMark()
		if err := smB.Flush(); err != nil {
			t.Fatal(err)
		}
		// Sendmail cannot open the socket map: the lookup returns <TMPF>,
		// and tlsgate's tls_server ruleset refuses the server after the
		// STARTTLS step, before MAIL FROM.
		line, err := smB.WaitLogAfter(mark, regexp.MustCompile(`ruleset=tls_server, arg1=OK, relay=\S+, reject=451 4\.3\.0 Temporary system failure: tlsgate TLS policy lookup failed\. Please try again later\.`), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Sendmail (tlsgate down): %s", line[strings.Index(line, "ruleset="):])
		if _, err := smB.WaitLogAfter(mark, regexp.MustCompile(`to=<user@good\.sm\.test>, .*dsn=4\.3\.0, stat=Deferred: 451 4\.3\.0 Temporary system failure`), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		stillQueued(smB, "user@good.sm.test", "user@csbad.sm.test", "user@cibad.sm.test")
		if n := offered.count("user@good.sm.test") - before; n != 0 {
			t.Errorf("with tlsgate down, the sink was offered the recipient %d more time(s)", n)
		}
		if n := len(tlsSink.Messages()); n != 0 {
			t.Errorf("with tlsgate down, the sink received %d message(s)", n)
		}
		if env := tlsSink.Envelopes()[envBefore:]; len(env) != 0 {
			t.Errorf("with tlsgate down, the covered peer saw MAIL FROM: %+v", env)
		}
		sess := tlsSink.Sessions()[sessBefore:]
		if len(sess) == 0 {
			t.Fatal("Sendmail did not connect to the covered peer while tlsgate was down: the check above saw nothing")
		}
		for _, s := range sess {
			t.Logf("tlsgate down: session %d TLS=%v commands %q", s.ID, s.TLS != nil, s.Commands)
		}

		// The control fails open: the sequence map's lookup fails, which
		// Sendmail's rulesets take for "not covered", and the covered
		// recipient goes out in clear.
		if err := smC.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := smC.WaitLogAfter(markC, regexp.MustCompile(`to=<user@plain\.sm\.test>, .*stat=Sent`), 30*time.Second); err != nil {
			t.Errorf("control: %v", err)
		}
		env := envelopesTo(ctlSink, "user@plain.sm.test")
		if len(env) == 0 {
			t.Errorf("control: with a sequence access map and tlsgate down, Sendmail was expected to deliver the covered recipient in clear (the fail-open tlsgate's own map avoids); it did not: %+v", ctlSink.Envelopes())
		}
		for _, e := range env {
			t.Logf("tlsgate down, sequence access map (control): MAIL FROM:<%s> to %v in clear: %v", e.From, e.To, e.TLS == nil)
			if e.TLS != nil {
				t.Errorf("control: the sink without STARTTLS shows TLS")
			}
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
