package mtapolicy

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/maillog"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		sendmail bool
		text     string
		check    func(r Requirement) bool
	}{
		{false, "", func(r Requirement) bool { return r.None }},
		{false, "may", func(r Requirement) bool { return r.None }},
		{false, "encrypt", func(r Requirement) bool { return r.Encrypt && !r.Verify && r.MinBits == 112 }},
		{false, "encrypt ciphers=high", func(r Requirement) bool { return r.MinBits == 128 }},
		{false, "verify match=hostname", func(r Requirement) bool { return r.Verify && r.MatchHostname && len(r.Names) == 0 }},
		{false, "secure match=mx.b.example:.b.example tafile=/x.pem", func(r Requirement) bool {
			return r.Verify && len(r.Names) == 2 && r.Names[1] == ".b.example" && r.TAFile == "/x.pem"
		}},
		{false, "fingerprint match=AA:BB match=cc:dd", func(r Requirement) bool {
			return !r.Verify && len(r.Fingerprints) == 2 && r.Fingerprints[1] == "CC:DD"
		}},
		{true, "", func(r Requirement) bool { return r.None }},
		{true, "TEMP+ENCR:128", func(r Requirement) bool { return r.Encrypt && !r.Verify && r.MinBits == 128 }},
		{true, "TEMP+VERIFY:128+CN:mx.b.example", func(r Requirement) bool {
			return r.Verify && r.CNOnly && r.Names[0] == "mx.b.example" && r.MinBits == 128
		}},
		{true, "TEMP+VERIFY+CS:/C=DE/CN=Lab+20Test++CI:/CN=CA", func(r Requirement) bool {
			return r.SubjectDN == "/C=DE/CN=Lab Test" && r.IssuerDN == "/CN=CA"
		}},
	} {
		var r Requirement
		var err error
		if tc.sendmail {
			r, err = ParseSendmail(tc.text)
		} else {
			r, err = ParsePostfix(tc.text)
		}
		if err != nil || !tc.check(r) {
			t.Errorf("%q: %+v %v", tc.text, r, err)
		}
	}
	if _, err := ParsePostfix("bogus-level"); err == nil {
		t.Error("bogus level accepted")
	}
	if _, err := ParseSendmail("TEMP+FOO:1"); err == nil {
		t.Error("unknown Sendmail requirement accepted")
	}
}

// TestJudgeLogFacts: what a log line's facts allow to decide.
func TestJudgeLogFacts(t *testing.T) {
	secure, _ := ParsePostfix("secure match=mx.b.example ciphers=high")
	encrypt, _ := ParsePostfix("encrypt")
	verify, _ := ParseSendmail("TEMP+VERIFY:128")
	for _, tc := range []struct {
		req  Requirement
		s    Session
		want Outcome
	}{
		{secure, Session{TLS: true, Bits: 256, Trust: maillog.Verified}, Deliver},
		{secure, Session{TLS: true, Bits: 256, Trust: maillog.Trusted}, Unknown},
		{secure, Session{TLS: true, Bits: 256, Trust: maillog.Untrusted}, Hold},
		{secure, Session{TLS: true, Bits: 56, Trust: maillog.Verified}, Hold},
		{secure, Session{}, Hold},
		{encrypt, Session{TLS: true, Bits: 128, Trust: maillog.Anonymous}, Deliver},
		{encrypt, Session{}, Hold},
		{verify, Session{TLS: true, Bits: 128, Trust: maillog.Trusted}, Deliver},
		{verify, Session{TLS: true, Bits: 128, Trust: maillog.Untrusted}, Hold},
		{Requirement{None: true}, Session{}, Deliver},
	} {
		if got, why := tc.req.Judge(tc.s); got != tc.want {
			t.Errorf("%q on %+v: %v (%s), want %v", tc.req.Text, tc.s, got, why, tc.want)
		}
	}
}

// TestJudgeChain: with the certificate chain (a probe), names,
// fingerprints and trust anchors are decided as the MTA would.
func TestJudgeChain(t *testing.T) {
	pki := testpki.NewT(t)
	chain := func(c *testpki.Cert) []*x509.Certificate { return c.Chain() }
	verified := func(c *testpki.Cert) Session {
		return Session{TLS: true, Bits: 256, Trust: maillog.Trusted, Host: "mx.b.example", Chain: chain(c), ChainVerified: true}
	}
	other := Session{TLS: true, Bits: 256, Trust: maillog.Untrusted, Chain: chain(pki.OtherCASink)}
	ta := filepath.Join(t.TempDir(), "ta.pem")
	ca, _ := os.ReadFile(pki.CA.CertFile)
	os.WriteFile(ta, ca, 0o644)
	otherTA := filepath.Join(t.TempDir(), "other.pem")
	oca, _ := os.ReadFile(pki.OtherCA.CertFile)
	os.WriteFile(otherTA, oca, 0o644)
	p := func(s string) Requirement { r, _ := ParsePostfix(s); return r }
	sm := func(s string) Requirement { r, _ := ParseSendmail(s); return r }
	for _, tc := range []struct {
		req  Requirement
		s    Session
		want Outcome
		why  string
	}{
		{p("secure match=sink.partner.test"), verified(pki.Sink), Deliver, ""},
		{p("secure match=sink.partner.test"), verified(pki.WrongCN), Hold, "names wrong.partner.test"},
		{p("secure match=.partner.test"), verified(pki.WrongCN), Deliver, ""},
		{p("secure match=sink.partner.test"), other, Hold, "does not verify"},
		{p("verify match=hostname"), verified(pki.Sink), Hold, "want mx.b.example"},
		{p("fingerprint match=" + pki.OtherCASink.Fingerprint), other, Deliver, ""},
		{p("fingerprint match=" + pki.OtherCASink.PubkeyFingerprint), other, Deliver, ""},
		{p("fingerprint match=" + pki.Sink.Fingerprint), other, Hold, "no pinned fingerprint"},
		{p("secure match=sink.partner.test tafile=" + ta), verified(pki.Sink), Deliver, ""},
		{p("secure match=sink.partner.test tafile=" + otherTA), verified(pki.Sink), Hold, "trust anchor"},
		{sm("TEMP+VERIFY:128+CN:sink.partner.test"), verified(pki.Sink), Deliver, ""},
		{sm("TEMP+VERIFY:128+CN:sink.partner.test"), verified(pki.WrongCN), Hold, "CN=wrong.partner.test"},
		{sm("TEMP+VERIFY+CS:/C=DE/O=Lab+20Test/CN=sink.partner.test"), verified(pki.Sink), Deliver, ""},
		{sm("TEMP+VERIFY+CI:/C=DE/O=Other+20Org/CN=Other+20CA"), verified(pki.Sink), Hold, "issuer DN"},
	} {
		got, why := tc.req.Judge(tc.s)
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%q on %s: %v (%s), want %v (%s)", tc.req.Text, tc.s.Chain[0].Subject.CommonName, got, why, tc.want, tc.why)
		}
	}
	_ = certs.FingerprintCert
}
