package certid

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Fingerprint is a SHA-256 digest of a certificate (DER) or of its public
// key (SubjectPublicKeyInfo DER). Postfix accepts either kind wherever a
// fingerprint is expected.
type Fingerprint [32]byte

// SHA256 returns the fingerprint of der: a certificate's DER encoding
// (Postfix's "cert_fingerprint", what "openssl x509 -fingerprint -sha256"
// prints) or its SubjectPublicKeyInfo (Postfix's "pubkey_fingerprint",
// which survives a renewal that keeps the key).
func SHA256(der []byte) Fingerprint { return sha256.Sum256(der) }

// PinKind says what a fingerprint was computed over, as far as the form
// it was written in tells.
type PinKind int

const (
	// PinCertOrKey is a hex digest: Postfix logs and matches both the
	// certificate's and the public key's digest in this form, so it may
	// be either.
	PinCertOrKey PinKind = iota
	// PinPublicKey is a "sha256//BASE64" pin (HPKP, curl --pinnedpubkey):
	// always the digest of the SubjectPublicKeyInfo, never of the
	// certificate.
	PinPublicKey
)

// String names the kind for messages.
func (k PinKind) String() string {
	if k == PinPublicKey {
		return "public-key pin"
	}
	return "certificate or public-key fingerprint"
}

// FingerprintForms lists the forms ParseFingerprint accepts; errors end
// with it.
const FingerprintForms = `accepted forms: 64 hex digits with or without colons ("AB:CD:..." as Postfix logs and "tlsgate certs show" print it), ` +
	`optionally after "sha256:" or OpenSSL's "SHA256 Fingerprint=" (openssl x509 -noout -fingerprint -sha256), ` +
	`or a public-key pin "sha256//" + base64 (as curl --pinnedpubkey takes it)`

// ParseFingerprint reads a SHA-256 fingerprint in any of the forms an
// administrator copies (see FingerprintForms and ParseFingerprintKind).
// It is also the parser for the fingerprints the MTAs report.
func ParseFingerprint(s string) (Fingerprint, error) {
	f, _, err := ParseFingerprintKind(s)
	return f, err
}

