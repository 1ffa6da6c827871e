package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/certid"
)

func TestNewCSR(t *testing.T) {
	key, err := GenerateKey("p256")
	noErr(t, err)
	tests := []struct {
		name      string
		subj      Subject
		sans      []string
		wantDN    string
		wantNames []string
		wantErr   string
	}{
		{
			name:      "full subject, CN added as SAN first",
			subj:      Subject{C: "DE", ST: "Bayern", L: "München", O: "Example GmbH", OU: "IT", CN: "mx.example.net", Email: "postmaster@example.net"},
			sans:      []string{"mail.example.net"},
			wantDN:    "emailAddress=postmaster@example.net,CN=mx.example.net,OU=IT,O=Example GmbH,L=München,ST=Bayern,C=DE",
			wantNames: []string{"mx.example.net", "mail.example.net"},
		},
		{
			name:      "duplicates removed case-insensitively",
			subj:      Subject{CN: "mx.example.net"},
			sans:      []string{"MX.example.net", "mx.example.net.", " mail.example.net "},
			wantDN:    "CN=mx.example.net",
			wantNames: []string{"mx.example.net", "mail.example.net"},
		},
		{
			name:      "CN that is no host name stays out of the SANs",
			subj:      Subject{CN: "Example Mail Gateway", O: "Example"},
			sans:      []string{"mx.example.net"},
			wantDN:    "CN=Example Mail Gateway,O=Example",
			wantNames: []string{"mx.example.net"},
		},
		{
			name:      "wildcard",
			subj:      Subject{CN: "*.mail.example.net"},
			wantDN:    "CN=*.mail.example.net",
			wantNames: []string{"*.mail.example.net"},
		},
		{
			name:      "lower-case country is upper-cased",
			subj:      Subject{C: "de", CN: "mx.example.net"},
			wantDN:    "CN=mx.example.net,C=DE",
			wantNames: []string{"mx.example.net"},
		},
		{name: "country spelled out", subj: Subject{C: "Germany", CN: "mx.example.net"}, wantErr: "two-letter ISO 3166 code"},
		{name: "bad SAN", subj: Subject{CN: "mx.example.net"}, sans: []string{"not a host"}, wantErr: `"not a host" is not a host name`},
		{name: "single label SAN", subj: Subject{CN: "mx.example.net"}, sans: []string{"localhost"}, wantErr: "is not a host name"},
		{name: "bad email", subj: Subject{CN: "mx.example.net", Email: "postmaster"}, wantErr: "is not a plain address"},
		{name: "empty subject", wantErr: "subject is empty"},
		{name: "CN too long", subj: Subject{CN: strings.Repeat("a", 65)}, wantErr: "at most 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := NewCSR(key, tc.subj, tc.sans)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			noErr(t, err)
			block, _ := pem.Decode(out)
			if block == nil || block.Type != "CERTIFICATE REQUEST" {
				t.Fatalf("not a CSR PEM: %s", out)
			}
			req, err := x509.ParseCertificateRequest(block.Bytes)
			noErr(t, err)
			noErr(t, req.CheckSignature())
			if req.SignatureAlgorithm != x509.ECDSAWithSHA256 {
				t.Errorf("signature algorithm %v", req.SignatureAlgorithm)
			}
			sum, err := SummarizeCSR(out)
			noErr(t, err)
			if sum.Subject != tc.wantDN {
				t.Errorf("subject\n got %s\nwant %s", sum.Subject, tc.wantDN)
			}
			if !slices.Equal(sum.DNSNames, tc.wantNames) {
				t.Errorf("names %v, want %v", sum.DNSNames, tc.wantNames)
			}
			h := sha256.Sum256(block.Bytes)
			if sum.SHA256 != certid.ColonHex(h[:]) {
				t.Errorf("SHA-256 %s is not the digest of the DER", sum.SHA256)
			}
			if sum.Key != "ECDSA P-256" {
				t.Errorf("key %q", sum.Key)
			}
			for _, want := range []string{"subject:", "DNS names:", "SHA-256:", sum.SHA256} {
				if !strings.Contains(sum.String(), want) {
					t.Errorf("summary lacks %q:\n%s", want, sum)
				}
			}
		})
	}
}

// The emailAddress attribute must be an IA5String (PKCS#9); some CAs
// reject the UTF8String Go would otherwise write.
// rawRDNSET keeps attribute values raw; the "SET" suffix makes
// encoding/asn1 expect an ASN.1 SET.
type rawRDNSET []struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

