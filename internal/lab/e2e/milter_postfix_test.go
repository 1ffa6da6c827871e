package e2e

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
)

// Endpoints are chosen by sender domain: every lab client connects from
// 127.0.0.1 ("localhost"), except the one of the "by-ip" case, which
// connects from postfixByIPClient (no name in the lab's hosts file) and is
// covered by that address alone.
const postfixByIPClient = "127.0.0.41"

const postfixE2EPolicy = `
mta = "postfix"
[milter]
authserv_id = "mx.lab.test"

[[endpoint]]
name  = "needs-tls"
hosts = ["tls.test"]
  [endpoint.inbound]
  encryption = true

[[endpoint]]
name  = "needs-cert"
hosts = ["cert.test"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  cn            = "client.lab.test"
  issuer_cn     = "Lab Test CA"

[[endpoint]]
name  = "strong"
hosts = ["strong.test"]
  [endpoint.inbound]
  encryption = true
  min_bits   = 256

[[endpoint]]
name  = "wrong-cn"
hosts = ["wrongcn.test"]
  [endpoint.inbound]
  cn = "mx1.company-b.example"

[[endpoint]]
name  = "wrong-issuer"
hosts = ["wrongissuer.test"]
  [endpoint.inbound]
  issuer_cn = "Other CA"

[[endpoint]]
name  = "host-cn"
hosts = ["hostcn.test"]
  [endpoint.inbound]
  match_cn = true

[[endpoint]]
name   = "rejecting"
hosts  = ["reject.test"]
action = "reject"
  [endpoint.inbound]
  encryption = true

[[endpoint]]
name  = "watching"
hosts = ["monitor.test"]
mode  = "monitor"
  [endpoint.inbound]
  encryption    = true
  validate_cert = true

[[endpoint]]
name  = "by-ip"
hosts = ["` + postfixByIPClient + `"]
  [endpoint.inbound]
  encryption = true
`