// ParseFingerprintKind reads a SHA-256 fingerprint and says which kind
// its form implies:
//
//   - hex, in any case, either plain or with a colon between every pair
//     of digits: the form Postfix logs (smtp_tls_fingerprint_digest =
//     sha256) and `tlsgate certs show` prints; a certificate or a public
//     key digest (PinCertOrKey);
//   - the same after "sha256:" or "sha256=", or after OpenSSL's
//     "sha256 Fingerprint=" / "SHA256 Fingerprint=" (openssl x509
//     -fingerprint -sha256), which is always a certificate digest but is
//     matched like any hex digest;
//   - "sha256//" followed by the standard base64 of the digest (with or
//     without padding): the HPKP / curl --pinnedpubkey pin, which is
//     always the digest of the public key (PinPublicKey).
//
// Surrounding white space is ignored. Another digest algorithm, or a hex
// string of another length, is refused with a message that names it.
func ParseFingerprintKind(s string) (Fingerprint, PinKind, error) {
	var f Fingerprint
	t := strings.TrimSpace(s)
	if t == "" {
		return f, 0, fmt.Errorf("empty fingerprint; %s", FingerprintForms)
	}
	if p := "sha256//"; len(t) >= len(p) && strings.EqualFold(t[:len(p)], p) {
		b, err := decodeBase64(strings.TrimSpace(t[len(p):]))
		if err != nil || len(b) != len(f) {
			return f, 0, fmt.Errorf("fingerprint %s: a \"sha256//\" pin is the base64 of the public key's 32-byte SHA-256 digest (44 characters ending in '='), as curl --pinnedpubkey takes it; %s", quoteFP(s), FingerprintForms)
		}
		copy(f[:], b)
		return f, PinPublicKey, nil
	}
	if alg, rest, ok := cutAlgorithm(t); ok {
		switch strings.ToLower(alg) {
		case "sha256", "sha-256", "sha2-256":
		default:
			return f, 0, fmt.Errorf("fingerprint %s: only sha256 is supported (Postfix uses sha256 from compatibility_level 3.6), not %q; %s", quoteFP(s), clip(alg), FingerprintForms)
		}
		t = strings.TrimSpace(rest)
		if t == "" {
			return f, 0, fmt.Errorf("empty fingerprint after %q; %s", clip(alg), FingerprintForms)
		}
	}
	if strings.Contains(t, ":") {
		parts := strings.Split(t, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return f, 0, fmt.Errorf("fingerprint %s: colons must separate pairs of hex digits (AB:CD:...); %s", quoteFP(s), FingerprintForms)
			}
		}
		t = strings.Join(parts, "")
	}
	b, err := hex.DecodeString(t)
	if err != nil {
		if d, err := decodeBase64(t); err == nil && len(d) == len(f) {
			return f, 0, fmt.Errorf("fingerprint %s is base64, which does not say what was digested; if it is the SHA-256 of the public key, write it as \"sha256//%s\"; %s", quoteFP(s), clip(t), FingerprintForms)
		}
		return f, 0, fmt.Errorf("fingerprint %s is not hexadecimal; %s", quoteFP(s), FingerprintForms)
	}
	const recompute = "tlsgate compares SHA-256 digests (32 bytes), as Postfix does with smtp_tls_fingerprint_digest = sha256: \"tlsgate certs show CERT\" or \"openssl x509 -noout -fingerprint -sha256 -in CERT\" prints it"
	switch len(b) {
	case len(f):
	case 16:
		return f, 0, fmt.Errorf("fingerprint %s has 16 bytes, an MD5 digest; %s", quoteFP(s), recompute)
	case 20:
		return f, 0, fmt.Errorf("fingerprint %s has 20 bytes, a SHA-1 digest; %s", quoteFP(s), recompute)
	default:
		return f, 0, fmt.Errorf("fingerprint %s has %d bytes, want 32 (SHA-256)", quoteFP(s), len(b))
	}
	copy(f[:], b)
	return f, PinCertOrKey, nil
}

// cutAlgorithm splits a digest-name prefix off t: "ALG:", "ALG=" or
// OpenSSL's "ALG Fingerprint=". A name is short, made of letters, digits,
// '-' and blanks, and not all hex digits: "AB:" or "abc:" is (part of) a
// fingerprint, and base64 padding is no separator.
func cutAlgorithm(t string) (alg, rest string, ok bool) {
	i := strings.IndexAny(t, ":=")
	if i < 0 || i > 40 {
		return "", t, false
	}
	alg = strings.TrimSpace(t[:i])
	if t[i] == '=' {
		if a, ok := cutSuffixFold(alg, "fingerprint"); ok {
			alg = strings.TrimSpace(a)
		}
	}
	allHex := true
	for j := 0; j < len(alg); j++ {
		c := alg[j]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == ' ') {
			return "", t, false
		}
		allHex = allHex && isHex(c)
	}
	if len(alg) < 3 || allHex { // "ZZ:" is a (bad) byte, no digest name
		return "", t, false
	}
	return alg, t[i+1:], true
}

func cutSuffixFold(s, suffix string) (string, bool) {
	if len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix) {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

func decodeBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.Strict().DecodeString(s)
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

// quoteFP quotes a fingerprint as written for a message, shortened when
// it is far longer than any fingerprint.
func quoteFP(s string) string { return fmt.Sprintf("%q", clip(s)) }

func clip(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// String returns the upper-case colon-separated hex form Postfix uses
// ("AB:CD:...", Postfix's tls_digest_encode).
func (f Fingerprint) String() string { return ColonHex(f[:]) }

// ColonHex writes b as upper-case hex bytes separated by colons: the form
// of fingerprints, and of serial numbers in "openssl x509 -text".
func ColonHex(b []byte) string {
	const hexdig = "0123456789ABCDEF"
	out := make([]byte, 0, 3*len(b))
	for i, c := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, hexdig[c>>4], hexdig[c&15])
	}
	return string(out)
}
