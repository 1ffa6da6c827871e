// Package mtapolicy decides what the MTA would do with an outbound TLS
// policy answer: given the text tlsgate hands Postfix (a TLS policy table
// entry such as "secure match=mx.example.com ciphers=high") or Sendmail (an
// access-map right-hand side such as "TEMP+VERIFY:128+CN:mx.example.com")
// and what is known about a TLS session with the server, would the MTA
// deliver over it, or keep the mail queued?
//
// It interprets the answer the way the MTA does (Postfix TLS_README "TLS
// policy table" and smtp_tls_policy_maps; Sendmail cf/README "STARTTLS",
// TLS_Srv/TLS_Rcpt); it does not know tlsgate's endpoint model. Facts may
// be partial: a log line shows the trust level but not the certificate's
// names, a probe shows everything. What cannot be decided from the facts
// is [Unknown], with the reason.
package mtapolicy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/maillog"
)

// Outcome is the MTA's decision on one session.
type Outcome int

// Outcomes.
const (
	// Deliver: the session meets the answer.
	Deliver Outcome = iota
	// Hold: the MTA would refuse the session and keep the mail queued.
	Hold
	// Unknown: the facts do not say (for example a name check when only
	// the trust level is known).
	Unknown
)

// String returns "would deliver", "would stay queued" or "unknown".
func (o Outcome) String() string {
	switch o {
	case Deliver:
		return "would deliver"
	case Hold:
		return "would stay queued"
	}
	return "unknown"
}

// Requirement is a parsed answer.
type Requirement struct {
	// Text is the answer as given.
	Text string
	// None: no TLS requirement (not found, "may", "none", "dane"...): the
	// MTA's default applies and never holds mail for TLS.
	None bool
	// Encrypt: TLS required.
	Encrypt bool
	// MinBits is the least cipher strength (Postfix ciphers=high: 128,
	// the mandatory default medium: 112; Sendmail ENCR:/VERIFY: bits).
	MinBits int
	// Verify: the chain must verify against the MTA's CA store (or
	// TAFile).
	Verify bool
	// Names the certificate must carry (Postfix match=, Sendmail CN:);
	// MatchHostname: the host name connected to (Postfix
	// "match=hostname", Sendmail bare CN).
	Names         []string
	MatchHostname bool
	// CNOnly: names are compared with the subject CN only (Sendmail).
	CNOnly bool
	// Fingerprints pin the certificate or its public key (Postfix
	// fingerprint level), upper-case colon hex.
	Fingerprints []string
	// TAFile is Postfix's tafile= (the chain must end in one of its CAs).
	TAFile string
	// SubjectDN and IssuerDN are Sendmail's CS: and CI: (OpenSSL oneline
	// form).
	SubjectDN, IssuerDN string
}

// ParsePostfix reads a Postfix TLS policy table entry ("" = not found).
func ParsePostfix(text string) (Requirement, error) {
	r := Requirement{Text: text}
	f := strings.Fields(text)
	if len(f) == 0 {
		r.None = true
		return r, nil
	}
	switch f[0] {
	case "none", "may", "dane", "opportunistic":
		r.None = true
		return r, nil
	case "encrypt":
		r.Encrypt = true
	case "verify", "secure":
		r.Encrypt, r.Verify = true, true
		if f[0] == "verify" {
			r.MatchHostname = true // Postfix's default match for verify
		}
	case "fingerprint":
		r.Encrypt = true
	case "dane-only":
		return r, fmt.Errorf("mtapolicy: %q: dane-only cannot be judged without DNS", text)
	default:
		return r, fmt.Errorf("mtapolicy: %q: unknown Postfix security level %q", text, f[0])
	}
	r.MinBits = 112 // smtp_tls_mandatory_ciphers = medium
	explicitMatch := false
	for _, a := range f[1:] {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "match":
			explicitMatch = true
			for _, m := range strings.Split(v, ":") {
				if f[0] == "fingerprint" {
					// The value itself contains ':': rebuild it below.
					break
				}
				switch m {
				case "hostname":
					r.MatchHostname = true
				case "", "nexthop", "dot-nexthop":
					// Not emitted by tlsgate; left to the MTA.
				default:
					r.Names = append(r.Names, strings.ToLower(m))
				}
			}
			if f[0] == "fingerprint" {
				r.Fingerprints = append(r.Fingerprints, strings.ToUpper(v))
			}
		case "ciphers":
			switch v {
			case "high":
				r.MinBits = 128
			case "medium":
				r.MinBits = 112
			case "low", "export", "null":
				r.MinBits = 0
			}
		case "tafile":
			r.TAFile = v
		}
	}
	if f[0] == "verify" && explicitMatch && len(r.Names) > 0 {
		r.MatchHostname = false
	}
	return r, nil
}

