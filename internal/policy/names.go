package policy

import "github.com/tlsgate/tlsgate/internal/certid"

// The policy names certificates through package certid; these are its
// names for certid's, so that the endpoint model reads as before.

// DN is a distinguished name ([certid.DN]).
type DN = certid.DN

// Fingerprint is a SHA-256 certificate or public-key digest
// ([certid.Fingerprint]).
type Fingerprint = certid.Fingerprint

// PinKind says what a fingerprint was computed over ([certid.PinKind]).
type PinKind = certid.PinKind

// The kinds of [PinKind].
const (
	PinCertOrKey = certid.PinCertOrKey
	PinPublicKey = certid.PinPublicKey
)