func TestNewCSREmailIsIA5String(t *testing.T) {
	key, _ := GenerateKey("p256")
	out, err := NewCSR(key, Subject{CN: "mx.example.net", Email: "postmaster@example.net"}, nil)
	noErr(t, err)
	block, _ := pem.Decode(out)
	req, _ := x509.ParseCertificateRequest(block.Bytes)
	var rdns []rawRDNSET
	_, err = asn1.Unmarshal(req.RawSubject, &rdns)
	noErr(t, err)
	found := false
	for _, rdn := range rdns {
		for _, atv := range rdn {
			if atv.Type.Equal(oidEmailAddress) {
				found = true
				if atv.Value.Tag != asn1.TagIA5String {
					t.Errorf("emailAddress has tag %d, want IA5String", atv.Value.Tag)
				}
			}
		}
	}
	if !found {
		t.Error("no emailAddress in subject")
	}
}

// OpenSSL must accept the CSR and print the same subject.
func TestNewCSROpenSSL(t *testing.T) {
	needOpenSSL(t)
	key, _ := GenerateKey("rsa2048")
	out, err := NewCSR(key, Subject{C: "DE", O: "Example GmbH", CN: "mx.example.net", Email: "postmaster@example.net"}, []string{"mail.example.net"})
	noErr(t, err)
	p := writeFile(t, t.TempDir(), "mx.csr", out, 0o644)
	got := openssl(t, nil, "req", "-in", p, "-noout", "-verify", "-subject", "-nameopt", "RFC2253")
	sum, _ := SummarizeCSR(out)
	if !strings.Contains(got, "subject="+sum.Subject) {
		t.Errorf("openssl says %q, we say %q", got, sum.Subject)
	}
	text := openssl(t, nil, "req", "-in", p, "-noout", "-text")
	if !strings.Contains(text, "DNS:mx.example.net, DNS:mail.example.net") {
		t.Errorf("SANs missing from openssl output:\n%s", text)
	}
}

func TestSummarizeCSRErrors(t *testing.T) {
	c := mkCert(t, certSpec{cn: "x"}, nil)
	_, err := SummarizeCSR(c.pem())
	wantErr(t, err, "not a CERTIFICATE REQUEST")
	_, err = SummarizeCSR([]byte("junk"))
	wantErr(t, err, "parse CSR")
	// A CSR whose signature was tampered with.
	key, _ := GenerateKey("p256")
	out, _ := NewCSR(key, Subject{CN: "mx.example.net"}, nil)
	block, _ := pem.Decode(out)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	_, err = SummarizeCSR(block.Bytes)
	if err == nil {
		t.Error("tampered CSR accepted")
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		in      string
		want    Subject
		wantErr string
	}{
		{in: "/C=DE/ST=Bayern/L=München/O=Example GmbH/OU=IT/CN=mx.example.net/emailAddress=pm@example.net",
			want: Subject{C: "DE", ST: "Bayern", L: "München", O: "Example GmbH", OU: "IT", CN: "mx.example.net", Email: "pm@example.net"}},
		{in: "/CN=mx.example.net", want: Subject{CN: "mx.example.net"}},
		{in: `/O=A\/B Corp/cn=x.example`, want: Subject{O: "A/B Corp", CN: "x.example"}},
		{in: "/E=a@b.example/", want: Subject{Email: "a@b.example"}},
		{in: "CN=x", wantErr: "must look like"},
		{in: "/CN", wantErr: `has no "="`},
		{in: "/DC=example", wantErr: "not supported"},
		{in: "/CN=a/CN=b", wantErr: "given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSubject(tc.in)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			noErr(t, err)
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestIsHostname(t *testing.T) {
	tests := map[string]bool{
		"mx.example.net":                     true,
		"MX1.Example.NET.":                   true,
		"*.example.net":                      true,
		"xn--bcher-kva.example":              true,
		"a-b.c":                              true,
		"localhost":                          false,
		"":                                   false,
		"mx..example.net":                    false,
		"-mx.example.net":                    false,
		"mx-.example.net":                    false,
		"mx.exa mple.net":                    false,
		"mx_1.example.net":                   false,
		"*.*.example.net":                    false,
		"Example Mail":                       false,
		"192.0.2.1":                          true, // syntactically labels; IPs are not CN-derived in practice
		strings.Repeat("a", 64) + ".example": false,
	}
	for in, want := range tests {
		if got := IsHostname(in); got != want {
			t.Errorf("IsHostname(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestCSRFileNotOverwritten(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "mx.csr")
	noErr(t, os.WriteFile(p, []byte("old"), 0o644))
	wantErr(t, writeFileAtomic(p, []byte("new"), 0o644, false), "already exists")
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Error("overwritten")
	}
}