// TestPostfixEndToEnd runs the inbound matrix against a real private
// Postfix 3.7 with the milter attached (smtpd_milters, default action
// tempfail), real TLS from Go's net/smtp and an SMTP sink behind it.
func TestPostfixEndToEnd(t *testing.T) {
	mtalab.RequirePostfix(t)
	pki := testpki.NewT(t)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	lm := startLiveMilter(t, mustPolicy(t, postfixE2EPolicy))
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport:    map[string]string{"partner.test": sink.Nexthop()},
		TLS:          pki.Server,
		ClientCAFile: pki.CA.CertFile,
		Milter:       "inet:127.0.0.1:" + strconv.Itoa(lm.port),
		MainCF:       []string{"milter_default_action = tempfail"},
	})
	addr := pf.SMTPAddr("smtp")
	to := []string{"user@partner.test"}
	localhostCert := issueClient(t, pki, "localhost-client", pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: "localhost"})

	delivered := func(t *testing.T, sender string) []string { return waitDelivered(t, sink, sender, 30*time.Second) }
	// ours returns our Received and Authentication-Results of a copy and
	// checks their place: at the very top, above Postfix's Received.
	ours := func(t *testing.T, hdrs []string) (string, string) {
		t.Helper()
		if len(hdrs) < 3 || !strings.HasPrefix(hdrs[0], "Received: ") || !strings.Contains(hdrs[0], "by mx.lab.test (tlsgate)") ||
			!strings.HasPrefix(hdrs[1], "Authentication-Results: mx.lab.test;") ||
			!strings.HasPrefix(hdrs[2], "Received: ") || !strings.Contains(hdrs[2], "by mx.lab.test (Postfix)") {
			t.Fatalf("header order:\n%s", strings.Join(hdrs, "\n"))
		}
		for _, h := range hdrs {
			for i := 0; i < len(h); i++ {
				if h[i] < ' ' || h[i] > '~' {
					t.Errorf("non-printable byte %#x in header %q", h[i], h)
				}
			}
		}
		return hdrs[0], hdrs[1]
	}

	t.Run("plaintext from covered peer is deferred", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@tls.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1 TLS required by local policy for this peer")
		wantContains(t, "log", lm.lineFor(t, "a@tls.test"), "NOQUEUE: tlsgate: result=", " client=localhost[127.0.0.1]", "result=defer endpoint=needs-tls", "tls=none", "check=encryption")
	})
	t.Run("action reject answers 5.7.1", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@reject.test", to: to})
		wantRefused(t, r[0], 550, "5.7.1 TLS required by local policy for this peer")
		wantContains(t, "log", lm.lineFor(t, "a@reject.test"), "result=reject")
	})
	t.Run("TLS without a certificate where one is required", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, nil), mail{from: "nocert@cert.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "nocert@cert.test"), "tls=TLSv1.3", "verify=UNVERIFIED", "tlsgate: result=defer ", "check=validate_cert want=trusted got=none-or-untrusted")
	})
	t.Run("self-signed certificate where validation is required", func(t *testing.T) {
		mark := pf.LogMark()
		r := sendSession(t, addr, clientTLS(t, pki, pki.SelfSigned), mail{from: "self@cert.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		// The certificate was presented, and Postfix did not trust it.
		if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`Untrusted TLS connection established from localhost`), 10*time.Second); err != nil {
			t.Error(err)
		}
		wantContains(t, "log", lm.lineFor(t, "self@cert.test"), "verify=UNVERIFIED", "tlsgate: result=defer ", "check=validate_cert")
	})
	t.Run("good certificate is delivered with both headers", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "good@cert.test", to: to})
		wantAccepted(t, r[0])
		hdrs := delivered(t, "good@cert.test")
		t.Logf("sink copy:\n%s", strings.Join(hdrs, "\n"))
		rcv, ar := ours(t, hdrs)
		line := lm.lineFor(t, "good@cert.test")
		qid := strings.SplitN(line, ":", 2)[0]
		wantContains(t, "Received", rcv, "Received: from client.lab.test (localhost [127.0.0.1]) by mx.lab.test (tlsgate) with ESMTPS id "+qid+" (version=TLSv1.3 cipher=TLS_",
			"verify=OK) (subject-cn=client.lab.test issuer-cn=Lab+20Test+20CA) (endpoint=needs-cert policy=pass);")
		wantContains(t, "Authentication-Results", ar, "Authentication-Results: mx.lab.test; x-tls=pass policy.endpoint=needs-cert smtp.bits=", "smtp.version=TLSv1.3")
		wantContains(t, "log", line, "tlsgate: result=pass endpoint=needs-cert client=localhost[127.0.0.1] sender=<good@cert.test> tls=TLSv1.3", "verify=OK", "tlsgate: result=pass ")
		// The queue ID joins our line with Postfix's own.
		if _, err := pf.WaitLog(regexp.MustCompile(regexp.QuoteMeta(qid)+`: from=<good@cert.test>`), 10*time.Second); err != nil {
			t.Errorf("queue ID %q not in Postfix's log: %v", qid, err)
		}
	})
	t.Run("CA-signed with the wrong CN", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@wrongcn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "a@wrongcn.test"), "check=cn want=mx1.company-b.example got=client.lab.test")
	})
	t.Run("CN defaults to the peer's verified host name", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, localhostCert), mail{from: "ok@hostcn.test", to: to})
		wantAccepted(t, r[0])
		wantContains(t, "log", lm.lineFor(t, "ok@hostcn.test"), "endpoint=host-cn", "result=pass")
		r = sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "bad@hostcn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "bad@hostcn.test"), "check=cn want=localhost got=client.lab.test")
	})
	t.Run("issuer CN mismatch", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@wrongissuer.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "a@wrongissuer.test"), `check=issuer_cn want=\"Other CA\" got=\"Lab Test CA\"`)
	})
	t.Run("TLS 1.2 128-bit cipher against min_bits 256", func(t *testing.T) {
		cfg := clientTLS(t, pki, nil)
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
		r := sendSession(t, addr, cfg, mail{from: "weak@strong.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "weak@strong.test"), "tls=TLSv1.2 cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128", `check=min_bits want=\">=256\" got=128`)
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
		r = sendSession(t, addr, cfg, mail{from: "strong@strong.test", to: to})
		wantAccepted(t, r[0])
		wantContains(t, "log", lm.lineFor(t, "strong@strong.test"), "cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256", "result=pass")
	})
	t.Run("swaks (OpenSSL client) with a client certificate", func(t *testing.T) {
		out, err := exec.Command("swaks", "--server", addr, "--ehlo", "client.lab.test",
			"--from", "swaks@strong.test", "--to", "user@partner.test",
			"--tls", "--tls-cert", pki.Client.CertFile, "--tls-key", pki.Client.KeyFile).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		// OpenSSL on both ends negotiates TLS_AES_256_GCM_SHA384: 256 bits.
		wantContains(t, "log", lm.lineFor(t, "swaks@strong.test"), "tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK", "tlsgate: result=pass ")
		rcv, ar := ours(t, delivered(t, "swaks@strong.test"))
		wantContains(t, "Received", rcv, "(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK)", "(endpoint=strong policy=pass)")
		wantContains(t, "Authentication-Results", ar, "x-tls=pass policy.endpoint=strong smtp.bits=256")
	})
	t.Run("client skips the EHLO after STARTTLS", func(t *testing.T) {
		rawSkipEHLO(t, addr, clientTLS(t, pki, pki.Client), "skip@cert.test", "user@partner.test")
		wantContains(t, "log", lm.lineFor(t, "skip@cert.test"), "tls=TLSv1.3", "verify=OK", "tlsgate: result=pass ")
		rcv, _ := ours(t, delivered(t, "skip@cert.test"))
		wantContains(t, "Received", rcv, "verify=OK", "(endpoint=needs-cert policy=pass)")
	})
	t.Run("every message of a session is judged", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client),
			mail{from: "one@cert.test", to: to},
			mail{from: "two@wrongcn.test", to: to},
			mail{from: "three@tls.test", to: []string{"user@partner.test", "other@partner.test"}},
		)
		wantAccepted(t, r[0])
		wantRefused(t, r[1], 451, "4.7.1")
		wantAccepted(t, r[2])
		wantContains(t, "log", lm.lineFor(t, "one@cert.test"), "result=pass")
		wantContains(t, "log", lm.lineFor(t, "two@wrongcn.test"), "tls=TLSv1.3", "result=defer", "check=cn")
		// Third message, after Postfix's ABORTs: still judged on the session's TLS.
		wantContains(t, "log", lm.lineFor(t, "three@tls.test"), "tls=TLSv1.3", "verify=OK", "tlsgate: result=pass ")
		rcv, _ := ours(t, delivered(t, "three@tls.test"))
		wantContains(t, "Received", rcv, "verify=OK", "(endpoint=needs-tls policy=pass)")
	})
	t.Run("monitor mode accepts and stamps the failure", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@monitor.test", to: to})
		wantAccepted(t, r[0])
		rcv, ar := ours(t, delivered(t, "a@monitor.test"))
		wantContains(t, "Received", rcv, "(no TLS: plaintext session) (endpoint=watching policy=fail mode=monitor failed=encryption);")
		wantContains(t, "Authentication-Results", ar, "mx.lab.test; x-tls=fail reason=encryption policy.endpoint=watching")
		wantContains(t, "log", lm.lineFor(t, "a@monitor.test"), "result=monitor")
	})
	t.Run("peer covered only by its IP address", func(t *testing.T) {
		// The sender domain is covered by no endpoint, and the address has
		// no name: only the client address can choose "by-ip".
		r := sendSessionFrom(t, postfixByIPClient, addr, nil, mail{from: "ip-plain@free.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1 TLS required by local policy for this peer")
		wantContains(t, "log", lm.lineFor(t, "ip-plain@free.test"),
			"NOQUEUE: tlsgate: result=", " client=unknown["+postfixByIPClient+"]", "result=defer endpoint=by-ip", "tls=none", "check=encryption")

		r = sendSessionFrom(t, postfixByIPClient, addr, clientTLS(t, pki, nil), mail{from: "ip-tls@free.test", to: to})
		wantAccepted(t, r[0])
		line := lm.lineFor(t, "ip-tls@free.test")
		wantContains(t, "log", line, "client=unknown["+postfixByIPClient+"]", "endpoint=by-ip ", "tls=TLSv1.3", "result=pass")
		hdrs := delivered(t, "ip-tls@free.test")
		t.Logf("sink copy:\n%s", strings.Join(hdrs, "\n"))
		rcv, ar := ours(t, hdrs)
		wantContains(t, "Received", rcv, "from client.lab.test (unknown ["+postfixByIPClient+"]) by mx.lab.test (tlsgate) with ESMTPS",
			"verify=UNVERIFIED)", "(endpoint=by-ip policy=pass);")
		wantContains(t, "Authentication-Results", ar, "mx.lab.test; x-tls=pass policy.endpoint=by-ip", "smtp.version=TLSv1.3")
		// Postfix saw the same address (not a NAT'd 127.0.0.1).
		if _, err := pf.WaitLog(regexp.MustCompile(`connect from unknown\[`+regexp.QuoteMeta(postfixByIPClient)+`\]`), 10*time.Second); err != nil {
			t.Error(err)
		}
	})
	t.Run("uncovered peer passes stamped", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@free.test", to: to})
		wantAccepted(t, r[0])
		rcv, ar := ours(t, delivered(t, "a@free.test"))
		wantContains(t, "Received", rcv, "(no TLS: plaintext session) (endpoint=none policy=none);")
		wantContains(t, "Authentication-Results", ar, "mx.lab.test; x-tls=none reason=plaintext")
		wantContains(t, "log", lm.lineFor(t, "a@free.test"), "result=none endpoint=none", "tls=none")
	})
	t.Run("forged headers are stripped", func(t *testing.T) {
		forged := "Received: from evil (evil [192.0.2.66])\r\n\tby mx.lab.test (tlsgate) with ESMTPS id FAKE\r\n\t(version=TLSv1.3 cipher=X bits=256 verify=OK)\r\n\t(endpoint=needs-cert policy=pass); Sat, 28 Nov 2026 00:00:00 +0000\r\n" +
			"Authentication-Results: (forged) mx.lab.test; x-tls=pass policy.endpoint=needs-cert\r\n" +
			"Authentication-Results: MX.LAB.TEST; x-tls=pass\r\n" +
			"Received: from a (b [192.0.2.1]) by mx.partner.example (tlsgate) id KEEP; Sat, 28 Nov 2026 00:00:00 +0000\r\n" +
			"Authentication-Results: mx.partner.example; spf=pass smtp.mailfrom=partner.example\r\n"
		r := sendSession(t, addr, nil, mail{from: "forger@free.test", to: to, headers: forged})
		wantAccepted(t, r[0])
		hdrs := delivered(t, "forger@free.test")
		t.Logf("sink copy:\n%s", strings.Join(hdrs, "\n"))
		ours(t, hdrs)
		var mine []string
		for _, v := range fieldsNamed(hdrs, "Received") {
			if strings.Contains(v, "FAKE") {
				t.Errorf("forged Received survived: %s", v)
			}
			if milter.ForgedReceived(v, "mx.lab.test") {
				mine = append(mine, v)
			}
		}
		if len(mine) != 1 {
			t.Errorf("%d Received lines claim to be ours:\n%s", len(mine), strings.Join(hdrs, "\n"))
		}
		ar := fieldsNamed(hdrs, "Authentication-Results")
		if len(ar) != 2 || !strings.HasPrefix(ar[0], "mx.lab.test; x-tls=none") || !strings.HasPrefix(ar[1], "mx.partner.example;") {
			t.Errorf("Authentication-Results: %q", ar)
		}
		wantContains(t, "headers", strings.Join(hdrs, "\n"), "by mx.partner.example (tlsgate) id KEEP")
	})
	t.Run("hostile certificate names cannot break headers", func(t *testing.T) {
		for i, cn := range []string{
			`evil) (x "q" \ back`,
			"Ünïcödé Ωmega 証明書",
			"crlf\r\nX-Injected: yes",
			strings.Repeat("very-long-subject-", 12),
		} {
			sender := "h" + strconv.Itoa(i) + "@free.test"
			cert := issueClient(t, pki, "hostile-"+strconv.Itoa(i), pkix.Name{CommonName: cn, Organization: []string{"Evil (Org) \"Q\""}})
			r := sendSession(t, addr, clientTLS(t, pki, cert), mail{from: sender, to: to})
			wantAccepted(t, r[0])
			hdrs := delivered(t, sender)
			t.Logf("sink copy:\n%s", strings.Join(hdrs[:2], "\n"))
			rcv, ar := ours(t, hdrs) // checks printable ASCII
			if strings.Contains(rcv+ar, "X-Injected") && !strings.Contains(rcv, "X-Injected:+20yes") {
				t.Errorf("injection: %s", rcv)
			}
			for _, h := range []string{rcv, ar} {
				if strings.Count(h, "(") != strings.Count(h, ")") || strings.Count(h, `"`)%2 != 0 || strings.Contains(h, `\`) {
					t.Errorf("unbalanced or escaped: %s", h)
				}
			}
			wantContains(t, "Received", rcv, "verify=OK")
			wantContains(t, "log", lm.lineFor(t, sender), "result=none")
		}
	})
	t.Run("milter stopped: Postfix defers, nothing is accepted unjudged", func(t *testing.T) {
		// Messages accepted above may still be on their way: once they are
		// delivered, only the message sent here could change the count.
		if err := pf.WaitQueueEmpty(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		before := len(sink.Messages())
		lm.stop(t)
		r := sendSession(t, addr, nil, mail{from: "late@free.test", to: to})
		if r[0].err == nil || r[0].code()/100 != 4 {
			t.Fatalf("with the milter down: %s %v, want a 4xx", r[0].stage, r[0].err)
		}
		if _, err := pf.WaitLog(regexp.MustCompile(`(?i)milter.*127\.0\.0\.1:`+strconv.Itoa(lm.port)), 10*time.Second); err != nil {
			t.Error(err)
		}
		// Had Postfix queued it, it would stay in the queue (deferred) or
		// reach the sink before the queue is empty again.
		if err := pf.WaitQueueEmpty(30 * time.Second); err != nil {
			t.Error(err)
		}
		if n := len(sink.Messages()); n != before {
			t.Errorf("sink got %d new messages", n-before)
		}
		t.Logf("refused with: %s %v", r[0].stage, r[0].err)
	})
	_ = policy.Postfix
}
