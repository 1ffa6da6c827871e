package certs

import (
	"crypto/x509"
	"fmt"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// FingerprintCert returns the SHA-256 digest of the certificate's DER
// encoding in Postfix's form: upper-case hex bytes separated by colons
// ("AB:CD:..."), as logged by Postfix and matched by
// smtp_tls_fingerprint_cert_match, "match=" in smtp_tls_policy_maps and
// check_ccert_access. It equals the output of
// "openssl x509 -noout -fingerprint -sha256" after "sha256 Fingerprint=".
func FingerprintCert(c *x509.Certificate) string { return certid.SHA256(c.Raw).String() }

// FingerprintSPKI returns the SHA-256 digest of the certificate's DER
// SubjectPublicKeyInfo in Postfix's colon-hex form: Postfix's
// "pubkey_fingerprint", which stays the same when a certificate is renewed
// with the same key.
func FingerprintSPKI(c *x509.Certificate) string {
	return certid.SHA256(c.RawSubjectPublicKeyInfo).String()
}

// ParseFingerprint decodes a SHA-256 certificate fingerprint as admins
// paste it, with the one parser the policy file uses
// ([certid.ParseFingerprintKind]; [certid.FingerprintForms] lists the
// forms): hex in any case, with a colon between every pair of digits or
// none, optionally after "sha256:" or OpenSSL's "sha256 Fingerprint=" /
// "SHA256 Fingerprint=". Surrounding white space is ignored. A public-key
// pin ("sha256//BASE64") is refused: it cannot name a certificate. It
// returns the 32 digest bytes.
func ParseFingerprint(s string) ([]byte, error) {
	f, kind, err := certid.ParseFingerprintKind(s)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if kind == certid.PinPublicKey {
		return nil, fmt.Errorf("certs: %q is a public-key pin (the digest of a public key, not of a certificate); give the certificate's SHA-256 fingerprint as \"tlsgate certs show\" prints it", s)
	}
	return f[:], nil
}
