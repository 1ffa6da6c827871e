package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// scrape returns the value of a metric series ("name{labels}") that
// tlsgate serves on addr, and whether it is there.
func scrape(t *testing.T, addr, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("scrape: %q: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// waitSeries waits until the series has the value want (absent: gone).
func waitSeries(t *testing.T, addr, series string, want float64, absent bool) {
	t.Helper()
	var v float64
	var ok bool
	if !waitUntil(30*time.Second, func() bool {
		v, ok = scrape(t, addr, series)
		return absent && !ok || !absent && ok && v == want
	}) {
		t.Fatalf("metric %s = %v (present %v), want %v (absent %v)", series, v, ok, want, absent)
	}
}

// watchTable is the [metrics] and [watch] tables of the held-mail tests.
func watchTable(metricsAddr, interval, queue string) string {
	return fmt.Sprintf("\n[metrics]\nlisten = \"inet:%s\"\n\n[watch]\nheld_interval = %q\n%s\n", metricsAddr, interval, queue)
}

// TestHeldMailPostfix is the held-mail watch of "tlsgate serve" on a real
// Postfix wired by mta-config. Two partners' sinks: "swap" presents a
// certificate for the wrong name (its endpoint wants sink.partner.test),
// "plain" offers no STARTTLS; a third, uncovered domain answers 451 to
// every recipient. With the watch off, the mail waits in the queue; a
// reload that turns it on (every second, postqueue -c DIR) logs one line
// per holding endpoint with Postfix's own reason, and the metrics say
// how many messages and how old the oldest is; the 451 mail counts
// nowhere. Then "swap" gets the right certificate: the queue is flushed,
// the sink receives the mail, and one line says the endpoint released
// it; its series are gone, "plain" still holds. Each round reads the
// queue once (tlsgate_held_queue_reads_total), whatever the messages.
func TestHeldMailPostfix(t *testing.T) {
	mtalab.RequirePostfix(t)
	l := newLab(t)
	p := l.pki
	swap := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.WrongCN})
	plain := mtalab.StartSink(t, mtalab.SinkOptions{})
	later := mtalab.StartSink(t, mtalab.SinkOptions{Reply: func(stage, _ string) string {
		if stage == "RCPT" {
			return "451 4.3.0 try again later"
		}
		return ""
	}})
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: map[string]string{
			"swap.partner.test":  fmt.Sprintf("smtp:[swap.partner.test]:%d", swap.Port()),
			"plain.partner.test": fmt.Sprintf("smtp:[plain.partner.test]:%d", plain.Port()),
			"later.test":         later.Nexthop(),
		},
		Hosts:  []string{"127.0.0.1 swap.partner.test plain.partner.test"},
		MainCF: postfixRetry,
	})
	sock := filepath.Join(pf.QueueDir(), "tlsgate", "policy.sock")
	if err := os.Mkdir(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", mtalab.FreePort(t))
	base := gateConfig{MTA: "postfix", Listen: "unix:" + sock, SocketGroup: "postfix", Endpoints: []string{
		endpoint("swap", []string{"swap.partner.test"}, "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\""),
		endpoint("plain", []string{"plain.partner.test"}, "[endpoint.outbound]\nencryption = true"),
	}}.render(l)
	queue := fmt.Sprintf("postqueue = \"/usr/sbin/postqueue\"\npostfix_config = %q", pf.ConfigDir())
	l.writeConfig(base + watchTable(metricsAddr, "off", queue))
	applyMTAConfig(t, l, pf)
	g := newGate(l)
	g.Start()

	for _, rcpt := range []string{"a@swap.partner.test", "b@swap.partner.test", "c@plain.partner.test", "d@later.test"} {
		mustSubmit(t, pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{rcpt}, Subject: "held " + rcpt})
	}
	reasons := map[string]*regexp.Regexp{
		"a@swap.partner.test":  regexp.MustCompile(`Server certificate not verified`),
		"b@swap.partner.test":  regexp.MustCompile(`Server certificate not verified`),
		"c@plain.partner.test": regexp.MustCompile(`TLS is required, but was not offered by host plain\.partner\.test\[127\.0\.0\.1\]`),
		"d@later.test":         regexp.MustCompile(`451 4\.3\.0 try again later`),
	}
	if _, err := pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
		for rcpt, re := range reasons {
			r := queued(q, rcpt)
			if len(r) != 1 || !re.MatchString(r[0].Reason) {
				return false
			}
		}
		return true
	}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok := scrape(t, metricsAddr, `tlsgate_held_messages{endpoint="swap"}`); ok {
		t.Error("held mail reported while the watch is off")
	}

	// Turn the watch on.
	mark := g.LogMark()
	g.Reload(base + watchTable(metricsAddr, "1s", queue))
	line, err := g.waitLogAfter(mark, regexp.MustCompile(`held-mail endpoint=swap state=holding`), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^(<4>)?NOQUEUE: held-mail endpoint=swap state=holding messages=2 recipients=2 oldest=\S+Z age=\S+ cause=not-verified reason="Server certificate not verified"$`).MatchString(line) {
		t.Errorf("swap: %s", line)
	}
	line, err = g.waitLogAfter(mark, regexp.MustCompile(`held-mail endpoint=plain state=holding`), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, ` messages=1 recipients=1 `) || !strings.Contains(line, ` cause=not-offered reason="TLS is required, but was not offered by host plain.partner.test[127.0.0.1]"`) {
		t.Errorf("plain: %s", line)
	}
	waitSeries(t, metricsAddr, `tlsgate_held_messages{endpoint="swap"}`, 2, false)
	waitSeries(t, metricsAddr, `tlsgate_held_messages{endpoint="plain"}`, 1, false)
	if age, ok := scrape(t, metricsAddr, `tlsgate_held_oldest_seconds{endpoint="swap"}`); !ok || age < 1 || age > 600 {
		t.Errorf("oldest held message for swap: %v s (present %v)", age, ok)
	}
	// One reading of the queue per round (each round runs postqueue -j
	// once, whatever the messages): about one a second.
	r0, _ := scrape(t, metricsAddr, `tlsgate_held_queue_reads_total{result="ok"}`)
	time.Sleep(4 * time.Second)
	r1, _ := scrape(t, metricsAddr, `tlsgate_held_queue_reads_total{result="ok"}`)
	if d := r1 - r0; d < 2 || d > 5 {
		t.Errorf("%v readings of the queue in 4 s at held_interval 1s", d)
	}
	if failed, _ := scrape(t, metricsAddr, `tlsgate_held_queue_reads_total{result="failed"}`); failed != 0 {
		t.Errorf("%v failed readings of the queue", failed)
	}

	// The partner fixes its certificate.
	mark = g.LogMark()
	if err := swap.SetTLS(p.Sink); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	msgs, err := swap.WaitMessages(2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.TLS == nil {
			t.Errorf("message to %v arrived without TLS", m.To)
		}
	}
	line, err = g.waitLogAfter(mark, regexp.MustCompile(`held-mail endpoint=swap state=released`), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^(<6>)?NOQUEUE: held-mail endpoint=swap state=released held_for=\d+s$`).MatchString(line) {
		t.Errorf("released: %s", line)
	}
	waitSeries(t, metricsAddr, `tlsgate_held_messages{endpoint="swap"}`, 0, true)
	if _, ok := scrape(t, metricsAddr, `tlsgate_held_oldest_seconds{endpoint="swap"}`); ok {
		t.Error("tlsgate_held_oldest_seconds{endpoint=\"swap\"} is still there")
	}
	waitSeries(t, metricsAddr, `tlsgate_held_messages{endpoint="plain"}`, 1, false)
	t.Logf("tlsgate held-mail lines:\n%s", strings.Join(logLines(g.Log(), regexp.MustCompile(`held-mail`)), "\n"))
	// Exactly one line each way per endpoint.
	for _, re := range []string{`held-mail endpoint=swap state=holding`, `held-mail endpoint=swap state=released`, `held-mail endpoint=plain state=holding`} {
		if n := len(logLines(g.Log(), regexp.MustCompile(re))); n != 1 {
			t.Errorf("%d lines matching %q, want 1", n, re)
		}
	}
	if n := len(logLines(g.Log(), regexp.MustCompile(`held-mail endpoint=plain state=released|later\.test`))); n != 0 {
		t.Errorf("%d lines about plain's release or the uncovered domain", n)
	}
}