// ParseSendmail reads a Sendmail TLS_Srv/TLS_Rcpt right-hand side ("" =
// not found), e.g. "TEMP+ENCR:128" or "TEMP+VERIFY:128+CN:mx.example.com".
func ParseSendmail(text string) (Requirement, error) {
	r := Requirement{Text: text, CNOnly: true}
	if strings.TrimSpace(text) == "" {
		r.None = true
		return r, nil
	}
	// REQ[+REQ...][+EXT[++EXT...]]: the extensions (CN, CS:, CI:) are
	// separated by "++"; their xtext values contain '+' only as "+XX"
	// (hex), so "+CN", "+CS" and "+CI" cannot occur inside one.
	head, ext := text, ""
	up := strings.ToUpper(text)
	for _, tag := range []string{"+CN", "+CS:", "+CI:"} {
		if i := strings.Index(up, tag); i >= 0 && i < len(head) {
			head, ext = text[:i], text[i+1:]
			up = strings.ToUpper(head) + up[i:]
		}
	}
	parts := strings.Split(head, "+")
	if ext != "" {
		parts = append(parts, strings.Split(ext, "++")...)
	}
	for _, part := range parts {
		if part == "" {
			continue
		}
		k, v, hasV := strings.Cut(part, ":")
		switch strings.ToUpper(k) {
		case "TEMP", "PERM":
		case "ENCR":
			r.Encrypt = true
			r.MinBits = atoiOr(v, 0)
		case "VERIFY":
			r.Encrypt, r.Verify = true, true
			if hasV {
				r.MinBits = atoiOr(v, 0)
			}
		case "CN":
			r.Encrypt, r.Verify = true, true
			if hasV {
				r.Names = append(r.Names, strings.ToLower(unxtext(v)))
			} else {
				r.MatchHostname = true
			}
		case "CS":
			r.SubjectDN = unxtext(v)
		case "CI":
			r.IssuerDN = unxtext(v)
		default:
			return r, fmt.Errorf("mtapolicy: %q: unknown Sendmail requirement %q", text, part)
		}
	}
	return r, nil
}

func atoiOr(s string, d int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return d
	}
	return n
}

