package e2e

import (
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

// exceptionLead is how far ahead of the daemon's start the exception of
// TestPostfixEndpointModel ends: time enough to prove it in force, short
// enough to watch it end.
const exceptionLead = 25 * time.Second

// modelEndpoints is the policy of TestPostfixEndpointModel; the exception
// of company-b-labs ends at expires.
func modelEndpoints(expires time.Time) []string {
	secure := "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\"\n"
	return []string{
		endpoint("company-b", []string{"company-b.example", ".company-b.example"},
			"[endpoint.inbound]\nencryption = true\nvalidate_cert = true\n"+secure),
		// Outbound only, nested in company-b: it must not shadow
		// company-b's inbound rules for mx1.company-b.example.
		endpoint("company-b-mx1", []string{"mx1.company-b.example"}, secure+"min_bits = 128"),
		endpoint("company-b-labs", []string{"labs.company-b.example", ".labs.company-b.example"},
			fmt.Sprintf("exception_to = \"company-b\"\nreason = \"CHG-4711: their new MX gets a certificate\"\nexpires = %s\n",
				expires.UTC().Format(time.RFC3339))+
				"[endpoint.inbound]\nencryption = true\n[endpoint.outbound]\nencryption = true"),
		endpoint("pin-root", []string{"rootpin.partner.test"}, secure+`issuer_cn = "Lab Test CA"`),
		endpoint("pin-intermediate", []string{"interpin.partner.test"}, secure+`issuer_cn = "Lab Intermediate CA"`),
		endpoint("pin-other", []string{"otherpin.partner.test"}, secure+`issuer_cn = "Other CA"`),
	}
}

// TestPostfixEndpointModel runs the endpoint model's cases on a real
// Postfix 3.7 wired to a real "tlsgate serve" (milter and socketmap) by
// "tlsgate mta-config":
//   - shadowing: an endpoint with only an outbound table for
//     mx1.company-b.example does not let a plaintext session from a client
//     verified as mx1.company-b.example (sender <>) through, where
//     .company-b.example requires inbound TLS;
//   - a relayhost with a service name ([relay.company-b.example]:labsubmit,
//     the name mapped to the sink's port in the namespace's /etc/services)
//     gets its endpoint's answer, not TEMP, and the mail goes out verified;
//   - a leaf under an intermediate CA, with outbound issuer_cn pins (tafile=
//     trust anchors): a pin of the root and one of the intermediate both
//     verify (issuer_cn means "chains to that CA" on Postfix), a pin of
//     another CA does not;
//   - an exception before and after its expiry without a reload: while it
//     runs, inbound and outbound decisions name it (exception=) and apply its
//     weaker rules; at its expiry the daemon logs its end once, and the same
//     sessions get company-b's rules.
func TestPostfixEndpointModel(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	l := newLab(t)
	p := l.pki
	inter, err := p.Intermediate("lab-inter", "Lab Intermediate CA")
	if err != nil {
		t.Fatal(err)
	}
	interSink, err := p.Issue(testpki.Options{Name: "inter-sink", KeyType: testpki.ECDSAP256, Signer: inter, DNSNames: []string{"sink.partner.test"},
		Subject: p.Sink.Cert.Subject})
	if err != nil {
		t.Fatal(err)
	}
	l.tlsgate("certs", "store", "add", "--store", l.caStore, inter.CertFile)

	inSink := mtalab.StartSink(t, mtalab.SinkOptions{})
	relaySink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.Sink})
	// The exception's peers present a CA-signed certificate for another
	// name: enough for "encrypt", not for company-b's "secure".
	labsBefore := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.WrongCN})
	labsAfter := mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.WrongCN})
	pins := map[string]*mtalab.Sink{}
	transport := map[string]string{
		"in.test":                     inSink.Nexthop(),
		"labs.company-b.example":      fmt.Sprintf("smtp:[mx.labs.company-b.example]:%d", labsBefore.Port()),
		"mail.labs.company-b.example": fmt.Sprintf("smtp:[mx2.labs.company-b.example]:%d", labsAfter.Port()),
	}
	for _, pin := range []string{"rootpin", "interpin", "otherpin"} {
		pins[pin] = mtalab.StartSink(t, mtalab.SinkOptions{TLS: interSink})
		transport[pin+".test"] = fmt.Sprintf("smtp:[%s.partner.test]:%d", pin, pins[pin].Port())
	}
	const mx1Client = "127.0.0.21"
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: transport,
		Hosts: []string{
			"127.0.0.1 relay.company-b.example mx.labs.company-b.example mx2.labs.company-b.example rootpin.partner.test interpin.partner.test otherpin.partner.test",
			mx1Client + " mx1.company-b.example",
		},
		EtcServices: []string{fmt.Sprintf("labsubmit %d/tcp", relaySink.Port())},
		MainCF:      postfixRetry,
	})
	sock := filepath.Join(pf.QueueDir(), "tlsgate", "policy.sock")
	if err := os.Mkdir(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := gateConfig{MTA: "postfix", Milter: fmt.Sprintf("inet:127.0.0.1:%d", mtalab.FreePort(t)), Listen: "unix:" + sock, SocketGroup: "postfix",
		ServerCert: p.Server}
	cfg.Endpoints = modelEndpoints(time.Now().Add(time.Hour))
	l.writeConfig(cfg.render(l))
	applyMTAConfig(t, l, pf, "default_transport=smtp", "relayhost=[relay.company-b.example]:labsubmit")
	g := newGate(l)
	expires := time.Now().Add(exceptionLead).Truncate(time.Second)
	cfg.Endpoints = modelEndpoints(expires)
	l.writeConfig(cfg.render(l))
	g.Start()
	addr := pf.SMTPAddr("smtp")
	anon := clientTLS(t, p, nil)

	// inbound sends one message and returns tlsgate's decision line for
	// it and the refusal (nil: accepted).
	inbound := func(t *testing.T, m message) (string, error) {
		t.Helper()
		gmark := g.LogMark()
		err := submit(addr, m)
		line, werr := g.waitLogAfter(gmark, regexp.MustCompile(`tlsgate: result=\S+ .*sender=<`+regexp.QuoteMeta(m.From)+`>`), 10*time.Second)
		if werr != nil {
			t.Fatal(werr)
		}
		t.Logf("tlsgate: %s", line)
		return line, err
	}
	refusedAtMail := func(t *testing.T, err error) {
		t.Helper()
		var te *textproto.Error
		if !errors.As(err, &te) || !strings.HasPrefix(err.Error(), "MAIL FROM:") || te.Code != 451 || !strings.HasPrefix(te.Msg, "4.7.1 ") {
			t.Errorf("want MAIL FROM refused with 451 4.7.1, got %v", err)
		}
	}
	// lookup returns tlsgate's one lookup line for key.
	lookup := func(t *testing.T, key string) string {
		t.Helper()
		lines := g.lookups(key)
		if len(lines) == 0 {
			t.Fatalf("tlsgate logged no lookup of %q", key)
		}
		return lines[len(lines)-1]
	}

	t.Run("exception-in-force", func(t *testing.T) {
		line, err := inbound(t, message{From: "before@labs.company-b.example", To: []string{"user@in.test"}, Subject: "exception in force", TLS: anon})
		if err != nil {
			t.Errorf("a client of the exception with TLS but no certificate was refused: %v", err)
		}
		wantContains(t, "decision", line, "tlsgate: result=exception endpoint=company-b-labs exception=company-b-labs client=")

		mark := pf.LogMark()
		mustSubmit(t, addr, message{From: "sender@lab.test", To: []string{"user@labs.company-b.example"}, Subject: "exception outbound"})
		checkOutcome(t, pf, mark, labsBefore, "user@labs.company-b.example",
			outcome{delivered: true, tls: true, tlsLog: `Trusted TLS connection established to mx\.labs\.company-b\.example\[`})
		key := fmt.Sprintf("[mx.labs.company-b.example]:%d", labsBefore.Port())
		wantContains(t, "lookup", lookup(t, key), `answer="OK encrypt" endpoint=company-b-labs exception=company-b-labs map=tlspolicy`)
		if left := time.Until(expires); left < 2*time.Second {
			t.Fatalf("the exception's part took too long: it ends in %v, so what was seen may already be the end (machine too busy)", left)
		}
	})

	t.Run("outbound-only-endpoint-does-not-shadow-inbound", func(t *testing.T) {
		line, err := inbound(t, message{From: "", To: []string{"user@in.test"}, Subject: "shadowing", Local: mx1Client})
		refusedAtMail(t, err)
		wantContains(t, "decision", line, "NOQUEUE: tlsgate: result=defer endpoint=company-b client=mx1.company-b.example["+mx1Client+"] sender=<> tls=none",
			"check=encryption want=TLS got=plaintext")
		// Outbound, the nested endpoint decides for its host.
		if got := strings.TrimSpace(l.tlsgate("query", "-c", l.config, "outbound", "mx1.company-b.example")); got != "OK secure match=sink.partner.test ciphers=high" {
			t.Errorf("query outbound mx1.company-b.example: %q", got)
		}
	})

	t.Run("relayhost-with-service-name", func(t *testing.T) {
		mark := pf.LogMark()
		mustSubmit(t, addr, message{From: "sender@lab.test", To: []string{"user@elsewhere.example"}, Subject: "via relayhost"})
		checkOutcome(t, pf, mark, relaySink, "user@elsewhere.example",
			outcome{delivered: true, tls: true, tlsLog: `Verified TLS connection established to relay\.company-b\.example\[127\.0\.0\.1\]:` + fmt.Sprint(relaySink.Port())})
		const key = "[relay.company-b.example]:labsubmit"
		wantContains(t, "lookup", lookup(t, key), `answer="OK secure match=sink.partner.test" endpoint=company-b map=tlspolicy`)
		if got := strings.TrimSpace(l.tlsgate("query", "--socket", "unix:"+sock, "outbound", key)); got != "OK secure match=sink.partner.test" {
			t.Errorf("tlsgate query --socket %s: %q", key, got)
		}
	})

	t.Run("issuer-pins-under-an-intermediate", func(t *testing.T) {
		checkTrustAnchors(t, filepath.Join(l.taDir, "pin-root.pem"), p.CA)
		checkTrustAnchors(t, filepath.Join(l.taDir, "pin-intermediate.pem"), inter)
		mark := pf.LogMark()
		for _, pin := range []string{"rootpin", "interpin", "otherpin"} {
			mustSubmit(t, addr, message{From: "sender@lab.test", To: []string{"user@" + pin + ".test"}, Subject: pin})
		}
		for _, tc := range []struct {
			pin, endpoint string
			want          outcome
		}{
			{"rootpin", "pin-root", outcome{delivered: true, tls: true, tlsLog: `Verified TLS connection established to rootpin\.partner\.test\[`}},
			{"interpin", "pin-intermediate", outcome{delivered: true, tls: true, tlsLog: `Verified TLS connection established to interpin\.partner\.test\[`}},
			{"otherpin", "pin-other", outcome{dsn: "4.7.5", reason: `Server certificate not verified`}},
		} {
			t.Run(tc.pin, func(t *testing.T) {
				checkOutcome(t, pf, mark, pins[tc.pin], "user@"+tc.pin+".test", tc.want)
				key := fmt.Sprintf("[%s.partner.test]:%d", tc.pin, pins[tc.pin].Port())
				wantContains(t, "lookup", lookup(t, key),
					`answer="OK secure match=sink.partner.test tafile=`+filepath.Join(l.taDir, tc.endpoint+".pem")+`" endpoint=`+tc.endpoint+" ")
			})
		}
	})

	t.Run("exception-ended", func(t *testing.T) {
		ended, err := g.waitLogAfter(0, regexp.MustCompile(`exception-ended endpoint=company-b-labs`), time.Until(expires)+15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("tlsgate: %s", ended)
		wantContains(t, "end line", ended, "NOQUEUE: exception-ended endpoint=company-b-labs exception_to=company-b expires="+expires.UTC().Format(time.RFC3339)+
			" directions=inbound,outbound effect=\"company-b's rules apply to company-b-labs's hosts;")
		if time.Now().Before(expires) {
			t.Errorf("the end was logged before %v", expires)
		}

		line, err := inbound(t, message{From: "after@labs.company-b.example", To: []string{"user@in.test"}, Subject: "exception ended", TLS: anon})
		refusedAtMail(t, err)
		wantContains(t, "decision", line, "NOQUEUE: tlsgate: result=defer endpoint=company-b client=", "check=validate_cert")
		if strings.Contains(line, "exception=") {
			t.Errorf("a decision names the ended exception: %s", line)
		}

		mark := pf.LogMark()
		mustSubmit(t, addr, message{From: "sender@lab.test", To: []string{"user@mail.labs.company-b.example"}, Subject: "exception ended outbound"})
		checkOutcome(t, pf, mark, labsAfter, "user@mail.labs.company-b.example", outcome{dsn: "4.7.5", reason: `Server certificate not verified`})
		key := fmt.Sprintf("[mx2.labs.company-b.example]:%d", labsAfter.Port())
		line = lookup(t, key)
		wantContains(t, "lookup", line, `answer="OK secure match=sink.partner.test" endpoint=company-b map=tlspolicy`)
		if strings.Contains(line, "exception=") {
			t.Errorf("a lookup names the ended exception: %s", line)
		}
		if n := len(logLines(g.Log(), regexp.MustCompile(`exception-ended `))); n != 1 {
			t.Errorf("the end of the exception was logged %d times, want once", n)
		}
		if lines := logLines(g.Log(), regexp.MustCompile(`NOQUEUE: reload `)); len(lines) != 0 {
			t.Errorf("the daemon reloaded: %q", lines)
		}
	})
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
