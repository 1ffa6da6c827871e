package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// TestSendmailSrvFeaturesAsksOnlyCovered: Sendmail asks every client for a
// certificate unless its srv_features ruleset says otherwise. With the
// access map answered by tlsgate (mta-config's lines), a real Sendmail 8.17
// asks the client whose endpoint requires a certificate (srv_features:ADDR
// answered "OK v": verify=OK in Sendmail's STARTTLS line) and no other
// client (the bare srv_features: key answered "OK V": verify=NOT), although
// both present one.
func TestSendmailSrvFeaturesAsksOnlyCovered(t *testing.T) {
	mtalab.Require(t)
	t.Parallel()
	l := newLab(t)
	const covered, other = "127.0.0.21", "127.0.0.22"
	l.writeConfig(gateConfig{
		MTA: "sendmail", Listen: "unix:" + filepath.Join(l.dir, "policy.sock"), ServerCert: l.pki.Server,
		Endpoints: []string{
			endpoint("needs-cert", []string{covered}, "[endpoint.inbound]\nvalidate_cert = true"),
		},
	}.render(l))
	mc, afterMailer := sendmailMC(t, l)
	g := newGate(l)
	g.Start()
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: sink.Port(), MC: mc, MCAfterMailer: afterMailer, LogLevel: 14})

	cfg := clientTLS(t, l.pki, l.pki.Client)
	for _, c := range []struct {
		from, verify, answer string
	}{
		{covered, "OK", "OK v"},
		{other, "NOT", ""},
	} {
		mark := sm.LogMark()
		mustSubmit(t, sm.Addr(), message{From: "sender@lab.test", To: []string{"user@partner.test"}, Subject: "from " + c.from, Local: c.from, TLS: cfg})
		line, err := sm.WaitLogAfter(mark, regexp.MustCompile(`STARTTLS=server, relay=.*`+regexp.QuoteMeta(c.from)+`.*, verify=\w+`), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Sendmail: %s", line[strings.Index(line, "STARTTLS="):])
		if !strings.Contains(line, "verify="+c.verify+",") && !strings.HasSuffix(line, "verify="+c.verify) {
			t.Errorf("client %s: Sendmail logged %q, want verify=%s", c.from, line, c.verify)
		}
		if c.answer != "" {
			// Without a PTR name Sendmail asks for the client as [ADDR] first.
			key := "srv_features:[" + c.from + "]"
			if lines := g.lookups(key); len(lines) == 0 || !strings.Contains(lines[0], `answer="`+c.answer+`"`) {
				t.Errorf("tlsgate's %s lookups: %q, want %q", key, lines, c.answer)
			}
		}
	}
	if lines := g.lookups("srv_features:"); len(lines) == 0 || !strings.Contains(lines[len(lines)-1], `answer="OK V"`) {
		t.Errorf("tlsgate's bare srv_features: lookups: %q, want OK V", lines)
	}
}
