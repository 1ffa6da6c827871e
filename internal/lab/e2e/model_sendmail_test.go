package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// TestSendmailLongRecipient: Sendmail cuts socket-map keys at 256 bytes,
// so the tls_rcpt: key of a long recipient reaches tlsgate without the end
// of its domain. tlsgate answers it with the strictest endpoint it could
// belong to (here the recipient's own), never NOTFOUND, and a real
// Sendmail 8.17 keeps the mail queued instead of offering the recipient in
// clear to a peer without STARTTLS.
func TestSendmailLongRecipient(t *testing.T) {
	mtalab.Require(t)
	t.Parallel()
	l := newLab(t)
	l.writeConfig(gateConfig{
		MTA: "sendmail", Listen: "unix:" + filepath.Join(l.dir, "policy.sock"), ServerCert: l.pki.Server,
		Endpoints: []string{endpoint("long", []string{"long.sm.test"}, "[endpoint.outbound]\nencryption = true")},
	}.render(l))
	mc, afterMailer := sendmailMC(t, l)
	g := newGate(l)
	g.Start()
	plain := mtalab.StartSink(t, mtalab.SinkOptions{})
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: plain.Port(), MC: mc, MCAfterMailer: afterMailer})

	rcpt := strings.Repeat("x", 240) + "@long.sm.test"
	key := "tls_rcpt:" + rcpt
	if len(key) <= policy.SendmailMaxKey {
		t.Fatalf("key of %d bytes is not cut", len(key))
	}
	cut := key[:policy.SendmailMaxKey]
	mark := sm.LogMark()
	mustSubmit(t, sm.Addr(), message{From: "sender@lab.test", To: []string{rcpt}, Subject: "long recipient"})
	q := regexp.QuoteMeta(rcpt)
	line, err := sm.WaitLogAfter(mark, regexp.MustCompile(`ruleset=tls_rcpt, arg1=`+q+`, relay=\S+, reject=403 4\.7\.0 encryption too weak 0 less than 40`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sendmail: %s", line[strings.Index(line, "ruleset="):])
	if _, err := sm.WaitLogAfter(mark, regexp.MustCompile(`to=<`+q+`>, .*dsn=4\.\d+\.\d+, stat=`), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.WaitQueue(func(qe []mtalab.QueueEntry) bool { return len(queued(qe, rcpt)) == 1 }, 10*time.Second); err != nil {
		t.Errorf("the long recipient is not queued: %v", err)
	}
	if env := envelopesTo(plain, rcpt); len(env) != 0 {
		t.Errorf("the peer without STARTTLS was offered the recipient: %+v", env)
	}
	// What tlsgate was asked, and answered: the cut key (logged cut to
	// 200 bytes and its length), the endpoint's rules, never NOTFOUND.
	var asked []string
	waitUntil(5*time.Second, func() bool {
		asked = logLines(g.Log(), regexp.MustCompile(`tls-policy-lookup .* key="?`+regexp.QuoteMeta(cut[:120])))
		return len(asked) > 0
	})
	if len(asked) == 0 {
		t.Fatalf("tlsgate logged no lookup of the long recipient:\n%s", g.Log())
	}
	for _, line := range asked {
		t.Logf("tlsgate: %.160s...%s", line, line[max(0, len(line)-140):])
		if !strings.Contains(line, `answer="OK TEMP+ENCR:40" endpoint=long map=tlspolicy`) || !strings.Contains(line, "(256 bytes)") ||
			!strings.Contains(line, "may have been cut by Sendmail") {
			t.Errorf("lookup of the cut key: %s", line)
		}
	}
}

// TestSendmailSrvFeaturesSubdomain: an endpoint that needs the client's
// certificate and covers senders through a .subdomain pattern can only be
// recognised by the sender's domain, which Sendmail does not know when it
// decides at connect time whether to ask for a certificate. tlsgate
// therefore answers the bare srv_features: key NOTFOUND, and a real
// Sendmail 8.17 asks every client, among them one (without a name)
// whose mail comes from a domain below .sub.sm.test: its certificate is
// requested and verified (verify=OK).
func TestSendmailSrvFeaturesSubdomain(t *testing.T) {
	mtalab.Require(t)
	t.Parallel()
	l := newLab(t)
	l.writeConfig(gateConfig{
		MTA: "sendmail", Listen: "unix:" + filepath.Join(l.dir, "policy.sock"), ServerCert: l.pki.Server,
		Endpoints: []string{endpoint("subsidiaries", []string{".sub.sm.test"}, "[endpoint.inbound]\nvalidate_cert = true")},
	}.render(l))
	mc, afterMailer := sendmailMC(t, l)
	g := newGate(l)
	g.Start()
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: sink.Port(), MC: mc, MCAfterMailer: afterMailer, LogLevel: 14})

	const client = "127.0.0.23"
	mark := sm.LogMark()
	mustSubmit(t, sm.Addr(), message{From: "orders@mx.sub.sm.test", To: []string{"user@partner.test"}, Subject: "from a subsidiary", Local: client,
		TLS: clientTLS(t, l.pki, l.pki.Client)})
	line, err := sm.WaitLogAfter(mark, regexp.MustCompile(`STARTTLS=server, relay=.*`+regexp.QuoteMeta(client)+`.*, verify=\w+`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sendmail: %s", line[strings.Index(line, "STARTTLS="):])
	if !strings.Contains(line, "verify=OK,") && !strings.HasSuffix(line, "verify=OK") {
		t.Errorf("Sendmail did not ask the subsidiary's client for its certificate: %s", line)
	}
	if lines := g.lookups("srv_features:"); len(lines) == 0 || !strings.Contains(lines[len(lines)-1], `answer="NOTFOUND "`) {
		t.Errorf("tlsgate's bare srv_features: lookups: %q, want NOTFOUND (Sendmail's default: ask every client)", lines)
	}
	// tlsgate query says what Sendmail does with that answer.
	out, err := exec.Command(tlsgateBin, "query", "-c", l.config, "outbound", "srv_features:").CombinedOutput()
	if !strings.Contains(string(out), "NOTFOUND \n# NOTFOUND; in effect: Sendmail's default (it asks the client for a certificate)\n") {
		t.Errorf("tlsgate query outbound srv_features: %v\n%s", err, out)
	}
}
