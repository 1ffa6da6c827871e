package policy

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Fingerprint is a SHA-256 digest of a certificate (DER) or of its public
// key (SubjectPublicKeyInfo DER). Postfix accepts either kind wherever a
// fingerprint is expected.
type Fingerprint [32]byte

// ParseFingerprint reads a SHA-256 fingerprint written as hex, with or
// without colons, in any case, optionally prefixed with "sha256:" — the
// form Postfix logs and `tlsgate certs show` prints.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	t := strings.TrimSpace(s)
	if i := strings.IndexByte(t, ':'); i >= 0 && !(i == 2 && isHex(t[0]) && isHex(t[1])) {
		if alg := strings.ToLower(t[:i]); alg != "sha256" {
			return f, fmt.Errorf("fingerprint %q: only sha256 is supported (Postfix uses sha256 from compatibility_level 3.6), not %q", s, alg)
		}
		t = t[i+1:]
	}
	t = strings.ReplaceAll(t, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil {
		return f, fmt.Errorf("fingerprint %q is not hexadecimal", s)
	}
	switch len(b) {
	case 32:
	case 16:
		return f, fmt.Errorf("fingerprint %q has 16 bytes, an MD5 digest; give the SHA-256 digest (tlsgate certs show FILE prints it)", s)
	case 20:
		return f, fmt.Errorf("fingerprint %q has 20 bytes, a SHA-1 digest; give the SHA-256 digest (tlsgate certs show FILE prints it)", s)
	default:
		return f, fmt.Errorf("fingerprint %q has %d bytes; a SHA-256 digest has 32", s, len(b))
	}
	copy(f[:], b)
	return f, nil
}

// String returns the upper-case colon-separated hex form Postfix uses.
func (f Fingerprint) String() string {
	const hexdig = "0123456789ABCDEF"
	b := make([]byte, 0, 95)
	for i, c := range f {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexdig[c>>4], hexdig[c&15])
	}
	return string(b)
}
