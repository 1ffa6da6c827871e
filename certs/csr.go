package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// oidEmailAddress is PKCS#9 emailAddress, which pkix.Name has no field for.
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// Subject holds the distinguished name fields CAs ask for in a certificate
// signing request. Empty fields are left out.
type Subject struct {
	C     string // country, two-letter ISO 3166 code ("DE")
	ST    string // state or province, spelled out ("Bayern")
	L     string // locality, city ("München")
	O     string // organization ("Example GmbH")
	OU    string // organizational unit ("IT"); deprecated by public CAs, still asked for by some
	CN    string // common name, normally the MTA's host name ("mx.example.net")
	Email string // contact address (PKCS#9 emailAddress attribute)
}

func (s Subject) validate() error {
	if s.C != "" {
		if len(s.C) != 2 || !isAlpha(s.C) {
			return fmt.Errorf("certs: country must be a two-letter ISO 3166 code such as DE or US, not %q", s.C)
		}
	}
	if s.Email != "" && (!strings.Contains(s.Email, "@") || strings.ContainsAny(s.Email, " <>")) {
		return fmt.Errorf("certs: email %q is not a plain address like postmaster@example.net", s.Email)
	}
	for _, f := range []struct{ name, v string }{{"state", s.ST}, {"locality", s.L}, {"organization", s.O}, {"organizational unit", s.OU}, {"common name", s.CN}} {
		if len(f.v) > 64 {
			return fmt.Errorf("certs: %s is %d characters long; X.509 allows at most 64", f.name, len(f.v))
		}
	}
	if s == (Subject{}) {
		return errors.New("certs: the subject is empty; give at least the common name (the MTA's host name)")
	}
	return nil
}

func isAlpha(s string) bool {
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return true
}

func (s Subject) pkixName() pkix.Name {
	var n pkix.Name
	add := func(dst *[]string, v string) {
		if v != "" {
			*dst = append(*dst, v)
		}
	}
	add(&n.Country, strings.ToUpper(s.C))
	add(&n.Province, s.ST)
	add(&n.Locality, s.L)
	add(&n.Organization, s.O)
	add(&n.OrganizationalUnit, s.OU)
	n.CommonName = s.CN
	if s.Email != "" {
		// PKCS#9 requires IA5String; Go would pick UTF8String for a plain
		// string value.
		n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{
			Type:  oidEmailAddress,
			Value: asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte(s.Email)},
		})
	}
	return n
}

// ParseSubject reads an OpenSSL "-subj" style subject such as
// "/C=DE/ST=Bayern/O=Example GmbH/CN=mx.example.net" (a backslash escapes
// "/"). Recognised keys: C, ST, L, O, OU, CN, emailAddress (or E, email),
// case-insensitive.
func ParseSubject(s string) (Subject, error) {
	var subj Subject
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "/") {
		return subj, fmt.Errorf("certs: subject %q must look like /C=DE/O=Example/CN=mx.example.net", s)
	}
	var parts []string
	var cur strings.Builder
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == '/':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	parts = append(parts, cur.String())
	for _, p := range parts {
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return subj, fmt.Errorf("certs: subject part %q has no \"=\"", p)
		}
		var dst *string
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "c":
			dst = &subj.C
		case "st":
			dst = &subj.ST
		case "l":
			dst = &subj.L
		case "o":
			dst = &subj.O
		case "ou":
			dst = &subj.OU
		case "cn":
			dst = &subj.CN
		case "emailaddress", "email", "e":
			dst = &subj.Email
		default:
			return subj, fmt.Errorf("certs: subject field %q is not supported; use C, ST, L, O, OU, CN or emailAddress", k)
		}
		if *dst != "" {
			return subj, fmt.Errorf("certs: subject field %s given twice", k)
		}
		*dst = v
	}
	return subj, nil
}

// IsHostname reports whether s looks like a fully qualified DNS host name
// (at least two labels of letters, digits and hyphens), optionally with a
// left-most "*." wildcard.
func IsHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	s = strings.TrimPrefix(s, "*.")
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// NewCSR creates a PKCS#10 certificate signing request (RFC 2986) for key,
// signed with SHA-256, and returns it as "CERTIFICATE REQUEST" PEM. dnsSANs
// become subjectAltName DNS names; the CN is added first if it looks like a
// host name (CAs ignore the CN and clients check only the alternative
// names). Names are de-duplicated case-insensitively; a name that is not a
// host name is refused.
func NewCSR(key crypto.Signer, subj Subject, dnsSANs []string) ([]byte, error) {
	if err := subj.validate(); err != nil {
		return nil, err
	}
	var names []string
	seen := map[string]bool{}
	addName := func(n string) {
		n = strings.TrimSuffix(strings.TrimSpace(n), ".")
		if k := strings.ToLower(n); !seen[k] {
			seen[k] = true
			names = append(names, n)
		}
	}
	if IsHostname(subj.CN) {
		addName(subj.CN)
	}
	for _, n := range dnsSANs {
		if !IsHostname(strings.TrimSpace(n)) {
			return nil, fmt.Errorf("certs: %q is not a host name (like mx.example.net); only host names can be DNS alternative names", n)
		}
		addName(n)
	}
	tmpl := &x509.CertificateRequest{
		Subject:  subj.pkixName(),
		DNSNames: names,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CSRSummary is what the admin should check before sending a CSR to a CA.
type CSRSummary struct {
	Subject  string   // RFC 4514 subject DN
	DNSNames []string // subjectAltName DNS names
	Key      string   // public key, see [DescribeKey]
	SHA256   string   // SHA-256 of the CSR's DER encoding, colon-hex
}

// SummarizeCSR parses a CSR (PEM "CERTIFICATE REQUEST" or DER), checks its
// signature and summarizes it.
func SummarizeCSR(data []byte) (CSRSummary, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return CSRSummary{}, fmt.Errorf("certs: PEM block is %q, not a CERTIFICATE REQUEST", block.Type)
		}
		der = block.Bytes
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return CSRSummary{}, fmt.Errorf("certs: parse CSR: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return CSRSummary{}, fmt.Errorf("certs: CSR signature is invalid: %w", err)
	}
	sum := sha256.Sum256(req.Raw)
	return CSRSummary{
		Subject:  certid.RFC4514(req.RawSubject),
		DNSNames: req.DNSNames,
		Key:      DescribeKey(req.PublicKey),
		SHA256:   certid.ColonHex(sum[:]),
	}, nil
}

// String renders the summary as labelled lines, its names made safe for a
// terminal (certid.Printable).
func (s CSRSummary) String() string {
	return fmt.Sprintf("subject:    %s\nDNS names:  %s\nkey:        %s\nSHA-256:    %s\n",
		certid.Printable(s.Subject), listOrNone(s.DNSNames), s.Key, s.SHA256)
}
