package certs

import (
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// KeyMatchesCert returns nil if key is the private key for cert's public
// key, and an error naming both otherwise. A mismatched pair makes the MTA
// fail at start (Postfix logs "key values mismatch") or every handshake.
func KeyMatchesCert(key crypto.PrivateKey, cert *x509.Certificate) error {
	s, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("certs: private key of type %T cannot be used for TLS", key)
	}
	pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("certs: the private key (%s) does not belong to the certificate %s (%s, public key SHA-256 %s)",
			DescribeKey(s.Public()), certid.RFC4514(cert.RawSubject), DescribeKey(cert.PublicKey), FingerprintSPKI(cert))
	}
	return nil
}
