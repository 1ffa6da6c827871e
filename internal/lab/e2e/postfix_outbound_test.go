package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// outcome is what must become of a message.
type outcome struct {
	// delivered: the sink completes the message; otherwise it stays
	// deferred in Postfix's queue and the sink never sees its envelope.
	delivered bool
	// tls: the sink received it over TLS (delivered only).
	tls bool
	// tlsLog matches Postfix's smtp TLS summary line for the delivery,
	// e.g. "Verified TLS connection established to"; "" = none expected.
	tlsLog string
	// dsn and reason match the deferral ("4.7.4", "TLS is required...").
	dsn, reason string
}

// outCase is one outbound peer of TestPostfixOutbound: a recipient domain
// routed by transport(5) to its own sink, and what tlsgate must make
// Postfix do with mail to it.
type outCase struct {
	name string
	// domain is the recipient domain and transport(5) key.
	domain string
	// cert is the sink's certificate (nil: no STARTTLS).
	cert func(*testpki.PKI) *testpki.Cert
	// nexthop is the transport(5) value for the sink's port; a value
	// ending in ':' names a master.cf service "NAME unix ... smtp -o
	// smtp_tcp_port=PORT" made for the case (the next hop is then the
	// recipient domain itself, and Postfix walks its parent domains).
	nexthop func(port int) string
	// ipv6 reaches the sink through a proxy on [::1]; port is the proxy's.
	ipv6 bool
	// keys are the lookup keys tlsgate must see, verbatim, and answer
	// is the reply it must log for each (prefix match).
	keys   func(port int) []string
	answer string
	// endpoint is the name tlsgate logs for the keys ("" = uncovered).
	endpoint string
	want     outcome
}

// outboundEndpoints is the policy of TestPostfixOutbound.
func outboundEndpoints(p *testpki.PKI) []string {
	secure := "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\"\n"
	return []string{
		endpoint("plain", []string{"plain.partner.test"}, "[endpoint.outbound]\nencryption = true"),
		endpoint("wrong-name", []string{"wrongname.partner.test"}, secure),
		endpoint("wrong-issuer", []string{"otherca.partner.test"}, secure+"issuer_cn = \"Lab Test CA\""),
		endpoint("issuer-ok", []string{"issuer.partner.test"}, secure+"issuer_dn = \"CN=Lab Test CA,O=Lab Test,C=DE\""),
		endpoint("fp-mismatch", []string{"fpbad.partner.test"},
			fmt.Sprintf("[endpoint.outbound]\nvalidate_cert = false\nfingerprints = [%q]", p.WrongCN.Fingerprint)),
		endpoint("fp-cert", []string{"fpgood.partner.test"},
			fmt.Sprintf("[endpoint.outbound]\nvalidate_cert = false\nfingerprints = [%q, %q]", "sha256:"+p.OtherCASink.Fingerprint, "sha256:"+p.Sink.Fingerprint)),
		endpoint("fp-pubkey", []string{"fpkey.partner.test"},
			fmt.Sprintf("[endpoint.outbound]\nvalidate_cert = false\nfingerprints = [%q]", strings.ToLower(strings.ReplaceAll(p.Sink.PubkeyFingerprint, ":", "")))),
		endpoint("good", []string{"good.partner.test"}, secure+"encryption = true\nmin_bits = 128"),
		endpoint("verify-host", []string{"sink.partner.test"}, "[endpoint.outbound]\nvalidate_cert = true"),
		endpoint("parent", []string{".parent.test"}, secure),
		endpoint("hostport", []string{"hp.partner.test"}, "[endpoint.outbound]\nencryption = true"),
		endpoint("mixed", []string{"Mixed.PARTNER.test"}, "[endpoint.outbound]\nencryption = true"),
		endpoint("v6", []string{"::1"}, secure),
	}
}

