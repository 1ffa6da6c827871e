package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// testPKI is a root, an intermediate and a store trusting only the root.
type testPKI struct {
	root, inter testCert
	store       *Store
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	root := mkCA(t, "Test Root CA", nil)
	inter := mkCA(t, "Test Issuing CA", &root)
	s, err := OpenStore(t.TempDir())
	noErr(t, err)
	_, err = s.Add(root.pem())
	noErr(t, err)
	return testPKI{root: root, inter: inter, store: s}
}

func TestVerify(t *testing.T) {
	pki := newTestPKI(t)
	other := mkCA(t, "Other CA", nil)
	expiredInter := mkCert(t, certSpec{cn: "Old Issuing CA", ca: true,
		notBefore: testNow.AddDate(-3, 0, 0), notAfter: testNow.AddDate(0, -1, 0)}, &pki.root)
	otherInter := mkCA(t, "Other Issuing CA", &other)
	rekeyed := mkCA(t, "Test Root CA", nil) // same name as the trusted root, new key
	serverOnlyInter := mkCert(t, certSpec{cn: "Server Issuing CA", ca: true, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &pki.root)

	server := func(spec certSpec) certSpec {
		if spec.cn == "" {
			spec.cn = "mx.example.net"
		}
		if spec.dns == nil && !spec.noEKU {
			spec.dns = []string{"mx.example.net", "*.mail.example.net"}
		}
		return spec
	}
	tests := []struct {
		name    string
		spec    certSpec
		issuer  *testCert
		inter   []*x509.Certificate
		opts    VerifyOptions
		reason  error
		wantErr []string
		chain   int // expected chain length on success
	}{
		{name: "direct from root", spec: server(certSpec{}), issuer: &pki.root,
			opts: VerifyOptions{Name: "mx.example.net"}, chain: 2},
		{name: "via intermediate sent along", spec: server(certSpec{}), issuer: &pki.inter, inter: []*x509.Certificate{pki.inter.cert},
			opts: VerifyOptions{Name: "MX.Example.NET."}, chain: 3},
		{name: "wildcard", spec: server(certSpec{}), issuer: &pki.root,
			opts: VerifyOptions{Name: "in1.mail.example.net"}, chain: 2},
		{name: "no name check", spec: server(certSpec{}), issuer: &pki.root, chain: 2},
		{name: "client purpose", spec: server(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), issuer: &pki.root,
			opts: VerifyOptions{Purpose: PurposeClient}, chain: 2},
		{name: "no EKU is good for both", spec: certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}, noEKU: true}, issuer: &pki.root,
			opts: VerifyOptions{Purpose: PurposeClient, Name: "mx.example.net"}, chain: 2},
		{name: "CN only certificate", spec: certSpec{cn: "legacy.example.net"}, issuer: &pki.root,
			opts: VerifyOptions{Name: "legacy.example.net"}, chain: 2},
		{name: "IP address", spec: certSpec{cn: "mx", ips: []net.IP{net.ParseIP("192.0.2.25")}}, issuer: &pki.root,
			opts: VerifyOptions{Name: "192.0.2.25"}, chain: 2},

		{name: "expired", spec: server(certSpec{notBefore: testNow.AddDate(-1, 0, 0), notAfter: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}), issuer: &pki.root,
			reason: ErrExpired, wantErr: []string{"the certificate CN=mx.example.net expired on 2026-03-01 00:00:00 UTC (92 days ago)", "renewed"}},
		{name: "not yet valid", spec: server(certSpec{notBefore: time.Date(2026, 6, 10, 0, 0, 0, 0, time.UTC)}), issuer: &pki.root,
			reason: ErrNotYetValid, wantErr: []string{"is not yet valid: it starts on 2026-06-10 00:00:00 UTC (in 8 days)", "clock"}},
		{name: "unknown authority", spec: server(certSpec{}), issuer: &other,
			reason: ErrUnknownAuthority, wantErr: []string{`unknown authority "CN=Other CA,O=Test PKI"`, "not in the CA store " + pki.store.Dir()}},
		{name: "intermediate not sent", spec: server(certSpec{}), issuer: &pki.inter,
			reason: ErrUnknownAuthority, wantErr: []string{`unknown authority "CN=Test Issuing CA,O=Test PKI"`, "intermediate"}},
		{name: "root sent along but not trusted", spec: server(certSpec{}), issuer: &otherInter, inter: []*x509.Certificate{otherInter.cert, other.cert},
			reason: ErrUnknownAuthority, wantErr: []string{`the CA certificate CN=Other CA,O=Test PKI (sent along with CN=mx.example.net) is a root CA that is not in the CA store`}},
		{name: "intermediate sent, root missing", spec: server(certSpec{}), issuer: &otherInter, inter: []*x509.Certificate{otherInter.cert},
			reason: ErrUnknownAuthority, wantErr: []string{`unknown authority "CN=Other CA,O=Test PKI": the CA certificate CN=Other Issuing CA,O=Test PKI (sent along with CN=mx.example.net) was issued by`}},
		{name: "CA of the same name with another key", spec: server(certSpec{}), issuer: &rekeyed,
			reason: ErrUnknownAuthority, wantErr: []string{`has a CA of that name, but with a different key`, "renewed with a new key"}},
		{name: "self-signed", spec: server(certSpec{}),
			reason: ErrUnknownAuthority, wantErr: []string{"is self-signed", "pin its fingerprint"}},
		{name: "expired intermediate", spec: server(certSpec{}), issuer: &expiredInter, inter: []*x509.Certificate{expiredInter.cert},
			reason: ErrExpired, wantErr: []string{"the CA certificate CN=Old Issuing CA expired on 2026-05-01"}},
		{name: "name mismatch", spec: server(certSpec{}), issuer: &pki.root, opts: VerifyOptions{Name: "mx.example.org"},
			reason: ErrNameMismatch, wantErr: []string{"name mismatch: the certificate is for [mx.example.net, *.mail.example.net], not mx.example.org"}},
		{name: "wildcard covers one label only", spec: server(certSpec{}), issuer: &pki.root, opts: VerifyOptions{Name: "a.b.mail.example.net"},
			reason: ErrNameMismatch, wantErr: []string{"name mismatch"}},
		{name: "CN ignored when SANs exist", spec: certSpec{cn: "legacy.example.net", dns: []string{"mx.example.net"}}, issuer: &pki.root,
			opts: VerifyOptions{Name: "legacy.example.net"}, reason: ErrNameMismatch, wantErr: []string{"is for [mx.example.net]"}},
		{name: "CN mismatch without SANs", spec: certSpec{cn: "legacy.example.net"}, issuer: &pki.root, opts: VerifyOptions{Name: "mx.example.net"},
			reason: ErrNameMismatch, wantErr: []string{`has no subject alternative names and its CN "legacy.example.net" does not match mx.example.net`}},
		{name: "server-only certificate used as client", spec: server(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), issuer: &pki.root,
			opts: VerifyOptions{Purpose: PurposeClient}, reason: ErrWrongPurpose,
			wantErr: []string{"wrong purpose: the certificate CN=mx.example.net is only for TLS server (extended key usage), not for TLS client"}},
		{name: "client-only certificate used as server", spec: server(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), issuer: &pki.root,
			reason: ErrWrongPurpose, wantErr: []string{"is only for TLS client (extended key usage), not for TLS server"}},
		{name: "S/MIME certificate", spec: server(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}), issuer: &pki.root,
			reason: ErrWrongPurpose, wantErr: []string{"only for S/MIME"}},
		{name: "CA restricts purpose", spec: server(certSpec{}), issuer: &serverOnlyInter, inter: []*x509.Certificate{serverOnlyInter.cert},
			opts: VerifyOptions{Purpose: PurposeClient}, reason: ErrWrongPurpose, wantErr: []string{"the CA certificate CN=Server Issuing CA (issuer of CN=mx.example.net) is only for TLS server"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leaf := mkCert(t, tc.spec, tc.issuer)
			opts := tc.opts
			opts.Now = testNow
			opts.Intermediates = tc.inter
			chain, err := Verify(pki.store, leaf.cert, opts)
			if tc.reason == nil {
				noErr(t, err)
				if len(chain) != tc.chain || chain[0] != leaf.cert || !chain[len(chain)-1].Equal(pki.root.cert) {
					t.Errorf("chain of %d, want %d ending in the root", len(chain), tc.chain)
				}
				return
			}
			if !errors.Is(err, tc.reason) {
				t.Fatalf("got %v, want reason %v", err, tc.reason)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Cert == nil {
				t.Fatalf("not a *VerifyError with Cert: %#v", err)
			}
			if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Errorf("no package prefix: %v", err)
			}
			for _, w := range tc.wantErr {
				wantErr(t, err, w)
			}
		})
	}
}

