package certs

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDescribe(t *testing.T) {
	ca := mkCA(t, "Test Root CA", nil)
	rsaKey, _ := GenerateKey("rsa2048")
	leaf := mkCert(t, certSpec{
		cn: "mx.example.net", org: "Example, Inc.",
		dns:    []string{"mx.example.net", "mail.example.net"},
		ips:    []net.IP{net.ParseIP("192.0.2.25")},
		emails: []string{"postmaster@example.net"},
		eku:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		key:    rsaKey,
	}, &ca)
	info := Describe(leaf.cert)
	checks := []struct{ field, got, want string }{
		{"subject", info.Subject, `CN=mx.example.net,O=Example\, Inc.`},
		{"issuer", info.Issuer, "CN=Test Root CA,O=Test PKI"},
		{"key", info.KeyAlgorithm, "RSA"},
		{"dns", strings.Join(info.DNSNames, ","), "mx.example.net,mail.example.net"},
		{"ips", strings.Join(info.IPAddresses, ","), "192.0.2.25"},
		{"emails", strings.Join(info.EmailAddresses, ","), "postmaster@example.net"},
		{"purposes", strings.Join(info.Purposes, ","), "TLS server"},
		{"sha256", info.SHA256, FingerprintCert(leaf.cert)},
		{"spki", info.SPKISHA256, FingerprintSPKI(leaf.cert)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if info.KeyBits != 2048 || info.IsCA || info.SelfSigned {
		t.Errorf("bits=%d ca=%v self=%v", info.KeyBits, info.IsCA, info.SelfSigned)
	}
	if !info.NotAfter.Equal(leaf.cert.NotAfter) || info.NotAfter.Location() != time.UTC {
		t.Errorf("NotAfter %v", info.NotAfter)
	}
	root := Describe(ca.cert)
	if !root.IsCA || !root.SelfSigned || root.Purposes != nil || root.KeyAlgorithm != "ECDSA P-256" || root.KeyBits != 256 {
		t.Errorf("root: %+v", root)
	}

	text := info.Format("  ", testNow)
	for _, want := range []string{
		"  subject:            CN=mx.example.net,O=Example\\, Inc.\n",
		"key:                RSA 2048 bits",
		"(90 days left)",
		"DNS names:          mx.example.net, mail.example.net",
		"IP addresses:       192.0.2.25",
		"CA:                 no",
		"SHA-256 cert:       " + info.SHA256,
		"SHA-256 public key: " + info.SPKISHA256,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Format lacks %q:\n%s", want, text)
		}
	}
	if got := info.Format("", testNow.AddDate(1, 0, 0)); !strings.Contains(got, "EXPIRED 275 days ago") {
		t.Errorf("expired cert not flagged:\n%s", got)
	}
	if got := info.Format("", testNow.AddDate(0, 0, -3)); !strings.Contains(got, "NOT YET VALID, starts in 2 days") {
		t.Errorf("future cert not flagged:\n%s", got)
	}
}

// The DN strings must be what "openssl x509 -nameopt RFC2253" prints, for
// the attributes admins see in practice.
func TestDNMatchesOpenSSL(t *testing.T) {
	needOpenSSL(t)
	key, _ := GenerateKey("p256")
	name := pkix.Name{
		Country: []string{"DE"}, Province: []string{"Bayern"}, Locality: []string{"Muenchen"},
		Organization: []string{"Example, Inc."}, OrganizationalUnit: []string{"IT+Mail"},
		CommonName: "mx.example.net", SerialNumber: "HRB 1234", StreetAddress: []string{"Main St 1"}, PostalCode: []string{"80331"},
		ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: oidEmailAddress, Value: asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte("pm@example.net")}},
			{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte("example")}},
		},
	}
	tmpl := &x509.Certificate{SerialNumber: serialOne(), Subject: name, NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(randReader(), tmpl, tmpl, key.Public(), key)
	noErr(t, err)
	c, _ := x509.ParseCertificate(der)
	p := writeFile(t, t.TempDir(), "c.pem", EncodeCertificatesPEM(c), 0o644)
	out := openssl(t, nil, "x509", "-in", p, "-noout", "-subject", "-nameopt", "RFC2253")
	want := strings.TrimPrefix(out, "subject=")
	if got := Describe(c).Subject; got != want {
		t.Errorf("subject\n got %s\nwant %s (openssl)", got, want)
	}
}

func TestShowFormats(t *testing.T) {
	a := mkCert(t, certSpec{cn: "a.example"}, nil)
	b := mkCert(t, certSpec{cn: "b.example"}, nil)
	key, _ := MarshalKeyPEM(a.key)
	twoPEM := append(append(a.pem(), key...), b.pem()...)
	trusted := pem.EncodeToMemory(&pem.Block{Type: "TRUSTED CERTIFICATE", Bytes: append(slices.Clone(a.cert.Raw), 0x30, 0x00)})
	tests := []struct {
		name    string
		data    []byte
		want    []string // subjects
		wantErr string
	}{
		{name: "one PEM", data: a.pem(), want: []string{"CN=a.example"}},
		{name: "PEM bundle with a key in between", data: twoPEM, want: []string{"CN=a.example", "CN=b.example"}},
		{name: "DER", data: a.cert.Raw, want: []string{"CN=a.example"}},
		{name: "OpenSSL trusted certificate", data: trusted, want: []string{"CN=a.example"}},
		{name: "key only", data: key, wantErr: `no "-----BEGIN CERTIFICATE-----" block found`},
		{name: "garbage", data: []byte("hello"), wantErr: "neither PEM nor a DER certificate"},
		{name: "broken PEM certificate", data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), wantErr: "PEM block 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			infos, err := Show(tc.data)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			noErr(t, err)
			var got []string
			for _, i := range infos {
				got = append(got, i.Subject)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
