package certid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNamesMatchOpenSSL: a name with every attribute type of the table is
// printed as OpenSSL prints it: OpenSSL form as X509_NAME_oneline (what
// Sendmail reports in {cert_subject}, "openssl x509 -nameopt compat") and
// RFC4514 as "openssl x509 -nameopt RFC2253".
func TestNamesMatchOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not found")
		}
		t.Skip("openssl not found")
	}
	var extra []pkix.AttributeTypeAndValue
	for i, at := range attrTypes {
		var oid asn1.ObjectIdentifier
		for _, f := range strings.Split(at.oid, ".") {
			n := 0
			for _, c := range f {
				n = n*10 + int(c-'0')
			}
			oid = append(oid, n)
		}
		v := any("v" + at.name)
		switch at.name {
		case "C":
			v = "DE"
		case "emailAddress", "DC":
			v = asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte("v" + string(rune('a'+i)))}
		}
		extra = append(extra, pkix.AttributeTypeAndValue{Type: oid, Value: v})
	}
	extra = append(extra, pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: "private"})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{ExtraNames: extra},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "c.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	subject := func(nameopt string) string {
		out, err := exec.Command(openssl, "x509", "-in", path, "-noout", "-subject", "-nameopt", nameopt).Output()
		if err != nil {
			t.Fatalf("openssl x509 -nameopt %s: %v", nameopt, err)
		}
		return strings.TrimPrefix(strings.TrimSpace(string(out)), "subject=")
	}
	if got, want := DNFromPKIX(c.Subject).OpenSSL(), subject("compat"); got != want {
		t.Errorf("OpenSSL()\n got %s\nwant %s (openssl -nameopt compat)", got, want)
	}
	if got, want := RFC4514(c.RawSubject), subject("RFC2253"); got != want {
		t.Errorf("RFC4514\n got %s\nwant %s (openssl -nameopt RFC2253)", got, want)
	}
}
