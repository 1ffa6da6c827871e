package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// TestPostfixPartsAgree runs both inbound parts of one "tlsgate serve" on a
// real Postfix 3.7, as mta-config wires them: the milter (at MAIL FROM) and
// the policy-delegation server (check_policy_service, at RCPT TO), with
// metrics. For each session both lines say the same result, and the
// metrics count the same endpoint and result labels, except where
// Postfix hides a fact from the milter: a client certificate's
// fingerprint. There the milter says result=unchecked (never pass) and
// names the part that judges it, and the delegation server's line is the
// final word: pass and the mail is delivered, or defer and Postfix refuses
// the recipient.
func TestPostfixPartsAgree(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	l := newLab(t)
	p := l.pki
	stranger, err := p.Issue(testpki.Options{Name: "stranger", KeyType: testpki.ECDSAP256, Subject: p.SelfSigned.Cert.Subject})
	if err != nil {
		t.Fatal(err)
	}
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{Transport: map[string]string{"in.test": sink.Nexthop()}, MainCF: postfixRetry})
	dir := filepath.Join(pf.QueueDir(), "tlsgate")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", mtalab.FreePort(t))
	metricsListen := "inet:" + metricsAddr
	l.writeConfig(gateConfig{
		MTA: "postfix", Milter: fmt.Sprintf("inet:127.0.0.1:%d", mtalab.FreePort(t)),
		Listen: "unix:" + filepath.Join(dir, "policy.sock"), Delegation: "unix:" + filepath.Join(dir, "delegation.sock"),
		SocketGroup: "postfix", ServerCert: p.Server, Metrics: metricsListen,
		Endpoints: []string{
			endpoint("pinned", []string{"127.0.0.31"}, fmt.Sprintf("[endpoint.inbound]\nvalidate_cert = false\nfingerprints = [%q]", p.SelfSigned.Fingerprint)),
			endpoint("needs-tls", []string{"127.0.0.32"}, "[endpoint.inbound]\nencryption = true"),
			endpoint("watch", []string{"127.0.0.33"}, "mode = \"monitor\"\n[endpoint.inbound]\nencryption = true"),
		},
	}.render(l))
	applyMTAConfig(t, l, pf)
	g := newGate(l)
	g.Start()

	cert := func(c *testpki.Cert) *tls.Config { return clientTLS(t, p, c) }
	cases := []struct {
		name, local string
		tls         *tls.Config
		// stage is where Postfix refuses ("MAIL" by the milter, "RCPT" by
		// the delegation server), "" for delivered.
		stage string
		// milter and delegation are the results each part logs;
		// delegation "" when Postfix never asks it (refused at MAIL).
		endpoint, milter, delegation string
	}{
		{name: "pin-ok", local: "127.0.0.31", tls: cert(p.SelfSigned), endpoint: "pinned", milter: "unchecked", delegation: "pass"},
		{name: "pin-wrong", local: "127.0.0.31", tls: cert(stranger), stage: "RCPT", endpoint: "pinned", milter: "unchecked", delegation: "defer"},
		{name: "pin-cleartext", local: "127.0.0.31", stage: "MAIL", endpoint: "pinned", milter: "defer"},
		{name: "tls-ok", local: "127.0.0.32", tls: cert(nil), endpoint: "needs-tls", milter: "pass", delegation: "pass"},
		{name: "tls-cleartext", local: "127.0.0.32", stage: "MAIL", endpoint: "needs-tls", milter: "defer"},
		{name: "monitor", local: "127.0.0.33", endpoint: "watch", milter: "monitor", delegation: "monitor"},
		{name: "uncovered", local: "127.0.0.34", endpoint: "none", milter: "none", delegation: "none"},
	}
	counts := map[string]int{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			from := c.name + "@sender.test"
			rcpt := "user-" + c.name + "@in.test"
			gmark := g.LogMark()
			err := submit(pf.SMTPAddr("smtp"), message{From: from, To: []string{rcpt}, Subject: c.name, Local: c.local, TLS: c.tls})
			var te *textproto.Error
			switch {
			case c.stage == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.stage == "":
				if !waitUntil(20*time.Second, func() bool { return countTo(sink.Messages())[rcpt] == 1 }) {
					t.Fatalf("message to %s not delivered", rcpt)
				}
			case !errors.As(err, &te) || !strings.HasPrefix(err.Error(), c.stage) || te.Code != 451:
				t.Fatalf("want %s refused with 451, got %v", c.stage, err)
			}
			line := func(event string) string {
				l, err := g.waitLogAfter(gmark, regexp.MustCompile(regexp.QuoteMeta(event)+` result=\S+ .*sender=<`+regexp.QuoteMeta(from)+`>`), 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("tlsgate: %s", l)
				return l
			}
			ml := line("tlsgate:")
			wantContains(t, "milter line", ml, "tlsgate: result="+c.milter+" endpoint="+c.endpoint+" ")
			counts["milter|"+c.endpoint+"|"+c.milter]++
			if c.milter == "unchecked" {
				wantContains(t, "milter line", ml, " unchecked=pinned:fingerprints judged_by=tls-policy-delegation client=")
			}
			if c.delegation == "" {
				if lines := logLines(g.Log()[gmark:], regexp.MustCompile(`tls-policy-delegation .*sender=<`+regexp.QuoteMeta(from)+`>`)); len(lines) != 0 {
					t.Errorf("the delegation server was asked after the milter refused MAIL FROM: %q", lines)
				}
				return
			}
			dl := line("tls-policy-delegation")
			wantContains(t, "delegation line", dl, "tls-policy-delegation result="+c.delegation+" endpoint="+c.endpoint+" ")
			counts["delegation|"+c.endpoint+"|"+c.delegation]++
			if c.milter != "unchecked" && c.milter != c.delegation {
				t.Errorf("the parts disagree: milter %s, delegation %s", c.milter, c.delegation)
			}
		})
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := map[string]int{}
	re := regexp.MustCompile(`(?m)^tlsgate_inbound_decisions_total\{endpoint="([^"]*)",part="([^"]*)",result="([^"]*)"\} (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		ep := m[1]
		if ep == "" {
			ep = "none"
		}
		var n int
		fmt.Sscan(m[4], &n)
		got[m[2]+"|"+ep+"|"+m[3]] += n
	}
	for k, n := range counts {
		if got[k] != n {
			t.Errorf("metric %s = %d, want %d", k, got[k], n)
		}
	}
	for k, n := range got {
		if counts[k] == 0 {
			t.Errorf("unexpected metric %s = %d", k, n)
		}
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
