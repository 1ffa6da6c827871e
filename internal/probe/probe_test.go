package probe

import (
	"net"

	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"golang.org/x/net/dns/dnsmessage"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
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

// dnsServer answers MX and A queries on a loopback UDP port from a table;
// other names are NXDOMAIN. The probe's resolver dials only it, so no
// query leaves the machine.
func dnsServer(t *testing.T, mx map[string][]*net.MX, a map[string]string) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess})
			b.EnableCompression()
			_, knownMX := mx[name]
			_, knownA := a[name]
			if !knownMX && !knownA {
				b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
			}
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch q.Type {
			case dnsmessage.TypeMX:
				for _, m := range mx[name] {
					b.MXResource(rh, dnsmessage.MXResource{Pref: m.Pref, MX: dnsmessage.MustNewName(m.Host)})
				}
			case dnsmessage.TypeA:
				if ip := net.ParseIP(a[name]).To4(); ip != nil {
					b.AResource(rh, dnsmessage.AResource{A: [4]byte(ip)})
				}
			}
			out, err := b.Finish()
			if err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp4", pc.LocalAddr().String())
	}}
}

// TestProbeDomain resolves a domain's MX hosts (through a resolver that
// asks only a loopback DNS server) and probes them in preference order.
func TestProbeDomain(t *testing.T) {
	pki := testpki.NewT(t)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.Sink})
	res := dnsServer(t, map[string][]*net.MX{
		"partner.test": {{Host: "mx2.partner.test.", Pref: 20}, {Host: "mx1.partner.test.", Pref: 10}},
		"null.test":    {{Host: ".", Pref: 0}},
	}, map[string]string{"mx1.partner.test": "127.0.0.1", "mx2.partner.test": "127.0.0.1", "nomx.test": "127.0.0.1"})
	opts := Options{Resolver: res, Roots: pki.CA.Pool(), Timeout: 10 * time.Second}
	rs, err := Probe(context.Background(), Target{Domain: "partner.test", Port: sink.Port()}, opts)
	if err != nil || len(rs) != 2 {
		t.Fatalf("%v %+v", err, rs)
	}
	if rs[0].Host != "mx1.partner.test" || rs[0].Pref != 10 || rs[1].Host != "mx2.partner.test" || !rs[0].TLS || !rs[0].Verified {
		t.Errorf("MX order or result: %+v", rs)
	}
	// No MX record: the domain itself (RFC 5321 5.1).
	rs, err = Probe(context.Background(), Target{Domain: "nomx.test", Port: sink.Port()}, opts)
	if err != nil || len(rs) != 1 || rs[0].Host != "nomx.test" || !rs[0].TLS {
		t.Errorf("no MX: %v %+v", err, rs)
	}
	if _, err := Probe(context.Background(), Target{Domain: "null.test"}, opts); err == nil || !strings.Contains(err.Error(), "null MX") {
		t.Errorf("null MX: %v", err)
	}
}