// unxtext decodes Sendmail's xtext (+XX).
func unxtext(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Session is what is known about a TLS session with the server.
type Session struct {
	// TLS is false for a plaintext session (STARTTLS not offered or not
	// used).
	TLS bool
	// Bits is the cipher strength used.
	Bits int
	// Trust is the MTA's view (from its log) or the probe's.
	Trust maillog.Trust
	// Host is the name the client connected to (for match=hostname).
	Host string
	// Chain is the server's certificate chain, leaf first; nil when only
	// log facts are known.
	Chain []*x509.Certificate
	// ChainVerified reports that Chain verifies against our CA store
	// (meaningful only with Chain).
	ChainVerified bool
}

// Judge decides what the MTA would do with s under r, and why.
func (r Requirement) Judge(s Session) (Outcome, string) {
	if r.None {
		return Deliver, "no TLS requirement"
	}
	if !s.TLS {
		return Hold, "TLS is required, but the server did not use it"
	}
	if s.Bits > 0 && s.Bits < r.MinBits {
		return Hold, fmt.Sprintf("cipher strength %d bits, %d required", s.Bits, r.MinBits)
	}
	needCert := r.Verify || len(r.Fingerprints) > 0
	if !needCert {
		return Deliver, "encrypted"
	}
	if s.Chain == nil {
		return r.judgeTrust(s)
	}
	return r.judgeChain(s)
}

// judgeTrust decides from the trust level alone (log facts).
func (r Requirement) judgeTrust(s Session) (Outcome, string) {
	switch s.Trust {
	case maillog.Verified:
		// The MTA ran a name or fingerprint check and it passed.
		return Deliver, "the MTA logged the session as Verified"
	case maillog.Trusted:
		if len(r.Fingerprints) > 0 || len(r.Names) > 0 || r.MatchHostname || r.TAFile != "" || r.SubjectDN != "" || r.IssuerDN != "" {
			return Unknown, "the chain verified, but the log does not show the certificate's names or fingerprints (run tlsgate probe)"
		}
		return Deliver, "the chain verified"
	case maillog.Untrusted:
		if len(r.Fingerprints) > 0 && !r.Verify {
			return Unknown, "untrusted chain; the log does not show the fingerprint (run tlsgate probe)"
		}
		return Hold, "the server certificate did not verify"
	case maillog.Anonymous:
		return Hold, "the server presented no certificate"
	}
	return Unknown, "the log does not show the certificate's state"
}

// judgeChain decides from the certificate chain (probe facts).
func (r Requirement) judgeChain(s Session) (Outcome, string) {
	leaf := s.Chain[0]
	if len(r.Fingerprints) > 0 {
		cert, spki := certs.FingerprintCert(leaf), certs.FingerprintSPKI(leaf)
		for _, fp := range r.Fingerprints {
			if fp == cert || fp == spki {
				return Deliver, "fingerprint matches"
			}
		}
		return Hold, "no pinned fingerprint matches the certificate (" + cert + ")"
	}
	if r.Verify && !s.ChainVerified {
		return Hold, "the server certificate does not verify against our CA store"
	}
	if r.TAFile != "" {
		ok, err := chainsTo(s.Chain, r.TAFile)
		if err != nil {
			return Unknown, err.Error()
		}
		if !ok {
			return Hold, "the chain does not end in a trust anchor of " + r.TAFile
		}
	}
	names := r.Names
	if r.MatchHostname && s.Host != "" {
		names = append(names[:len(names):len(names)], strings.ToLower(s.Host))
	}
	if len(names) > 0 {
		if !r.namesMatch(leaf, names) {
			return Hold, "the certificate names " + certNames(leaf, r.CNOnly) + ", want " + strings.Join(names, " or ")
		}
	}
	if r.SubjectDN != "" && !strings.EqualFold(oneline(leaf.Subject.ToRDNSequence()), r.SubjectDN) {
		return Hold, "subject DN differs"
	}
	if r.IssuerDN != "" && !strings.EqualFold(oneline(leaf.Issuer.ToRDNSequence()), r.IssuerDN) {
		return Hold, "issuer DN differs"
	}
	return Deliver, "the certificate verifies and matches"
}

func (r Requirement) namesMatch(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if r.CNOnly {
			if strings.EqualFold(strings.TrimSuffix(leaf.Subject.CommonName, "."), strings.TrimSuffix(n, ".")) {
				return true
			}
			continue
		}
		// Postfix: a name starting with '.' matches any subdomain.
		if strings.HasPrefix(n, ".") {
			for _, d := range dnsNames(leaf) {
				if strings.HasSuffix(strings.ToLower(d), n) {
					return true
				}
			}
			continue
		}
		if leaf.VerifyHostname(n) == nil {
			return true
		}
	}
	return false
}

// dnsNames are the names OpenSSL's host check uses: the DNS SANs, or the
// CN when there are none.
func dnsNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	if c.Subject.CommonName != "" {
		return []string{c.Subject.CommonName}
	}
	return nil
}

func certNames(c *x509.Certificate, cnOnly bool) string {
	if cnOnly {
		return "CN=" + c.Subject.CommonName
	}
	ns := dnsNames(c)
	if len(ns) == 0 {
		return "no names"
	}
	return strings.Join(ns, ", ")
}

func chainsTo(chain []*x509.Certificate, tafile string) (bool, error) {
	data, err := os.ReadFile(tafile)
	if err != nil {
		return false, fmt.Errorf("trust anchors: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return false, fmt.Errorf("trust anchors: no certificate in %s", tafile)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil, nil
}

var shortNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
	"2.5.4.11": "OU", "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress",
}

// oneline writes a name as OpenSSL's X509_NAME_oneline does, the form
// Sendmail compares CS:/CI: with: "/C=DE/O=Lab Test/CN=Lab Test CA".
func oneline(rdns pkix.RDNSequence) string {
	var b strings.Builder
	for _, rdn := range rdns {
		for _, atv := range rdn {
			k := shortNames[atv.Type.String()]
			if k == "" {
				k = oidString(atv.Type)
			}
			b.WriteString("/" + k + "=" + fmt.Sprint(atv.Value))
		}
	}
	return b.String()
}

func oidString(o asn1.ObjectIdentifier) string { return o.String() }
