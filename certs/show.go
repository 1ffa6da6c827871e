package certs

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// CertInfo is what an admin needs to know about one certificate, as printed
// by "tlsgate certs show".
type CertInfo struct {
	Subject        string    // RFC 4514 subject DN, e.g. "CN=mx.example.net,O=Example"
	Issuer         string    // RFC 4514 issuer DN
	Serial         string    // serial number, colon-hex like OpenSSL prints it
	NotBefore      time.Time // start of validity (UTC)
	NotAfter       time.Time // end of validity (UTC)
	KeyAlgorithm   string    // "RSA", "ECDSA P-256", "ECDSA P-384", "Ed25519"
	KeyBits        int       // key size in bits (RSA modulus, curve size)
	DNSNames       []string  // subjectAltName dNSName entries
	IPAddresses    []string  // subjectAltName iPAddress entries
	EmailAddresses []string  // subjectAltName rfc822Name entries
	IsCA           bool      // basicConstraints CA:TRUE
	SelfSigned     bool      // subject equals issuer and the signature verifies with its own key
	Purposes       []string  // extended key usages in words; nil if unrestricted
	SHA256         string    // [FingerprintCert]
	SPKISHA256     string    // [FingerprintSPKI]
}

// Describe extracts a [CertInfo] from a certificate.
func Describe(c *x509.Certificate) CertInfo {
	alg, bits := keyAlgorithm(c.PublicKey)
	info := CertInfo{
		Subject:        certid.RFC4514(c.RawSubject),
		Issuer:         certid.RFC4514(c.RawIssuer),
		Serial:         formatSerial(c),
		NotBefore:      c.NotBefore.UTC(),
		NotAfter:       c.NotAfter.UTC(),
		KeyAlgorithm:   alg,
		KeyBits:        bits,
		DNSNames:       c.DNSNames,
		EmailAddresses: c.EmailAddresses,
		IsCA:           c.BasicConstraintsValid && c.IsCA,
		SelfSigned:     isSelfSigned(c),
		Purposes:       purposes(c),
		SHA256:         FingerprintCert(c),
		SPKISHA256:     FingerprintSPKI(c),
	}
	for _, ip := range c.IPAddresses {
		info.IPAddresses = append(info.IPAddresses, ip.String())
	}
	return info
}

// formatSerial prints the serial number as colon-hex, as OpenSSL does.
func formatSerial(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return "(none)"
	}
	b := c.SerialNumber.Bytes()
	if len(b) == 0 {
		b = []byte{0}
	}
	if c.SerialNumber.Sign() < 0 {
		return "-" + certid.ColonHex(b)
	}
	return certid.ColonHex(b)
}

func isSelfSigned(c *x509.Certificate) bool {
	// CheckSignatureFrom would insist on CA:TRUE; a self-signed server
	// certificate is still self-signed.
	return string(c.RawSubject) == string(c.RawIssuer) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// purposes names the certificate's extended key usages; nil means the
// certificate has no EKU extension and may be used for anything.
func purposes(c *x509.Certificate) []string {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return nil
	}
	var out []string
	for _, u := range c.ExtKeyUsage {
		out = append(out, ekuName(u))
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	return out
}

func ekuName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageAny:
		return "any"
	case x509.ExtKeyUsageServerAuth:
		return "TLS server"
	case x509.ExtKeyUsageClientAuth:
		return "TLS client"
	case x509.ExtKeyUsageEmailProtection:
		return "S/MIME"
	case x509.ExtKeyUsageCodeSigning:
		return "code signing"
	case x509.ExtKeyUsageTimeStamping:
		return "time stamping"
	case x509.ExtKeyUsageOCSPSigning:
		return "OCSP signing"
	default:
		return fmt.Sprintf("EKU %d", u)
	}
}

// Show parses PEM or DER data (see [ParseCertificates]) and describes every
// certificate in it, in file order.
func Show(data []byte) ([]CertInfo, error) {
	cs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	out := make([]CertInfo, len(cs))
	for i, c := range cs {
		out[i] = Describe(c)
	}
	return out, nil
}

// Format renders the description as aligned "label: value" lines, each
// prefixed with indent; now is used to say how long the certificate remains
// valid. Names from the certificate are made safe for a terminal
// (certid.Printable).
func (i CertInfo) Format(indent string, now time.Time) string {
	var b strings.Builder
	line := func(label, value string) {
		fmt.Fprintf(&b, "%s%-19s %s\n", indent, label+":", value)
	}
	line("subject", certid.Printable(i.Subject))
	line("issuer", certid.Printable(i.Issuer))
	line("serial", i.Serial)
	line("valid from", i.NotBefore.Format(timeLayout)+notYet(i.NotBefore, now))
	line("valid until", i.NotAfter.Format(timeLayout)+remaining(i.NotAfter, now))
	key := i.KeyAlgorithm
	if strings.HasPrefix(key, "RSA") {
		key = fmt.Sprintf("RSA %d bits", i.KeyBits)
	}
	line("key", key)
	line("DNS names", listOrNone(i.DNSNames))
	if len(i.IPAddresses) > 0 {
		line("IP addresses", listOrNone(i.IPAddresses))
	}
	if len(i.EmailAddresses) > 0 {
		line("email addresses", listOrNone(i.EmailAddresses))
	}
	ca := "no"
	if i.IsCA {
		ca = "yes"
	}
	if i.SelfSigned {
		ca += " (self-signed)"
	}
	line("CA", ca)
	if i.Purposes == nil {
		line("purposes", "any (no extended key usage)")
	} else {
		line("purposes", listOrNone(i.Purposes))
	}
	line("SHA-256 cert", i.SHA256)
	line("SHA-256 public key", i.SPKISHA256)
	return b.String()
}

const timeLayout = "2006-01-02 15:04:05 MST"

// listOrNone joins names taken from a certificate for printing, each made
// safe for a terminal (certid.Printable).
func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = certid.Printable(v)
	}
	return strings.Join(out, ", ")
}

func notYet(t, now time.Time) string {
	if now.Before(t) {
		return " (NOT YET VALID, starts in " + humanDuration(t.Sub(now)) + ")"
	}
	return ""
}

func remaining(t, now time.Time) string {
	if !now.Before(t) {
		return " (EXPIRED " + humanDuration(now.Sub(t)) + " ago)"
	}
	return " (" + humanDuration(t.Sub(now)) + " left)"
}

// humanDuration rounds d to days, or hours under two days.
func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d/time.Hour))
	default:
		return fmt.Sprintf("%d minutes", int(d/time.Minute))
	}
}
