package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/mtalab"
	"github.com/tlsgate/tlsgate/internal/testpki"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{
		"Example.COM.":       {Domain: "example.com"},
		"[mx.example.com]":   {Host: "mx.example.com", Port: 25},
		"[127.0.0.1]:2525":   {Host: "127.0.0.1", Port: 2525},
		"[IPv6:2001:db8::1]": {Host: "2001:db8::1", Port: 25},
	} {
		got, err := ParseTarget(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "mx.example.com:25", "[x", "[]:25", "[x]:0", "[x]25", "a b"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func probeSink(t *testing.T, cert *testpki.Cert, pki *testpki.PKI, opts Options) Result {
	t.Helper()
	so := mtalab.SinkOptions{TLS: cert}
	if opts.ClientCert != nil {
		so.ClientAuth = tls.RequestClientCert
	}
	sink := mtalab.StartSink(t, so)
	if opts.Roots == nil {
		opts.Roots = pki.CA.Pool()
	}
	opts.Helo, opts.Timeout = "mx.lab.test", 10*time.Second
	rs, err := Probe(context.Background(), Target{Host: "127.0.0.1", Port: sink.Port()}, opts)
	if err != nil || len(rs) != 1 {
		t.Fatalf("probe: %v %v", rs, err)
	}
	// The sink saw our EHLO and, after STARTTLS, a second one; no mail.
	if s := sink.Sessions(); len(s) != 1 || s[0].Helo != "mx.lab.test" || len(sink.Envelopes()) != 0 {
		t.Errorf("sink sessions %+v envelopes %v", s, sink.Envelopes())
	}
	return rs[0]
}

// TestProbeSinks probes real STARTTLS servers: a good certificate, a
// wrong name, a self-signed one and none at all.
func TestProbeSinks(t *testing.T) {
	pki := testpki.NewT(t)
	t.Run("good", func(t *testing.T) {
		r := probeSink(t, pki.Sink, pki, Options{})
		if r.Err != nil || !r.Offered || !r.TLS || r.Version != "TLSv1.3" || r.Bits < 128 || !r.Verified || len(r.Chain) < 1 || r.Chain[0].Subject.CommonName != "sink.partner.test" {
			t.Errorf("%+v", r)
		}
		if r.NameOK { // connected to 127.0.0.1, the certificate names sink.partner.test
			t.Errorf("name check passed for 127.0.0.1")
		}
	})
	t.Run("wrong name", func(t *testing.T) {
		r := probeSink(t, pki.WrongCN, pki, Options{})
		if !r.TLS || !r.Verified || r.Chain[0].Subject.CommonName != "wrong.partner.test" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("self-signed", func(t *testing.T) {
		r := probeSink(t, pki.SelfSigned, pki, Options{})
		if !r.TLS || r.Verified || !strings.Contains(r.VerifyErr, "unknown authority") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("no STARTTLS", func(t *testing.T) {
		r := probeSink(t, nil, pki, Options{})
		if r.Err != nil || r.Offered || r.TLS {
			t.Errorf("%+v", r)
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		pair, err := tls.LoadX509KeyPair(pki.Client.ChainFile, pki.Client.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		r := probeSink(t, pki.Sink, pki, Options{ClientCert: &pair})
		if !r.ClientCertSent {
			t.Errorf("client certificate not sent: %+v", r)
		}
	})
	t.Run("refused", func(t *testing.T) {
		port := mtalab.FreePort(t)
		rs, _ := Probe(context.Background(), Target{Host: "127.0.0.1", Port: port}, Options{Timeout: 5 * time.Second})
		if rs[0].Err == nil || !strings.Contains(rs[0].Err.Error(), "connect") {
			t.Errorf("%+v", rs[0])
		}
	})
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.com":         "mx.example.com",
		"a\x1b[31mred":           `a\x1B[31mred`,
		"moc.elpmaxe\u202e":      `moc.elpmaxe\u{202E}`,
		"x\u2066y\u2069":         `x\u{2066}y\u{2069}`,
		"c1\u0085":               `c1\x85`,
		"bad\xff":                `bad\xFF`,
		`back\slash`:             `back\\slash`,
		"line\nbreak\r":          `line\x0Abreak\x0D`,
		"bücher.example":         "bücher.example",
		"\u200fmark\u061c\ufeff": `\u{200F}mark\u{061C}\u{FEFF}`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHostileCertificate: a server certificate whose names carry
// terminal escapes and a bidi override is probed without harm; the
// names are kept as sent (escaping is the printer's job).
func TestHostileCertificate(t *testing.T) {
	pki := testpki.NewT(t)
	evil, err := pki.Issue(testpki.Options{
		Name:     "evil",
		Subject:  pkix.Name{CommonName: "evil\x1b]0;owned\x07\u202emoc.example", Organization: []string{"O\r\nInjected: yes"}},
		DNSNames: []string{"evil.example"},
		Signer:   pki.CA,
		KeyType:  testpki.ECDSAP256,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := probeSink(t, evil, pki, Options{})
	if !r.TLS || len(r.Chain) == 0 {
		t.Fatalf("%+v", r)
	}
	got := Escape(r.Chain[0].Subject.CommonName)
	if strings.ContainsAny(got, "\x1b\x07\u202e") || !strings.Contains(got, `\u{202E}`) {
		t.Errorf("escaped CN %q", got)
	}
}