// A certificate signed with SHA-1 must not be reported as "unknown
// authority". Go cannot make one, so openssl does.
func TestVerifySHA1Signature(t *testing.T) {
	needOpenSSL(t)
	dir := t.TempDir()
	openssl(t, nil, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir+"/ca.key", "-out", dir+"/ca.pem",
		"-subj", "/CN=SHA1 Test CA", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE")
	openssl(t, nil, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir+"/leaf.key", "-out", dir+"/leaf.csr", "-subj", "/CN=old.example.net")
	openssl(t, nil, "x509", "-req", "-sha1", "-in", dir+"/leaf.csr", "-CA", dir+"/ca.pem", "-CAkey", dir+"/ca.key",
		"-set_serial", "7", "-out", dir+"/leaf.pem", "-days", "30")
	store, err := OpenStore(t.TempDir())
	noErr(t, err)
	_, err = store.Add(readFileT(t, dir+"/ca.pem"))
	noErr(t, err)
	cs, err := ReadCertificateFile(dir + "/leaf.pem")
	noErr(t, err)
	_, err = Verify(store, cs[0], VerifyOptions{})
	if !errors.Is(err, ErrInvalidChain) {
		t.Fatalf("got %v, want ErrInvalidChain", err)
	}
	wantErr(t, err, "the certificate CN=old.example.net is signed with SHA1-RSA, an algorithm that is no longer accepted")
}

func TestVerifyDefaults(t *testing.T) {
	pki := newTestPKI(t)
	// Without Now, the real clock is used: a certificate valid around
	// testNow only is expired or not yet valid today, unless today is in
	// that window.
	leaf := mkCert(t, certSpec{cn: "x.example", notBefore: time.Now().Add(-time.Hour), notAfter: time.Now().Add(time.Hour)}, &pki.root)
	_, err := Verify(pki.store, leaf.cert, VerifyOptions{})
	noErr(t, err)
	_, err = Verify(nil, leaf.cert, VerifyOptions{})
	wantErr(t, err, "no CA store")
}

// Verify must agree with "openssl verify" (the library Postfix uses) on
// the outcome.
func TestVerifyAgreesWithOpenSSL(t *testing.T) {
	needOpenSSL(t)
	pki := newTestPKI(t)
	dir := t.TempDir()
	bundle := dir + "/bundle.pem"
	noErr(t, pki.store.WriteBundle(bundle))
	interFile := writeFile(t, dir, "inter.pem", pki.inter.pem(), 0o644)
	tests := []struct {
		name    string
		spec    certSpec
		issuer  *testCert
		host    string
		purpose string
		ok      bool
	}{
		{name: "good", spec: certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}}, issuer: &pki.inter, host: "mx.example.net", purpose: "sslserver", ok: true},
		{name: "expired", spec: certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}, notAfter: testNow.Add(-time.Hour)}, issuer: &pki.inter, purpose: "sslserver"},
		{name: "not yet valid", spec: certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}, notBefore: testNow.Add(time.Hour)}, issuer: &pki.inter, purpose: "sslserver"},
		{name: "wrong name", spec: certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}}, issuer: &pki.inter, host: "mx.example.org", purpose: "sslserver"},
		{name: "CN fallback", spec: certSpec{cn: "mx.example.net"}, issuer: &pki.inter, host: "mx.example.net", purpose: "sslserver", ok: true},
		{name: "server-only as client", spec: certSpec{cn: "mx.example.net", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, issuer: &pki.inter, purpose: "sslclient"},
		{name: "client-only as client", spec: certSpec{cn: "mx.example.net", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, issuer: &pki.inter, purpose: "sslclient", ok: true},
		{name: "unknown CA", spec: certSpec{cn: "mx.example.net"}, purpose: "sslserver"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leaf := mkCert(t, tc.spec, tc.issuer)
			leafFile := writeFile(t, t.TempDir(), "leaf.pem", leaf.pem(), 0o644)
			args := []string{"verify", "-CAfile", bundle, "-untrusted", interFile, "-purpose", tc.purpose,
				"-attime", fmt.Sprint(testNow.Unix())}
			if tc.host != "" {
				args = append(args, "-verify_hostname", tc.host)
			}
			args = append(args, leafFile)
			cmd := exec.Command(needOpenSSL(t), args...)
			out, err := cmd.CombinedOutput()
			sslOK := err == nil
			purpose := PurposeServer
			if tc.purpose == "sslclient" {
				purpose = PurposeClient
			}
			_, verr := Verify(pki.store, leaf.cert, VerifyOptions{Name: tc.host, Purpose: purpose, Now: testNow, Intermediates: []*x509.Certificate{pki.inter.cert}})
			if sslOK != tc.ok || (verr == nil) != tc.ok {
				t.Errorf("want ok=%v; openssl ok=%v (%s); Verify: %v", tc.ok, sslOK, strings.TrimSpace(string(out)), verr)
			}
		})
	}
}

func TestParsePurpose(t *testing.T) {
	for in, want := range map[string]Purpose{"": PurposeServer, "server": PurposeServer, "Client": PurposeClient} {
		got, err := ParsePurpose(in)
		if err != nil || got != want {
			t.Errorf("ParsePurpose(%q) = %v, %v", in, got, err)
		}
	}
	_, err := ParsePurpose("smime")
	wantErr(t, err, "want server or client")
}

func TestMatchHostname(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"mx.example.net", "MX.example.net", true},
		{"mx.example.net.", "mx.example.net", true},
		{"*.example.net", "mx.example.net", true},
		{"*.example.net", "example.net", false},
		{"*.example.net", "a.b.example.net", false},
		{"*.net", "example.net", false},
		{"m*.example.net", "mx.example.net", false},
	}
	for _, tc := range tests {
		if got := matchHostname(tc.pattern, tc.host); got != tc.want {
			t.Errorf("matchHostname(%q, %q) = %v", tc.pattern, tc.host, got)
		}
	}
}
