package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// FingerprintCert returns the SHA-256 digest of the certificate's DER
// encoding in Postfix's form: upper-case hex bytes separated by colons
// ("AB:CD:..."), as logged by Postfix and matched by
// smtp_tls_fingerprint_cert_match, "match=" in smtp_tls_policy_maps and
// check_ccert_access. It equals the output of
// "openssl x509 -noout -fingerprint -sha256" after "sha256 Fingerprint=".
func FingerprintCert(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return FormatFingerprint(sum[:])
}

// FingerprintSPKI returns the SHA-256 digest of the certificate's DER
// SubjectPublicKeyInfo in Postfix's colon-hex form: Postfix's
// "pubkey_fingerprint", which stays the same when a certificate is renewed
// with the same key.
func FingerprintSPKI(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return FormatFingerprint(sum[:])
}

// FormatFingerprint writes a digest as upper-case hex bytes separated by
// colons.
func FormatFingerprint(digest []byte) string {
	var b strings.Builder
	b.Grow(len(digest) * 3)
	const hexdigits = "0123456789ABCDEF"
	for i, c := range digest {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteByte(hexdigits[c>>4])
		b.WriteByte(hexdigits[c&0xf])
	}
	return b.String()
}

// ParseFingerprint decodes a SHA-256 fingerprint as admins paste it: any
// case, with or without colons between the bytes (if colons are used, they
// must separate every byte), optionally prefixed with "sha256:",
// "sha256//" or OpenSSL's "sha256 Fingerprint=" / "SHA256 Fingerprint=".
// Surrounding white space is ignored. It returns the 32 digest bytes.
func ParseFingerprint(s string) ([]byte, error) {
	orig := s
	s = strings.TrimSpace(s)
	lower := strings.ToLower(s)
	for _, p := range []string{"sha256 fingerprint=", "sha256:", "sha256//", "sha256="} {
		if strings.HasPrefix(lower, p) {
			s = strings.TrimSpace(s[len(p):])
			break
		}
	}
	if s == "" {
		return nil, fmt.Errorf("certs: empty fingerprint %q", orig)
	}
	hexs := s
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return nil, fmt.Errorf("certs: fingerprint %q: colons must separate pairs of hex digits (AB:CD:...)", orig)
			}
		}
		hexs = strings.Join(parts, "")
	}
	b, err := hex.DecodeString(hexs)
	if err != nil {
		return nil, fmt.Errorf("certs: fingerprint %q is not hexadecimal", orig)
	}
	switch len(b) {
	case sha256.Size:
		return b, nil
	case 16:
		return nil, fmt.Errorf("certs: fingerprint %q has 16 bytes, an MD5 digest; tlsgate uses SHA-256 (32 bytes) as Postfix does with smtp_tls_fingerprint_digest = sha256: recompute it with \"openssl x509 -noout -fingerprint -sha256 -in CERT\"", orig)
	case 20:
		return nil, fmt.Errorf("certs: fingerprint %q has 20 bytes, a SHA-1 digest; tlsgate uses SHA-256 (32 bytes) as Postfix does with smtp_tls_fingerprint_digest = sha256: recompute it with \"openssl x509 -noout -fingerprint -sha256 -in CERT\"", orig)
	default:
		return nil, fmt.Errorf("certs: fingerprint %q has %d bytes, want 32 (SHA-256)", orig, len(b))
	}
}
