package certid

import (
	"crypto/x509/pkix"
	"strings"
	"testing"
)

func TestParseDN(t *testing.T) {
	tests := []struct {
		in, openssl string
	}{
		{"C=US, O=Company B, CN=mx1.company-b.example", "/C=US/O=Company B/CN=mx1.company-b.example"},
		{"CN=mx1.company-b.example, O=Company B, C=US", "/C=US/O=Company B/CN=mx1.company-b.example"},
		{"/C=US/O=Company B/CN=mx1.company-b.example", "/C=US/O=Company B/CN=mx1.company-b.example"},
		{"E=pm@b.example, CN=x, O=B, C=DE", "/C=DE/O=B/CN=x/emailAddress=pm@b.example"},
		{"/C=DE/emailAddress=pm@b.example", "/C=DE/emailAddress=pm@b.example"},
		{`CN=Smith\, John, O="Acme, Inc.", C=US`, "/C=US/O=Acme, Inc./CN=Smith, John"},
		{`CN=a\2Bb, C=US`, "/C=US/CN=a+b"},
		{"/C=DE/O=Lab/Test/CN=x", "/C=DE/O=Lab/Test/CN=x"}, // a slash inside a value
		{"/C=DE/CN=caf\\xC3\\xA9", "/C=DE/CN=caf\\xC3\\xA9"},
		{"organizationName=A, countryName=DE", "/C=DE/O=A"},
		{"OID.2.5.4.3=x, C=DE", "/C=DE/CN=x"},
		{"ST=Bayern, L=München, O=A", "/ST=Bayern/L=M\\xC3\\xBCnchen/O=A"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			d, err := ParseDN(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.OpenSSL(); got != tc.openssl {
				t.Errorf("OpenSSL() = %q, want %q", got, tc.openssl)
			}
			back, err := ParseDN(d.OpenSSL())
			if err != nil || !back.Equal(d) {
				t.Errorf("round trip via OpenSSL form: %v %v", back, err)
			}
			back, err = ParseDN(d.String())
			if err != nil || !back.Equal(d) {
				t.Errorf("round trip via String %q: %v %v", d.String(), back, err)
			}
		})
	}
}

func TestDNEqual(t *testing.T) {
	eq := [][2]string{
		{"C=US, O=Company B, CN=mx1", "/C=US/O=Company B/CN=mx1"},
		{"CN=mx1, O=Company B, C=US", "c=us,o=company   b,cn=MX1"},
		{"E=a@b, CN=x", "emailAddress=a@b, CN=x"},
		{"S=Bayern, CN=x", "ST=bayern, CN=x"},
	}
	for _, p := range eq {
		a, _ := ParseDN(p[0])
		b, _ := ParseDN(p[1])
		if !a.Equal(b) {
			t.Errorf("%q != %q", p[0], p[1])
		}
	}
	ne := [][2]string{
		{"C=US, O=Company B, CN=mx1", "C=US, O=Company C, CN=mx1"},
		{"C=US, CN=mx1", "C=US, O=B, CN=mx1"},
		{"CN=a, OU=x", "CN=a, O=x"},
	}
	for _, p := range ne {
		a, _ := ParseDN(p[0])
		b, _ := ParseDN(p[1])
		if a.Equal(b) {
			t.Errorf("%q == %q", p[0], p[1])
		}
	}
}

func TestParseDNErrors(t *testing.T) {
	for _, s := range []string{"", "CN", "XX=1", "CN=a, foo", `CN="a`, `CN=a\`, "/", "C=DE,", "/CN"} {
		if _, err := ParseDN(s); err == nil {
			t.Errorf("ParseDN(%q): no error", s)
		}
	}
}

func TestDNFromPKIX(t *testing.T) {
	n := pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: "client.lab.test"}
	if got := DNFromPKIX(n).OpenSSL(); got != "/C=DE/O=Lab Test/CN=client.lab.test" {
		t.Errorf("got %q", got)
	}
	if cn := DNFromPKIX(n).CN(); cn != "client.lab.test" {
		t.Errorf("CN = %q", cn)
	}
}

func TestFingerprint(t *testing.T) {
	want := "00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F"
	for _, in := range []string{want, "sha256:" + want, "SHA256:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", " 000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F "} {
		f, err := ParseFingerprint(in)
		if err != nil || f.String() != want {
			t.Errorf("ParseFingerprint(%q) = %v, %v", in, f, err)
		}
	}
	for _, in := range []string{"", "zz", "md5:00", "00:01", "sha256:xyz"} {
		if _, err := ParseFingerprint(in); err == nil {
			t.Errorf("ParseFingerprint(%q): no error", in)
		}
	}
}

// FuzzParseDN checks that a parsed DN survives a round trip through both
// of its printed forms.
func FuzzParseDN(f *testing.F) {
	for _, s := range []string{"C=US, O=Company B, CN=mx1", "/C=DE/O=Lab+20Test/CN=x", `CN=a\,b, O="q,r"`, "E=a@b, CN=x", "/CN=caf\\xC3\\xA9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDN(s)
		if err != nil {
			return
		}
		if len(d) == 0 {
			t.Fatalf("ParseDN(%q) returned an empty DN", s)
		}
		if strings.HasPrefix(s, "/") {
			return // the one-line form is ambiguous for values holding "/TYPE="
		}
		back, err := ParseDN(d.String())
		if err != nil {
			t.Fatalf("ParseDN(String()=%q): %v", d.String(), err)
		}
		if !back.Equal(d) {
			t.Fatalf("round trip %q -> %q -> %v", s, d.String(), back)
		}
	})
}

func TestColonHex(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, ""},
		{[]byte{0xab}, "AB"},
		{[]byte{0x00, 0x0f, 0xf0, 0xff}, "00:0F:F0:FF"},
	}
	for _, tc := range tests {
		if got := ColonHex(tc.in); got != tc.want {
			t.Errorf("ColonHex(%x) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEscapeValue(t *testing.T) {
	tests := map[string]string{
		"plain":   "plain",
		"a,b":     `a\,b`,
		"a+b=c":   `a\+b=c`,
		`q"<>;\`:  `q\"\<\>\;\\`,
		" lead":   `\ lead`,
		"trail ":  `trail\ `,
		"#hash":   `\#hash`,
		"in#side": "in#side",
		"nul\x00": `nul\00`,
		"Müller":  "Müller",
	}
	for in, want := range tests {
		if got := escapeValue(in); got != want {
			t.Errorf("escapeValue(%q) = %q, want %q", in, got, want)
		}
	}
}
