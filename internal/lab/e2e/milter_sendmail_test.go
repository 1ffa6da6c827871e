package e2e

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// Endpoints are chosen by sender domain: every lab client connects from
// 127.0.0.1 ("localhost"), except the one of the "by-ip" case, which
// connects from sendmailByIPClient (no name in the lab's hosts file) and is
// covered by that address alone.
const sendmailByIPClient = "127.0.0.42"

func sendmailE2EPolicy(pin string) string {
	return fmt.Sprintf(`
mta = "sendmail"
[milter]
authserv_id = "sm.lab.test"

[[endpoint]]
name  = "needs-tls"
hosts = ["tls.test"]
  [endpoint.inbound]
  encryption = true

[[endpoint]]
name  = "dn"
hosts = ["dn.test"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  subject_dn    = "/C=DE/O=Lab Test/CN=client.lab.test"
  issuer_dn     = "CN=Lab Test CA, O=Lab Test, C=DE"

[[endpoint]]
name  = "wrong-subject"
hosts = ["wrongsubject.test"]
  [endpoint.inbound]
  subject_dn = "/C=DE/O=Somebody Else/CN=client.lab.test"

[[endpoint]]
name  = "wrong-issuer"
hosts = ["wrongissuer.test"]
  [endpoint.inbound]
  issuer_dn = "/C=DE/O=Other Org/CN=Lab Test CA"

[[endpoint]]
name  = "named"
hosts = ["cn.test"]
  [endpoint.inbound]
  cn        = "client.lab.test"
  issuer_cn = "Lab Test CA"

[[endpoint]]
name  = "pinned"
hosts = ["pin.test"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = false
  fingerprints  = ["sha256:%s"]

[[endpoint]]
name   = "rejecting"
hosts  = ["reject.test"]
action = "reject"
  [endpoint.inbound]
  encryption = true

[[endpoint]]
name  = "strong"
hosts = ["strong.test"]
  [endpoint.inbound]
  encryption = true
  min_bits   = 256

[[endpoint]]
name  = "host-cn"
hosts = ["hostcn.test"]
  [endpoint.inbound]
  validate_cert = true
  match_cn      = true

[[endpoint]]
name  = "wrong-issuer-cn"
hosts = ["wrongissuercn.test"]
  [endpoint.inbound]
  issuer_cn = "Other CA"

[[endpoint]]
name  = "watching"
hosts = ["monitor.test"]
mode  = "monitor"
  [endpoint.inbound]
  encryption    = true
  validate_cert = true

[[endpoint]]
name  = "by-ip"
hosts = ["%s"]
  [endpoint.inbound]
  encryption = true
`, pin, sendmailByIPClient)
}