func outboundCases(p *testpki.PKI, taDir string) []outCase {
	sink := func(p *testpki.PKI) *testpki.Cert { return p.Sink }
	bracket := func(name string) func(int) string {
		return func(port int) string { return fmt.Sprintf("smtp:[%s]:%d", name, port) }
	}
	bracketKey := func(name string) func(int) []string {
		return func(port int) []string { return []string{fmt.Sprintf("[%s]:%d", name, port)} }
	}
	service := func(name string) func(int) string { return func(int) string { return name + ":" } }
	static := func(keys ...string) func(int) []string { return func(int) []string { return keys } }
	verified := func(host string) outcome {
		return outcome{delivered: true, tls: true, tlsLog: `Verified TLS connection established to ` + regexp.QuoteMeta(host) + `\[`}
	}
	noTLS := func(host string) outcome {
		return outcome{dsn: "4.7.4", reason: `TLS is required, but was not offered by host ` + regexp.QuoteMeta(host) + `\[`}
	}
	notVerified := outcome{dsn: "4.7.5", reason: `Server certificate not verified`}
	secure := "OK secure match=sink.partner.test"
	return []outCase{
		{name: "no-starttls", domain: "plain.partner.test", nexthop: bracket("plain.partner.test"), keys: bracketKey("plain.partner.test"),
			endpoint: "plain", answer: "OK encrypt", want: noTLS("plain.partner.test")},
		{name: "wrong-name", domain: "wrongname.partner.test", cert: func(p *testpki.PKI) *testpki.Cert { return p.WrongCN },
			nexthop: bracket("wrongname.partner.test"), keys: bracketKey("wrongname.partner.test"),
			endpoint: "wrong-name", answer: secure, want: notVerified},
		{name: "wrong-issuer", domain: "otherca.partner.test", cert: func(p *testpki.PKI) *testpki.Cert { return p.OtherCASink },
			nexthop: bracket("otherca.partner.test"), keys: bracketKey("otherca.partner.test"),
			endpoint: "wrong-issuer", answer: secure + " tafile=" + filepath.Join(taDir, "wrong-issuer.pem"), want: notVerified},
		{name: "issuer-pinned", domain: "issuer.partner.test", cert: sink,
			nexthop: bracket("issuer.partner.test"), keys: bracketKey("issuer.partner.test"),
			endpoint: "issuer-ok", answer: secure + " tafile=" + filepath.Join(taDir, "issuer-ok.pem"), want: verified("issuer.partner.test")},
		{name: "fingerprint-mismatch", domain: "fpbad.partner.test", cert: sink,
			nexthop: bracket("fpbad.partner.test"), keys: bracketKey("fpbad.partner.test"),
			endpoint: "fp-mismatch", answer: "OK fingerprint match=" + p.WrongCN.Fingerprint, want: notVerified},
		{name: "fingerprint-cert", domain: "fpgood.partner.test", cert: sink,
			nexthop: bracket("fpgood.partner.test"), keys: bracketKey("fpgood.partner.test"),
			endpoint: "fp-cert", answer: "OK fingerprint match=" + p.OtherCASink.Fingerprint + " match=" + p.Sink.Fingerprint, want: verified("fpgood.partner.test")},
		{name: "fingerprint-pubkey", domain: "fpkey.partner.test", cert: sink,
			nexthop: bracket("fpkey.partner.test"), keys: bracketKey("fpkey.partner.test"),
			endpoint: "fp-pubkey", answer: "OK fingerprint match=" + p.Sink.PubkeyFingerprint, want: verified("fpkey.partner.test")},
		{name: "good", domain: "good.partner.test", cert: sink,
			nexthop: bracket("good.partner.test"), keys: bracketKey("good.partner.test"),
			endpoint: "good", answer: secure + " ciphers=high", want: verified("good.partner.test")},
		{name: "verify-hostname", domain: "verify.partner.test", cert: sink,
			nexthop: bracket("sink.partner.test"), keys: bracketKey("sink.partner.test"),
			endpoint: "verify-host", answer: "OK verify match=hostname", want: verified("sink.partner.test")},
		{name: "uncovered-cleartext", domain: "open.test",
			nexthop: bracket("127.0.0.1"), keys: bracketKey("127.0.0.1"),
			answer: "NOTFOUND", want: outcome{delivered: true}},
		{name: "uncovered-parent-walk", domain: "open.uncovered.test", cert: func(p *testpki.PKI) *testpki.Cert { return p.OtherCASink },
			nexthop: service("labopen"), keys: static("open.uncovered.test", ".uncovered.test", ".test"),
			answer: "NOTFOUND",
			// may + smtp_tls_CAfile (the bundle holds both CAs): the other
			// CA is trusted when no tafile= narrows it.
			want: outcome{delivered: true, tls: true, tlsLog: `Trusted TLS connection established to open\.uncovered\.test\[`}},
		{name: "parent-pattern", domain: "dom.parent.test", cert: sink,
			nexthop: service("labparent"), keys: static("dom.parent.test"),
			endpoint: "parent", answer: secure, want: verified("dom.parent.test")},
		{name: "parent-pattern-cleartext", domain: "cleartext.parent.test",
			nexthop: service("labparentplain"), keys: static("cleartext.parent.test"),
			endpoint: "parent", answer: secure, want: noTLS("cleartext.parent.test")},
		{name: "host-port", domain: "hp.partner.test",
			nexthop:  func(port int) string { return fmt.Sprintf("smtp:hp.partner.test:%d", port) },
			keys:     func(port int) []string { return []string{fmt.Sprintf("hp.partner.test:%d", port)} },
			endpoint: "hostport", answer: "OK encrypt", want: noTLS("hp.partner.test")},
		{name: "mixed-case", domain: "mixed.partner.test",
			nexthop: bracket("MiXeD.Partner.TEST"), keys: bracketKey("MiXeD.Partner.TEST"),
			endpoint: "mixed", answer: "OK encrypt", want: noTLS("MiXeD.Partner.TEST")},
		{name: "ipv6-literal", domain: "v6.test", cert: sink, ipv6: true,
			nexthop: bracket("ipv6:::1"), keys: bracketKey("ipv6:::1"),
			endpoint: "v6", answer: secure, want: verified("::1")},
		{name: "ipv6-literal-cleartext", domain: "v6plain.test", ipv6: true,
			nexthop: bracket("ipv6:::1"), keys: bracketKey("ipv6:::1"),
			endpoint: "v6", answer: secure, want: noTLS("::1")},
	}
}

