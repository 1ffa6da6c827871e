package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/mtalab"
)

// TestPostfixDaemonUnavailable proves that mail to a covered peer never
// leaves in clear and is never lost while tlsgate cannot answer: not yet
// started, answering TEMP (reloaded to a configuration whose map name
// Postfix does not use), and killed with SIGKILL while mail is queued.
// Each time Postfix keeps the mail deferred (4.7.5 "client TLS
// configuration problem") without even connecting to the peer; once the
// daemon is back and the queue is flushed, every message is delivered
// exactly once, over TLS. A covered peer without STARTTLS gets nothing at
// any point.
func TestPostfixDaemonUnavailable(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	l := newLab(t)
	var refuse atomic.Bool
	good := mtalab.StartSink(t, mtalab.SinkOptions{TLS: l.pki.Sink, Reply: func(stage, arg string) string {
		if stage == "RCPT" && refuse.Load() {
			return "451 4.7.1 lab says try later"
		}
		return ""
	}})
	plain := mtalab.StartSink(t, mtalab.SinkOptions{})
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: map[string]string{
			"good.partner.test":  fmt.Sprintf("smtp:[good.partner.test]:%d", good.Port()),
			"plain.partner.test": fmt.Sprintf("smtp:[plain.partner.test]:%d", plain.Port()),
		},
		Hosts:  []string{"127.0.0.1 good.partner.test plain.partner.test"},
		MainCF: postfixRetry,
	})
	sock := filepath.Join(pf.QueueDir(), "tlsgate", "policy.sock")
	if err := os.Mkdir(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := gateConfig{MTA: "postfix", Listen: "unix:" + sock, SocketGroup: "postfix", Endpoints: []string{
		endpoint("good", []string{"good.partner.test"}, "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\""),
		endpoint("plain", []string{"plain.partner.test"}, "[endpoint.outbound]\nencryption = true"),
	}}
	l.writeConfig(cfg.render(l))
	applyMTAConfig(t, l, pf)
	g := newGate(l)
	goodKey := fmt.Sprintf("[good.partner.test]:%d", good.Port())

	n := 0
	send := func(count int) []string {
		t.Helper()
		var rcpts []string
		for range count {
			n++
			rcpt := fmt.Sprintf("user%d@good.partner.test", n)
			mustSubmit(t, pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{rcpt}, Subject: fmt.Sprintf("resilience %d", n)})
			rcpts = append(rcpts, rcpt)
		}
		return rcpts
	}
	// deferredNoPolicy waits, for each recipient, for a deferral after
	// mark caused by the failed policy lookup.
	deferredNoPolicy := func(mark int, rcpts ...string) {
		t.Helper()
		for _, r := range rcpts {
			re := regexp.MustCompile(`postfix/smtp\[\d+\]: \w+: to=<` + regexp.QuoteMeta(r) + `>, relay=none, .*dsn=4\.7\.5, status=deferred \((delivery temporarily suspended: )?client TLS configuration problem\)`)
			if _, err := pf.WaitLogAfter(mark, re, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	delivered := func(want int) {
		t.Helper()
		msgs, err := good.WaitMessages(want, 30*time.Second)
		if err != nil {
			t.Fatalf("%v; queue: %v", err, queueSummary(pf))
		}
		for _, m := range msgs {
			if m.TLS == nil {
				t.Errorf("message to %v arrived in cleartext", m.To)
			}
		}
	}
	checkPlainUntouched := func() {
		t.Helper()
		if env := plain.Envelopes(); len(env) != 0 {
			t.Errorf("the covered peer without STARTTLS received %d envelope(s): %+v", len(env), env)
		}
	}

	t.Run("daemon-not-started", func(t *testing.T) {
		mark := pf.LogMark()
		rcpts := send(3)
		mustSubmit(t, pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{"user@plain.partner.test"}, Subject: "plain"})
		deferredNoPolicy(mark, append(rcpts, "user@plain.partner.test")...)
		if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`warning: smtp_tls_policy_maps, next-hop destination "`+regexp.QuoteMeta(goodKey)+`": policy table lookup error`), 5*time.Second); err != nil {
			t.Error(err)
		}
		if _, err := pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
			for _, r := range append(rcpts, "user@plain.partner.test") {
				if qr := queued(q, r); len(qr) != 1 || !strings.HasSuffix(qr[0].Reason, "client TLS configuration problem") {
					return false
				}
			}
			return true
		}, 10*time.Second); err != nil {
			t.Error(err)
		}
		// Postfix skipped the peers without connecting.
		if s := good.Sessions(); len(s) != 0 {
			t.Errorf("Postfix connected to the covered peer %d time(s) without a policy", len(s))
		}
		if s := plain.Sessions(); len(s) != 0 {
			t.Errorf("Postfix connected to the covered cleartext peer %d time(s) without a policy", len(s))
		}
		g.Start()
		mark = pf.LogMark()
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
		delivered(3)
		if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`to=<user@plain\.partner\.test>, .*dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered`), 30*time.Second); err != nil {
			t.Error(err)
		}
		checkPlainUntouched()
	})

	t.Run("daemon-answers-TEMP", func(t *testing.T) {
		if !g.running() {
			t.Skip("the daemon is not running after the previous step")
		}
		wrong := cfg
		wrong.MapName = "othermap"
		g.Reload(wrong.render(l))
		mark, gmark := pf.LogMark(), g.LogMark()
		before := len(good.Sessions())
		rcpts := send(2)
		deferredNoPolicy(mark, rcpts...)
		re := regexp.MustCompile(`tls-policy-lookup map=tlspolicy key=` + regexp.QuoteMeta(goodKey) + ` answer=TEMP reason="unknown map name`)
		if _, err := g.waitLogAfter(gmark, re, 5*time.Second); err != nil {
			t.Error(err)
		}
		if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`socketmap server temporary error: unknown map tlspolicy`), 5*time.Second); err != nil {
			t.Error(err)
		}
		if after := len(good.Sessions()); after != before {
			t.Errorf("Postfix connected to the covered peer while the daemon answered TEMP (%d new sessions)", after-before)
		}
		g.Reload(cfg.render(l))
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
		delivered(5)
		checkPlainUntouched()
	})

	t.Run("daemon-killed-mid-run", func(t *testing.T) {
		if !g.running() {
			t.Skip("the daemon is not running after the previous step")
		}
		// The peer refuses the first attempt, so that the mail is queued
		// (deferred) when the daemon dies, and Postfix's smtp processes
		// hold open socketmap connections.
		refuse.Store(true)
		mark := pf.LogMark()
		rcpts := send(3)
		for _, r := range rcpts {
			re := regexp.MustCompile(`to=<` + regexp.QuoteMeta(r) + `>, relay=good\.partner\.test\[127\.0\.0\.1\]:\d+, .*status=deferred \(host .* said: 451 4\.7\.1 lab says try later`)
			if _, err := pf.WaitLogAfter(mark, re, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		pid := g.pid()
		g.Kill()
		t.Logf("killed tlsgate (pid %d) with SIGKILL; %d messages queued", pid, len(rcpts))
		// A delivery that fetched its policy just before the kill meets
		// the still refusing peer; only then does the peer accept.
		time.Sleep(time.Second)
		before := len(good.Sessions())
		refuse.Store(false)
		mark = pf.LogMark()
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
		deferredNoPolicy(mark, rcpts...)
		if got := len(good.Messages()); got != 5 {
			t.Errorf("the peer received %d messages while the daemon was dead, want still 5", got)
		}
		if after := len(good.Sessions()); after != before {
			t.Errorf("Postfix connected to the covered peer while the daemon was dead (%d new sessions)", after-before)
		}
		// The killed daemon left its socket file behind; the new one
		// must replace it.
		if _, err := os.Stat(sock); err != nil {
			t.Logf("socket after SIGKILL: %v", err)
		}
		g.Start()
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
		delivered(8)
		checkPlainUntouched()
	})

	// Nothing lost, nothing twice: every message to the good peer was
	// delivered exactly once; only the cleartext peer's message is left.
	if _, err := pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
		return len(q) == 1 && len(queued(q, "user@plain.partner.test")) == 1
	}, 30*time.Second); err != nil {
		t.Error(err)
	}
	time.Sleep(time.Second) // a duplicate would arrive now
	counts := countTo(good.Messages())
	for i := 1; i <= n; i++ {
		if c := counts[fmt.Sprintf("user%d@good.partner.test", i)]; c != 1 {
			t.Errorf("user%d@good.partner.test: delivered %d times, want exactly once", i, c)
		}
	}
	if len(counts) != n {
		t.Errorf("the peer received mail for %d recipients, want %d", len(counts), n)
	}
	checkPlainUntouched()
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// queueSummary describes Postfix's queue for failure messages.
func queueSummary(pf *mtalab.Postfix) string {
	q, err := pf.Queue()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, e := range q {
		for _, r := range e.Recipients {
			parts = append(parts, fmt.Sprintf("%s %s (%s)", e.Queue, r.Address, r.Reason))
		}
	}
	return strings.Join(parts, "; ")
}
