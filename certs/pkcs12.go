package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

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
	CACerts    []*x509.Certificate // the other certificates: Leaf's chain first, then the rest in file order
	// Linked is how many of CACerts form Leaf's chain: CACerts[0] issued
	// Leaf, each following one issued the one before it (by name and
	// signature). The others came with the file but are not Leaf's
	// issuers.
	Linked int
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
// Before any key is derived from the password, a file over MaxPFXSize
// bytes, or one whose cleartext asks for more than MaxPFXIterations
// iterations for one key derivation or MaxPFXTotalIterations in all, is
// refused. Derivations hidden inside an encrypted part cannot be checked
// beforehand: if decoding takes more than 30 s, PFX2PEM gives up with an
// error, leaving the decoding goroutine to finish in the background (the
// tlsgate command then exits).
//
// The leaf is the certificate whose public key matches the private key,
// wherever it is in the file (Windows does not always put it first); if no
// certificate matches, an error says so. A wrong password gives an error
// wrapping [ErrWrongPassword].
func PFX2PEM(pfx []byte, password string) (*PEMBundle, error) {
	if err := checkPFXWork(pfx); err != nil {
		return nil, err
	}
	key, first, rest, err := decodePFX(pfx, password)
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
	others, linked := orderChain(leaf, others)
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
		Linked:     linked,
	}
	if len(others) > 0 {
		b.Chain = EncodeCertificatesPEM(others...)
	}
	return b, nil
}

// decodePFX runs pkcs12.DecodeChain for at most pfxTimeout.
func decodePFX(pfx []byte, password string) (key any, leaf *x509.Certificate, cas []*x509.Certificate, err error) {
	type result struct {
		key  any
		leaf *x509.Certificate
		cas  []*x509.Certificate
		err  error
	}
	done := make(chan result, 1)
	decode := decodeChain
	go func() {
		k, l, c, err := decode(pfx, password)
		done <- result{k, l, c, err}
	}()
	t := time.NewTimer(pfxTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.key, r.leaf, r.cas, r.err
	case <-t.C:
		return nil, nil, nil, fmt.Errorf("certs: decoding the PKCS#12 file took more than %v: an encrypted part of it asks for too many key-derivation iterations; export the file again", pfxTimeout)
	}
}

// decodeChain is pkcs12.DecodeChain (tests slow it down).
var decodeChain = pkcs12.DecodeChain

// orderChain puts certs in issuing order starting from leaf's issuer (a
// certificate issued the one before it if it is named as its issuer and
// its key verifies the signature), and returns how many it could link so;
// the others follow in their original order.
func orderChain(leaf *x509.Certificate, certs []*x509.Certificate) ([]*x509.Certificate, int) {
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
	return append(out, left...), len(out)
}
