package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// TestSendmailTLSSrvRefusesBeforeMail: an endpoint that lists the peer's
// server by address (or name) is also answered for Sendmail's TLS_Srv
// keys, which its tls_server ruleset looks up right after the STARTTLS
// step. For a server that offers no STARTTLS that check fails before
// MAIL FROM, so the peer never sees the envelope in clear (TLS_Rcpt alone
// would only defer the recipients, after MAIL FROM). It proves, on a real
// Sendmail 8.17 wired by "tlsgate mta-config":
//   - tlsgate answers tls_srv:[127.0.0.1] or tls_srv:127.0.0.1 with
//     TEMP+ENCR;
//   - Sendmail's tls_server ruleset refuses the connection and the
//     message stays queued;
//   - the peer saw connections but no MAIL FROM and no recipient.
func TestSendmailTLSSrvRefusesBeforeMail(t *testing.T) {
	mtalab.Require(t)
	t.Parallel()
	l := newLab(t)
	sock := filepath.Join(l.dir, "policy.sock")
	l.writeConfig(gateConfig{
		MTA: "sendmail", Listen: "unix:" + sock, ServerCert: l.pki.Server,
		Endpoints: []string{
			// 127.0.0.1 is the smart host the lab's Sendmail relays to.
			endpoint("mx-by-address", []string{"127.0.0.1"}, "[endpoint.outbound]\nencryption = true"),
		},
	}.render(l))
	mc, afterMailer := sendmailMC(t, l)
	g := newGate(l)
	g.Start()

	plain := mtalab.StartSink(t, mtalab.SinkOptions{})
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: plain.Port(), MC: mc, MCAfterMailer: afterMailer, LogLevel: 14})
	mark := sm.LogMark()
	rcpt := "user@anywhere.sm.test"
	mustSubmit(t, sm.Addr(), message{From: "sender@lab.test", To: []string{rcpt}, Subject: "tls_srv"})

	line, err := sm.WaitLogAfter(mark, regexp.MustCompile(`ruleset=tls_server, arg1=NONE, relay=\S+, reject=403 4\.7\.0 encryption too weak 0 less than 40`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sendmail: %s", line[strings.Index(line, "ruleset="):])
	line, err = sm.WaitLogAfter(mark, regexp.MustCompile(`sendmail\[\d+\]: \w+: to=<`+regexp.QuoteMeta(rcpt)+`>, .*dsn=4\.\d+\.\d+, stat=`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sendmail: %s", line[strings.Index(line, "to=<"):])
	if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool { return len(queued(q, rcpt)) == 1 }, 10*time.Second); err != nil {
		t.Error(err)
	}

	var srv []string
	for _, key := range []string{"tls_srv:[127.0.0.1]", "tls_srv:127.0.0.1"} {
		srv = append(srv, g.lookups(key)...)
	}
	if len(srv) == 0 || !strings.Contains(srv[0], `answer="OK TEMP+ENCR:`) {
		t.Errorf("tlsgate's tls_srv lookups: %q, want an OK TEMP+ENCR answer", srv)
	}
	if len(plain.Sessions()) == 0 {
		t.Error("Sendmail never connected to the peer")
	}
	if env := plain.Envelopes(); len(env) != 0 {
		t.Errorf("the peer without STARTTLS saw MAIL FROM in clear: %+v", env)
	}
}
