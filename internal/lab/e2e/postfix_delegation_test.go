package e2e

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"fmt"
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

// TestPostfixDelegationPins checks inbound fingerprint pins on Postfix,
// which only its policy-delegation protocol can enforce: a Postfix wired
// by "tlsgate mta-config" (smtpd TLS, smtpd_tls_ask_ccert,
// check_policy_service on tlsgate's delegation socket) accepts a
// self-signed client certificate pinned by its certificate or public-key
// fingerprint and refuses every other client of the endpoint, with 4.7.1
// or 5.7.1 as the endpoint's action says. Clients connect from 127.0.0.1
// (endpoint with action "defer") and 127.0.0.2 (action "reject").
func TestPostfixDelegationPins(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	l := newLab(t)
	p := l.pki
	issue := func(name string) *testpki.Cert {
		c, err := p.Issue(testpki.Options{Name: name, KeyType: testpki.ECDSAP256,
			Subject: pkix.Name{Country: []string{"DE"}, Organization: []string{"Elsewhere"}, CommonName: name + ".client.test"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	keyPinned := issue("keypinned")
	stranger := issue("stranger")

	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: map[string]string{"in.test": sink.Nexthop()},
		MainCF:    postfixRetry,
	})
	dir := filepath.Join(pf.QueueDir(), "tlsgate")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l.writeConfig(gateConfig{
		MTA: "postfix", Listen: "unix:" + filepath.Join(dir, "policy.sock"), Delegation: "unix:" + filepath.Join(dir, "delegation.sock"),
		SocketGroup: "postfix", ServerCert: p.Server,
		Endpoints: []string{
			endpoint("pinned-defer", []string{"127.0.0.1"}, fmt.Sprintf(
				"action = \"defer\"\n[endpoint.inbound]\nvalidate_cert = false\nfingerprints = [%q]", p.SelfSigned.Fingerprint)),
			endpoint("pinned-reject", []string{"127.0.0.2"}, fmt.Sprintf(
				"action = \"reject\"\n[endpoint.inbound]\nvalidate_cert = false\nfingerprints = [%q]", "sha256:"+keyPinned.PubkeyFingerprint)),
		},
	}.render(l))
	applied := applyMTAConfig(t, l, pf, "smtpd_tls_loglevel=1")
	for _, want := range []string{
		"smtpd_tls_ask_ccert = yes",
		"smtpd_recipient_restrictions = check_policy_service { unix:tlsgate/delegation.sock, { default_action = 451 4.3.5 TLS policy service unavailable } }",
	} {
		if !contains(applied, want) {
			t.Errorf("mta-config did not print %q", want)
		}
	}
	g := newGate(l)
	g.Start()

	clientCert := func(c *testpki.Cert) *tls.Config { return clientTLS(t, p, c) }
	cases := []struct {
		name  string
		local string
		tls   *tls.Config
		// cn is the client certificate's CN in Postfix's Received header.
		cn string
		// code is the SMTP reply to RCPT TO (0: accepted and delivered).
		code   int
		status string
	}{
		{name: "cert-pin-accepted", local: "127.0.0.1", tls: clientCert(p.SelfSigned), cn: "selfsigned.lab.test"},
		{name: "unpinned-self-signed-deferred", local: "127.0.0.1", tls: clientCert(stranger), code: 451, status: "4.7.1"},
		{name: "no-cert-deferred", local: "127.0.0.1", tls: clientCert(nil), code: 451, status: "4.7.1"},
		{name: "cleartext-deferred", local: "127.0.0.1", code: 451, status: "4.7.1"},
		{name: "pubkey-pin-accepted", local: "127.0.0.2", tls: clientCert(keyPinned), cn: "keypinned.client.test"},
		{name: "unpinned-self-signed-rejected", local: "127.0.0.2", tls: clientCert(p.SelfSigned), code: 550, status: "5.7.1"},
		{name: "ca-signed-unpinned-rejected", local: "127.0.0.2", tls: clientCert(p.Client), code: 550, status: "5.7.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rcpt := "user-" + c.name + "@in.test"
			mark, gmark := pf.LogMark(), g.LogMark()
			err := submit(pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{rcpt}, Subject: c.name, Local: c.local, TLS: c.tls})
			if c.code == 0 {
				if err != nil {
					t.Fatalf("pinned client refused: %v", err)
				}
				if !waitUntil(20*time.Second, func() bool { return countTo(sink.Messages())[rcpt] == 1 }) {
					t.Fatalf("message to %s not delivered", rcpt)
				}
				// Accepted on the pin alone: Postfix did not verify it.
				want := fmt.Sprintf(`(Client CN "%s", Issuer "%s" (not verified))`, c.cn, c.cn)
				for _, m := range sink.Messages() {
					if len(m.To) == 1 && m.To[0] == rcpt && !strings.Contains(string(m.Data), want) {
						t.Errorf("Received header lacks %s:\n%s", want, m.Data)
					}
				}
				if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`postfix/smtpd\[\d+\]: Untrusted TLS connection established from \S+\[`+regexp.QuoteMeta(c.local)+`\]`), 5*time.Second); err != nil {
					t.Error(err)
				}
				if _, err := g.waitLogAfter(gmark, regexp.MustCompile(`tls-policy-delegation result=pass endpoint=pinned-`), 5*time.Second); err != nil {
					t.Error(err)
				}
				return
			}
			var te *textproto.Error
			if !errors.As(err, &te) || !strings.HasPrefix(err.Error(), "RCPT TO:") {
				t.Fatalf("want RCPT TO refused with %d %s, got %v", c.code, c.status, err)
			}
			if te.Code != c.code || !strings.HasPrefix(te.Msg, c.status+" ") {
				t.Errorf("RCPT TO: got %d %s, want %d %s", te.Code, te.Msg, c.code, c.status)
			}
			re := regexp.MustCompile(`NOQUEUE: reject: RCPT from \S+\[` + regexp.QuoteMeta(c.local) + `\]: ` + fmt.Sprint(c.code) + ` ` +
				regexp.QuoteMeta(c.status) + ` <` + regexp.QuoteMeta(rcpt) + `>: Recipient address rejected: TLS required by local policy`)
			if _, err := pf.WaitLogAfter(mark, re, 5*time.Second); err != nil {
				t.Error(err)
			}
			action := "defer"
			if c.code >= 500 {
				action = "reject"
			}
			if _, err := g.waitLogAfter(gmark, regexp.MustCompile(`tls-policy-delegation result=`+action+` endpoint=pinned-`+action+` action="`+fmt.Sprint(c.code)+` `), 5*time.Second); err != nil {
				t.Error(err)
			}
			if n := countTo(sink.Messages())[rcpt]; n != 0 {
				t.Errorf("refused message delivered %d times", n)
			}
		})
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