// TestSendmailEndToEnd runs the core matrix against a real Sendmail
// 8.17 (Debian's binaries, run from the lab cache) with the milter
// attached as INPUT_MAIL_FILTER with F=T.
func TestSendmailEndToEnd(t *testing.T) {
	mtalab.RequireSendmail(t)
	pki := testpki.NewT(t)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	lm := startLiveMilter(t, mustPolicy(t, sendmailE2EPolicy(pki.Client.Fingerprint)))
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{
		SmartHostPort: sink.Port(),
		TLS:           pki.Server,
		CAFile:        pki.CA.CertFile,
		Milter:        "inet:" + strconv.Itoa(lm.port) + "@127.0.0.1",
		LogLevel:      14,
	})
	addr := sm.Addr()
	to := []string{"user@partner.test"}

	delivered := func(t *testing.T, sender string) []string { return waitDelivered(t, sink, sender, 60*time.Second) }
	ours := func(t *testing.T, hdrs []string) (string, string) {
		t.Helper()
		if len(hdrs) < 3 || !strings.HasPrefix(hdrs[0], "Received: ") || !strings.Contains(hdrs[0], "by sm.lab.test (tlsgate)") ||
			!strings.HasPrefix(hdrs[1], "Authentication-Results: sm.lab.test;") {
			t.Fatalf("header order:\n%s", strings.Join(hdrs, "\n"))
		}
		var smRcv int
		for _, h := range hdrs {
			for i := 0; i < len(h); i++ {
				if h[i] < ' ' || h[i] > '~' {
					t.Errorf("non-printable byte %#x in header %q", h[i], h)
				}
			}
			if strings.HasPrefix(h, "Received: ") && strings.Contains(h, "by sm.lab.test (8.17") {
				smRcv++
			}
		}
		if smRcv != 1 {
			t.Errorf("%d Received lines of Sendmail:\n%s", smRcv, strings.Join(hdrs, "\n"))
		}
		return hdrs[0], hdrs[1]
	}

	t.Run("plaintext from covered peer is deferred", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@tls.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1 TLS required by local policy for this peer")
		wantContains(t, "log", lm.lineFor(t, "a@tls.test"), "tlsgate: result=", " client=localhost[127.0.0.1]", "result=defer endpoint=needs-tls", "tls=none", "check=encryption")
	})
	t.Run("action reject answers 5.7.1", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@reject.test", to: to})
		// Sendmail puts the address between the codes and the text.
		wantRefused(t, r[0], 550, "5.7.1 <a@reject.test>... TLS required by local policy for this peer")
	})
	t.Run("subject and issuer DN match", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "good@dn.test", to: to})
		wantAccepted(t, r[0])
		hdrs := delivered(t, "good@dn.test")
		t.Logf("sink copy:\n%s", strings.Join(hdrs, "\n"))
		rcv, ar := ours(t, hdrs)
		line := lm.lineFor(t, "good@dn.test")
		qid := strings.SplitN(line, ":", 2)[0]
		wantContains(t, "Received", rcv, "from client.lab.test (localhost [127.0.0.1]) by sm.lab.test (tlsgate) with ESMTPS id "+qid,
			"verify=OK) (subject-cn=client.lab.test issuer-cn=Lab+20Test+20CA) (endpoint=dn policy=pass);")
		wantContains(t, "Authentication-Results", ar, "sm.lab.test; x-tls=pass policy.endpoint=dn")
		wantContains(t, "log", line, "endpoint=dn ", "tls=TLSv1.3", "verify=OK", "tlsgate: result=pass ")
		if _, err := sm.WaitLog(regexp.MustCompile(regexp.QuoteMeta(qid)+`: from=<good@dn.test>`), 10*time.Second); err != nil {
			t.Errorf("queue ID %q not in Sendmail's log: %v", qid, err)
		}
	})
	t.Run("self-signed: verify=FAIL is refused", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.SelfSigned), mail{from: "self@dn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "self@dn.test"), "verify=FAIL", "tlsgate: result=defer ", "check=validate_cert want=trusted got=untrusted")
	})
	t.Run("no certificate: verify=NO is refused", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, nil), mail{from: "nocert@dn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "nocert@dn.test"), "verify=NO", "tlsgate: result=defer ", "check=validate_cert want=trusted got=none")
	})
	t.Run("wrong subject DN", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@wrongsubject.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "a@wrongsubject.test"), "check=subject_dn", "O=Somebody Else", "O=Lab Test")
	})
	t.Run("wrong issuer DN", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@wrongissuer.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "a@wrongissuer.test"), "check=issuer_dn", "O=Other Org")
	})
	t.Run("CN and issuer CN from {cn_subject}/{cn_issuer}", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@cn.test", to: to})
		wantAccepted(t, r[0])
		wantContains(t, "log", lm.lineFor(t, "a@cn.test"), "endpoint=named", "result=pass")
		other := issueClient(t, pki, "sm-other-cn", pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: "other.lab.test"})
		r = sendSession(t, addr, clientTLS(t, pki, other), mail{from: "b@cn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "b@cn.test"), "check=cn want=client.lab.test got=other.lab.test")
	})
	t.Run("CN defaults to the peer's verified host name", func(t *testing.T) {
		// Sendmail resolves 127.0.0.1 to "localhost" through the lab's
		// hosts file and confirms it forwards ({client_resolve}=OK).
		localhostCert := issueClient(t, pki, "sm-localhost-client", pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: "localhost"})
		r := sendSession(t, addr, clientTLS(t, pki, localhostCert), mail{from: "ok@hostcn.test", to: to})
		wantAccepted(t, r[0])
		wantContains(t, "log", lm.lineFor(t, "ok@hostcn.test"), "client=localhost[127.0.0.1]", "endpoint=host-cn ", "tls=TLSv1.3", "verify=OK", "tlsgate: result=pass ")
		rcv, ar := ours(t, delivered(t, "ok@hostcn.test"))
		wantContains(t, "Received", rcv, "(subject-cn=localhost issuer-cn=Lab+20Test+20CA) (endpoint=host-cn policy=pass);")
		wantContains(t, "Authentication-Results", ar, "sm.lab.test; x-tls=pass policy.endpoint=host-cn")

		r = sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "bad@hostcn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "bad@hostcn.test"), "endpoint=host-cn", "verify=OK", "tlsgate: result=defer ", "check=cn want=localhost got=client.lab.test")
	})
	t.Run("issuer CN mismatch", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@wrongissuercn.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "a@wrongissuercn.test"), "endpoint=wrong-issuer-cn", "result=defer", `check=issuer_cn want=\"Other CA\" got=\"Lab Test CA\"`)
	})
	t.Run("TLS 1.2 128-bit cipher against min_bits 256", func(t *testing.T) {
		cfg := clientTLS(t, pki, nil)
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
		r := sendSession(t, addr, cfg, mail{from: "weak@strong.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "weak@strong.test"), "result=defer endpoint=strong", "tls=TLSv1.2 cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128 verify=NO",
			`check=min_bits want=\">=256\" got=128`)
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
		r = sendSession(t, addr, cfg, mail{from: "strong@strong.test", to: to})
		wantAccepted(t, r[0])
		wantContains(t, "log", lm.lineFor(t, "strong@strong.test"), "tls=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256", "result=pass")
		rcv, ar := ours(t, delivered(t, "strong@strong.test"))
		wantContains(t, "Received", rcv, "(version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256 verify=NO)", "(endpoint=strong policy=pass);")
		wantContains(t, "Authentication-Results", ar, "x-tls=pass policy.endpoint=strong smtp.bits=256")
	})
	t.Run("monitor mode accepts and stamps the failure", func(t *testing.T) {
		r := sendSession(t, addr, nil, mail{from: "a@monitor.test", to: to})
		wantAccepted(t, r[0])
		rcv, ar := ours(t, delivered(t, "a@monitor.test"))
		wantContains(t, "Received", rcv, "(no TLS: plaintext session) (endpoint=watching policy=fail mode=monitor failed=encryption);")
		wantContains(t, "Authentication-Results", ar, "sm.lab.test; x-tls=fail reason=encryption policy.endpoint=watching")
		wantContains(t, "log", lm.lineFor(t, "a@monitor.test"), "result=monitor endpoint=watching", "tls=none", "check=encryption")

		// Over TLS with a certificate Sendmail could not verify.
		r = sendSession(t, addr, clientTLS(t, pki, pki.SelfSigned), mail{from: "self@monitor.test", to: to})
		wantAccepted(t, r[0])
		rcv, ar = ours(t, delivered(t, "self@monitor.test"))
		wantContains(t, "Received", rcv, "verify=FAIL)", "(endpoint=watching policy=fail mode=monitor failed=validate_cert);")
		wantContains(t, "Authentication-Results", ar, "sm.lab.test; x-tls=fail reason=validate_cert policy.endpoint=watching")
		wantContains(t, "log", lm.lineFor(t, "self@monitor.test"), "endpoint=watching ", "tls=TLSv1.3", "verify=FAIL", "tlsgate: result=monitor ", "check=validate_cert want=trusted got=untrusted")
	})
	t.Run("peer covered only by its IP address", func(t *testing.T) {
		// The sender domain is covered by no endpoint, and the address has
		// no name: only the client address can choose "by-ip".
		r := sendSessionFrom(t, sendmailByIPClient, addr, nil, mail{from: "ip-plain@free.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "ip-plain@free.test"),
			"tlsgate: result=", " client=unknown["+sendmailByIPClient+"]", "result=defer endpoint=by-ip", "tls=none", "check=encryption")

		r = sendSessionFrom(t, sendmailByIPClient, addr, clientTLS(t, pki, nil), mail{from: "ip-tls@free.test", to: to})
		wantAccepted(t, r[0])
		wantContains(t, "log", lm.lineFor(t, "ip-tls@free.test"), "client=unknown["+sendmailByIPClient+"]", "endpoint=by-ip ", "tls=TLSv1.3", "verify=NO", "tlsgate: result=pass ")
		hdrs := delivered(t, "ip-tls@free.test")
		t.Logf("sink copy:\n%s", strings.Join(hdrs, "\n"))
		rcv, ar := ours(t, hdrs)
		wantContains(t, "Received", rcv, "from client.lab.test (unknown ["+sendmailByIPClient+"]) by sm.lab.test (tlsgate) with ESMTPS",
			"verify=NO)", "(endpoint=by-ip policy=pass);")
		wantContains(t, "Authentication-Results", ar, "sm.lab.test; x-tls=pass policy.endpoint=by-ip", "smtp.version=TLSv1.3")
		// Sendmail's own trace line names the same address.
		wantContains(t, "headers", strings.Join(fieldsNamed(hdrs, "Received"), "\n"), "["+sendmailByIPClient+"]) by sm.lab.test (8.17")
	})
	t.Run("pinned endpoint with Sendmail's default MD5 fails closed", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client), mail{from: "a@pin.test", to: to})
		wantRefused(t, r[0], 451, "4.7.1")
		wantContains(t, "log", lm.lineFor(t, "a@pin.test"), "check=fingerprints", "only an MD5 fingerprint", "CertFingerprintAlgorithm=sha256")
	})
	t.Run("every message of a session is judged", func(t *testing.T) {
		r := sendSession(t, addr, clientTLS(t, pki, pki.Client),
			mail{from: "one@dn.test", to: to},
			mail{from: "two@wrongsubject.test", to: to},
			mail{from: "three@tls.test", to: []string{"user@partner.test", "other@partner.test"}},
		)
		wantAccepted(t, r[0])
		wantRefused(t, r[1], 451, "4.7.1")
		wantAccepted(t, r[2])
		wantContains(t, "log", lm.lineFor(t, "one@dn.test"), "result=pass")
		wantContains(t, "log", lm.lineFor(t, "two@wrongsubject.test"), "verify=OK", "tlsgate: result=defer ")
		wantContains(t, "log", lm.lineFor(t, "three@tls.test"), "verify=OK", "tlsgate: result=pass ")
		rcv, _ := ours(t, delivered(t, "three@tls.test"))
		wantContains(t, "Received", rcv, "verify=OK", "(endpoint=needs-tls policy=pass)")
	})
	t.Run("forged headers are stripped", func(t *testing.T) {
		forged := "Received: from partner (partner [192.0.2.1]) by mx.partner.example (8.17.1/8.17.1) id KEEP1; Sat, 28 Nov 2026 00:00:00 +0000\r\n" +
			"Received: from evil (evil [192.0.2.66])\r\n\tby sm.lab.test (tlsgate) with ESMTPS id FAKE\r\n\t(version=TLSv1.3 cipher=X bits=256 verify=OK)\r\n\t(endpoint=dn policy=pass); Sat, 28 Nov 2026 00:00:00 +0000\r\n" +
			"Authentication-Results: (forged) sm.lab.test; x-tls=pass policy.endpoint=dn\r\n" +
			"Received: from a (b [192.0.2.1]) by mx.partner.example (tlsgate) id KEEP2; Sat, 28 Nov 2026 00:00:00 +0000\r\n" +
			"Authentication-Results: mx.partner.example; spf=pass smtp.mailfrom=partner.example\r\n" +
			"Authentication-Results: SM.LAB.TEST; x-tls=pass\r\n"
		r := sendSession(t, addr, nil, mail{from: "forger@free.test", to: to, headers: forged})
		wantAccepted(t, r[0])
		hdrs := delivered(t, "forger@free.test")
		t.Logf("sink copy:\n%s", strings.Join(hdrs, "\n"))
		ours(t, hdrs)
		all := strings.Join(hdrs, "\n")
		if strings.Contains(all, "FAKE") || strings.Contains(all, "(forged)") || strings.Contains(all, "SM.LAB.TEST") {
			t.Errorf("forged header survived:\n%s", all)
		}
		wantContains(t, "headers", all, "id KEEP1", "id KEEP2", "Authentication-Results: mx.partner.example; spf=pass")
		if n := len(fieldsNamed(hdrs, "Received")); n != 4 {
			t.Errorf("%d Received lines, want 4 (ours, Sendmail's, two partner lines)", n)
		}
	})
	t.Run("hostile certificate DNs cannot break headers or logs", func(t *testing.T) {
		for i, name := range []pkix.Name{
			{CommonName: `evil) (x "q" \ back`, Organization: []string{"Evil (Org) \"Q\""}},
			{CommonName: "crlf\r\nX-Injected: yes", Organization: []string{"Ünïcödé 証明書"}},
			{CommonName: strings.Repeat("very-long-subject-", 12), OrganizationalUnit: []string{strings.Repeat("ou/", 60)}},
		} {
			sender := "h" + strconv.Itoa(i) + "@free.test"
			cert := issueClient(t, pki, "sm-hostile-"+strconv.Itoa(i), name)
			r := sendSession(t, addr, clientTLS(t, pki, cert), mail{from: sender, to: to})
			wantAccepted(t, r[0])
			hdrs := delivered(t, sender)
			t.Logf("sink copy:\n%s", strings.Join(hdrs[:2], "\n"))
			rcv, ar := ours(t, hdrs)
			for _, h := range []string{rcv, ar} {
				if strings.Count(h, "(") != strings.Count(h, ")") || strings.Count(h, `"`)%2 != 0 || strings.Contains(h, `\`) {
					t.Errorf("unbalanced or escaped: %s", h)
				}
			}
			if strings.Contains(strings.Join(hdrs, "\n"), "\nX-Injected") {
				t.Errorf("injected header:\n%s", strings.Join(hdrs, "\n"))
			}
			line := lm.lineFor(t, sender)
			wantContains(t, "log", line, "verify=OK", "tlsgate: result=none ")
		}
	})
	t.Run("milter stopped: F=T defers, nothing is accepted unjudged", func(t *testing.T) {
		// Messages accepted above may still be on their way: once they are
		// delivered, only the message sent here could change the count.
		if err := sm.WaitQueueEmpty(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		before := len(sink.Messages())
		lm.stop(t)
		r := sendSession(t, addr, nil, mail{from: "late@free.test", to: to})
		if r[0].err == nil || r[0].code()/100 != 4 {
			t.Fatalf("with the milter down: %s %v, want a 4xx", r[0].stage, r[0].err)
		}
		t.Logf("refused with: %s %v", r[0].stage, r[0].err)
		// Had Sendmail queued it, it would stay in the queue (deferred) or
		// reach the sink before the queue is empty again.
		if err := sm.WaitQueueEmpty(30 * time.Second); err != nil {
			t.Error(err)
		}
		if n := len(sink.Messages()); n != before {
			t.Errorf("sink got %d new messages", n-before)
		}
	})
}

// TestSendmailSHA256Fingerprints: with CertFingerprintAlgorithm=sha256
// Sendmail reports {cert_fp}, and a pinned self-signed certificate passes
// while another is refused.
func TestSendmailSHA256Fingerprints(t *testing.T) {
	mtalab.RequireSendmail(t)
	pki := testpki.NewT(t)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	lm := startLiveMilter(t, mustPolicy(t, sendmailE2EPolicy(pki.SelfSigned.Fingerprint)))
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{
		SmartHostPort: sink.Port(),
		TLS:           pki.Server,
		CAFile:        pki.CA.CertFile,
		Milter:        "inet:" + strconv.Itoa(lm.port) + "@127.0.0.1",
		MC:            []string{"define(`confCERT_FINGERPRINT_ALGORITHM', `sha256')dnl"},
	})
	to := []string{"user@partner.test"}
	r := sendSession(t, sm.Addr(), clientTLS(t, pki, pki.SelfSigned), mail{from: "pinned@pin.test", to: to})
	if r[0].err != nil {
		t.Fatalf("pinned self-signed certificate refused: %v\n%s", r[0].err, strings.Join(lm.lines(), "\n"))
	}
	wantContains(t, "log", lm.lineFor(t, "pinned@pin.test"), "verify=FAIL", "tlsgate: result=pass ")
	r = sendSession(t, sm.Addr(), clientTLS(t, pki, pki.Client), mail{from: "other@pin.test", to: to})
	if r[0].err == nil || r[0].code() != 451 {
		t.Fatalf("other certificate: %v", r[0].err)
	}
	wantContains(t, "log", lm.lineFor(t, "other@pin.test"), "check=fingerprints", "want=\\\"one of "+pki.SelfSigned.Fingerprint, "got="+pki.Client.Fingerprint)
	if _, err := sink.WaitMessages(1, 60*time.Second); err != nil {
		t.Error(err)
	}
}