// TestPostfixOutbound sends one message per outbound peer through a
// private Postfix wired to tlsgate by "tlsgate mta-config" (main.cf lines
// applied with postconf -e, socketmap on a unix socket below the queue
// directory named by a relative path) and checks, per peer, that mail to
// a covered peer leaves only over TLS meeting the endpoint's requirements
// or stays deferred, and that uncovered peers get Postfix's default
// (may). Keys arrive as Postfix sends them: bracketed and unbracketed
// next hops with ports, recipient domains with Postfix's own .parent walk,
// mixed case, IPv6 literals.
func TestPostfixOutbound(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	l := newLab(t)
	p := l.pki
	cases := outboundCases(p, l.taDir)

	// One sink per case (an IPv6 case is reached through a proxy on ::1).
	type peer struct {
		sink *mtalab.Sink
		port int // the port Postfix connects to
	}
	peers := map[string]peer{}
	var ipv6Err error
	var master []string
	transport := map[string]string{}
	hosts := []string{"127.0.0.1"}
	for _, c := range cases {
		opts := mtalab.SinkOptions{}
		if c.cert != nil {
			opts.TLS = c.cert(p)
		}
		s := mtalab.StartSink(t, opts)
		pr := peer{sink: s, port: s.Port()}
		if c.ipv6 {
			port, err := proxy6(t, s.Addr())
			if err != nil {
				ipv6Err = err
				continue
			}
			pr.port = port
		}
		peers[c.name] = pr
		nh := c.nexthop(pr.port)
		if strings.HasSuffix(nh, ":") {
			master = append(master, fmt.Sprintf("%s unix - - n - - smtp -o smtp_tcp_port=%d", strings.TrimSuffix(nh, ":"), pr.port))
		}
		transport[c.domain] = nh
		hosts = append(hosts, c.domain)
	}
	hosts = append(hosts, "sink.partner.test", "MiXeD.Partner.TEST")

	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: transport,
		MasterCF:  master,
		Hosts:     []string{strings.Join(hosts, " ")},
		MainCF:    postfixRetry,
	})
	sock := filepath.Join(pf.QueueDir(), "tlsgate", "policy.sock")
	if err := os.Mkdir(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	l.writeConfig(gateConfig{MTA: "postfix", Listen: "unix:" + sock, SocketGroup: "postfix", Endpoints: outboundEndpoints(p)}.render(l))
	// inet_protocols = all lets smtp(8) reach the [ipv6:::1] next hop.
	applied := applyMTAConfig(t, l, pf, "inet_protocols=all")
	wantMap := "smtp_tls_policy_maps = socketmap:unix:tlsgate/policy.sock:tlspolicy"
	if !contains(applied, wantMap) {
		t.Errorf("mta-config did not print %q (a path relative to the queue directory); got:\n%s", wantMap, strings.Join(applied, "\n"))
	}
	g := newGate(l)
	g.Start()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket %s: %v, mode %v; want 0660", sock, err, st.Mode())
	}
	// tlsgate wrote the issuer-pinning trust anchors from its CA store.
	for name, want := range map[string]*testpki.Cert{"wrong-issuer.pem": p.CA, "issuer-ok.pem": p.CA} {
		checkTrustAnchors(t, filepath.Join(l.taDir, name), want)
	}
	setup := time.Since(start)

	mark := pf.LogMark()
	for _, c := range cases {
		if _, ok := peers[c.name]; !ok {
			continue
		}
		mustSubmit(t, pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{"user@" + c.domain}, Subject: c.name})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pr, ok := peers[c.name]
			if !ok {
				t.Skipf("IPv6 loopback (::1) is not usable here: %v", ipv6Err)
			}
			rcpt := "user@" + c.domain
			checkOutcome(t, pf, mark, pr.sink, rcpt, c.want)
			for _, key := range c.keys(pr.port) {
				lines := g.lookups(key)
				if len(lines) == 0 {
					t.Errorf("tlsgate logged no lookup of key %q (Postfix sends keys verbatim)", key)
					continue
				}
				for _, line := range lines {
					if !strings.Contains(line, ` answer="`+c.answer) {
						t.Errorf("key %q: want answer %q, logged: %s", key, c.answer, line)
					}
					if c.endpoint != "" && !strings.Contains(line, " endpoint="+c.endpoint+" ") {
						t.Errorf("key %q: want endpoint=%s, logged: %s", key, c.endpoint, line)
					}
				}
			}
		})
	}

	// Every delivered message arrived exactly once.
	time.Sleep(500 * time.Millisecond)
	for _, c := range cases {
		pr, ok := peers[c.name]
		if !ok || !c.want.delivered {
			continue
		}
		if n := countTo(pr.sink.Messages())["user@"+c.domain]; n != 1 {
			t.Errorf("%s: sink received %d copies, want 1", c.name, n)
		}
	}

	t.Run("tools", func(t *testing.T) {
		// tlsgate query asks the running daemon; postmap asks it the
		// Postfix way (not chrooted, so with the absolute path).
		key := fmt.Sprintf("[plain.partner.test]:%d", peers["no-starttls"].port)
		if got := strings.TrimSpace(l.tlsgate("query", "--socket", "unix:"+sock, "outbound", key)); !strings.HasPrefix(got, "OK encrypt") {
			t.Errorf("tlsgate query --socket: %q, want OK encrypt", got)
		}
		out, err := exec.Command("/usr/sbin/postmap", "-c", pf.ConfigDir(), "-q", "Good.Partner.Test", "socketmap:unix:"+sock+":tlspolicy").CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != "secure match=sink.partner.test ciphers=high" {
			t.Errorf("postmap -q Good.Partner.Test socketmap:...: %q, %v", got, err)
		}
	})
	t.Logf("setup %v, whole test %v", setup.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// checkOutcome asserts what became of the message to rcpt, on the sink,
// in Postfix's log (after byte offset mark) and in its queue.
func checkOutcome(t *testing.T, pf *mtalab.Postfix, mark int, sink *mtalab.Sink, rcpt string, want outcome) {
	t.Helper()
	q := regexp.QuoteMeta(rcpt)
	if want.delivered {
		if !waitUntil(30*time.Second, func() bool { return len(countTo(sink.Messages())) > 0 }) {
			t.Fatalf("sink received nothing for %s; queue reason: %v", rcpt, queueReasons(pf, rcpt))
		}
		m := sink.Messages()[0]
		if len(m.To) != 1 || !strings.EqualFold(m.To[0], rcpt) {
			t.Errorf("sink got recipients %v, want [%s]", m.To, rcpt)
		}
		switch {
		case want.tls && m.TLS == nil:
			t.Errorf("message to %s arrived in cleartext", rcpt)
		case !want.tls && m.TLS != nil:
			t.Errorf("message to %s arrived over %s, want cleartext (the MTA default, may, against a sink without STARTTLS)", rcpt, m.TLS.VersionName)
		}
		sent, err := pf.WaitLogAfter(mark, regexp.MustCompile(`postfix/smtp\[\d+\]: \w+: to=<`+q+`>, relay=.*status=sent`), 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want.tlsLog != "" {
			// The TLS summary is logged by the same smtp process just
			// before the delivery line.
			pid := regexp.MustCompile(`postfix/smtp\[(\d+)\]`).FindStringSubmatch(sent)[1]
			re := regexp.MustCompile(`postfix/smtp\[` + pid + `\]: ` + want.tlsLog)
			if len(logLines(pf.Log()[mark:], re)) == 0 {
				t.Errorf("no log line matching %q for the delivery %q", re, sent)
			}
		}
		return
	}
	line, err := pf.WaitLogAfter(mark, regexp.MustCompile(`postfix/smtp\[\d+\]: \w+: to=<`+q+`>, relay=.*, dsn=`+regexp.QuoteMeta(want.dsn)+`, status=deferred \(`+want.reason), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Postfix: %s", line[strings.Index(line, "to=<"):])
	if _, err := pf.WaitQueue(func(qe []mtalab.QueueEntry) bool {
		r := queued(qe, rcpt)
		return len(r) == 1 && r[0].Reason != ""
	}, 10*time.Second); err != nil {
		t.Errorf("%s is not deferred in the queue: %v", rcpt, err)
	}
	if env := sink.Envelopes(); len(env) != 0 {
		t.Errorf("sink saw %d envelope(s) for a peer that must not get mail: %+v", len(env), env)
	}
	if sent := logLines(pf.Log(), regexp.MustCompile(`to=<`+q+`>, .*status=sent`)); len(sent) > 0 {
		t.Errorf("Postfix delivered mail to %s: %s", rcpt, sent[0])
	}
}

// queueReasons returns the deferral reasons Postfix holds for rcpt.
func queueReasons(pf *mtalab.Postfix, rcpt string) []string {
	q, _ := pf.Queue()
	var out []string
	for _, r := range queued(q, rcpt) {
		out = append(out, r.Reason)
	}
	return out
}

// checkTrustAnchors asserts that path holds exactly the CA certificate want.
func checkTrustAnchors(t *testing.T, path string, want *testpki.Cert) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("trust-anchor file: %v", err)
		return
	}
	var got []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		got = append(got, c)
	}
	if len(got) != 1 || !got[0].Equal(want.Cert) {
		names := make([]string, len(got))
		for i, c := range got {
			names[i] = c.Subject.String()
		}
		t.Errorf("%s holds %v, want only %s", path, names, want.Cert.Subject)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