// TestHeldMailSendmail is the same story on a real Sendmail 8.17 wired by
// mta-config (tlsgate's access map): the partner's certificate names
// wrong.partner.test, its endpoint wants sink.partner.test, Sendmail's
// tls_rcpt check defers the two recipients ("CN ... does not match ...").
// The watch reads the queue with mailq (sendmail -bp, [watch] mailq),
// finds each recipient's endpoint the way Sendmail asks (tls_rcpt), logs
// the name mismatch in Sendmail's words (its queue keeps the tls_rcpt
// ruleset's text, mailq shows it after the body type) and counts the messages; after
// the certificate is swapped and the queue run, the mail arrives and the
// endpoint is released.
func TestHeldMailSendmail(t *testing.T) {
	mtalab.RequireSendmail(t)
	l := newLab(t)
	p := l.pki
	swap := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.WrongCN})
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", mtalab.FreePort(t))
	// The mailq script is written once Sendmail runs; its path is known.
	mailqCmd := filepath.Join(l.dir, "mailq")
	base := gateConfig{MTA: "sendmail", Listen: "unix:" + filepath.Join(l.dir, "policy.sock"), ServerCert: p.Server, Endpoints: []string{
		endpoint("swap", []string{"swap.sm.test"}, "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\""),
	}}.render(l)
	queue := fmt.Sprintf("mailq = %q", mailqCmd)
	l.writeConfig(base + watchTable(metricsAddr, "off", queue))
	mc, afterMailer := sendmailMC(t, l)
	g := newGate(l)
	g.Start()
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: swap.Port(), MC: mc, MCAfterMailer: afterMailer, LogLevel: 14})
	script, err := sm.MailqCommand()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(script, mailqCmd); err != nil {
		t.Fatal(err)
	}

	for _, rcpt := range []string{"a@swap.sm.test", "b@swap.sm.test"} {
		mustSubmit(t, sm.Addr(), message{From: "sender@lab.test", To: []string{rcpt}, Subject: "held " + rcpt})
	}
	mismatch := regexp.MustCompile(`CN wrong\.partner\.test does not match sink\.partner\.test`)
	if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool {
		for _, rcpt := range []string{"a@swap.sm.test", "b@swap.sm.test"} {
			r := queued(q, rcpt)
			if len(r) != 1 || !mismatch.MatchString(r[0].Reason) {
				return false
			}
		}
		return true
	}, time.Minute); err != nil {
		t.Fatal(err)
	}

	mark := g.LogMark()
	g.Reload(base + watchTable(metricsAddr, "1s", queue))
	line, err := g.waitLogAfter(mark, regexp.MustCompile(`held-mail`), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^(<4>)?NOQUEUE: held-mail endpoint=swap state=holding messages=2 recipients=2 oldest=\S+Z age=\S+ cause=name-mismatch reason="CN wrong\.partner\.test does not match sink\.partner\.test"$`).MatchString(line) {
		t.Errorf("holding: %s", line)
	}
	waitSeries(t, metricsAddr, `tlsgate_held_messages{endpoint="swap"}`, 2, false)

	mark = g.LogMark()
	if err := swap.SetTLS(p.Sink); err != nil {
		t.Fatal(err)
	}
	if err := sm.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := swap.WaitMessages(2, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := g.waitLogAfter(mark, regexp.MustCompile(`held-mail endpoint=swap state=released held_for=\d+s$`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	waitSeries(t, metricsAddr, `tlsgate_held_messages{endpoint="swap"}`, 0, true)
	t.Logf("tlsgate held-mail lines:\n%s", strings.Join(logLines(g.Log(), regexp.MustCompile(`held-mail`)), "\n"))
}
