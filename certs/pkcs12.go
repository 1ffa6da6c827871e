package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"software.sslmate.com/src/go-pkcs12"
)

// ErrWrongPassword is returned (wrapped) by [PFX2PEM] when the PKCS#12
// password is wrong.
var ErrWrongPassword = errors.New("certs: wrong PKCS#12 password")

// PEMBundle is the content of a PKCS#12 file converted to the PEM files an
// MTA reads.
type PEMBundle struct {
	Key   []byte // private key, PKCS#8 PEM: smtpd_tls_key_file, Sendmail ServerKeyFile
	Cert  []byte // leaf certificate, PEM: smtpd_tls_cert_file, Sendmail ServerCertFile
	Chain []byte // CA certificates that came with it, PEM, leaf's issuer first; nil if none

	PrivateKey crypto.Signer       // decoded private key
	Leaf       *x509.Certificate   // the certificate matching PrivateKey
	CACerts    []*x509.Certificate // the other certificates, ordered issuer-first where possible
}

// FullChain returns the leaf followed by the chain: the single file Postfix
// accepts in smtpd_tls_cert_file ("server certificate first, then the
// issuing CAs").
func (b *PEMBundle) FullChain() []byte {
	return append(append([]byte(nil), b.Cert...), b.Chain...)
}

// PFX2PEM decodes a PKCS#12 file (.pfx/.p12, as exported by Windows, IIS,
// Exchange, appliances, or "openssl pkcs12 -export") with password. Modern
// (AES/PBKDF2, PBMAC1) and legacy (3DES, RC2) encryption are accepted.
//
// The leaf is the certificate whose public key matches the private key,
// wherever it is in the file (Windows does not always put it first); if no
// certificate matches, an error says so. A wrong password gives an error
// wrapping [ErrWrongPassword].
func PFX2PEM(pfx []byte, password string) (*PEMBundle, error) {
	key, first, rest, err := pkcs12.DecodeChain(pfx, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) {
			return nil, fmt.Errorf("%w: the file could not be decrypted with the password given (check for a trailing space or newline in --password-file, and the keyboard layout at the prompt)", ErrWrongPassword)
		}
		var ni pkcs12.NotImplementedError
		if errors.As(err, &ni) {
			return nil, fmt.Errorf("certs: unsupported PKCS#12 file: %v; re-export it from Windows with \"AES256-SHA256\" encryption, or convert it with \"openssl pkcs12 -legacy\"", err)
		}
		return nil, fmt.Errorf("certs: cannot read PKCS#12 file: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: unsupported private key type %T in PKCS#12 file", key)
	}
	all := append([]*x509.Certificate{first}, rest...)
	leafIdx := -1
	for i, c := range all {
		if KeyMatchesCert(signer, c) == nil {
			leafIdx = i
			break
		}
	}
	if leafIdx < 0 {
		return nil, fmt.Errorf("%w (the PKCS#12 file holds %d certificate(s), none of them for its private key)", KeyMatchesCert(signer, first), len(all))
	}
	leaf := all[leafIdx]
	var others []*x509.Certificate
	for i, c := range all {
		if i != leafIdx {
			others = append(others, c)
		}
	}
	others = orderChain(leaf, others)
	keyPEM, err := MarshalKeyPEM(signer)
	if err != nil {
		return nil, err
	}
	b := &PEMBundle{
		Key:        keyPEM,
		Cert:       EncodeCertificatesPEM(leaf),
		PrivateKey: signer,
		Leaf:       leaf,
		CACerts:    others,
	}
	if len(others) > 0 {
		b.Chain = EncodeCertificatesPEM(others...)
	}
	return b, nil
}

// orderChain puts certs in issuing order starting from leaf's issuer; those
// not linked into the chain follow in their original order.
func orderChain(leaf *x509.Certificate, certs []*x509.Certificate) []*x509.Certificate {
	left := append([]*x509.Certificate(nil), certs...)
	var out []*x509.Certificate
	cur := leaf
	for len(left) > 0 {
		next := -1
		for i, c := range left {
			if string(cur.RawIssuer) == string(c.RawSubject) && cur.CheckSignatureFrom(c) == nil {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		cur = left[next]
		out = append(out, cur)
		left = append(left[:next], left[next+1:]...)
	}
	return append(out, left...)
}
