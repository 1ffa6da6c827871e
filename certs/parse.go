package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ParseCertificates decodes every certificate in data, which is either PEM
// (any number of "CERTIFICATE" or OpenSSL "TRUSTED CERTIFICATE" blocks; other
// blocks such as keys are skipped) or a single DER certificate (.cer/.der as
// Windows exports them). It fails if no certificate is found.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		cs, err := x509.ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("certs: neither PEM nor a DER certificate: %w", err)
		}
		if len(cs) == 0 {
			return nil, errors.New("certs: no certificate found")
		}
		return cs, nil
	}
	var out []*x509.Certificate
	rest := data
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		switch block.Type {
		case "CERTIFICATE", "X509 CERTIFICATE":
		case "TRUSTED CERTIFICATE":
			// OpenSSL appends trust settings after the certificate; parse
			// only the certificate's own SEQUENCE.
			block.Bytes = firstDER(block.Bytes)
		default:
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: PEM block %d: %w", n, err)
		}
		out = append(out, c)
	}
	if begun := bytes.Count(data, []byte("-----BEGIN ")); begun > n {
		// pem.Decode passes over a block it cannot read (no END line,
		// bad base64): a file cut short or damaged must not pass as the
		// certificates it still has.
		return nil, fmt.Errorf("certs: %d of %d PEM blocks cannot be read (cut short or damaged)", begun-n, begun)
	}
	if len(out) == 0 {
		return nil, errors.New("certs: no \"-----BEGIN CERTIFICATE-----\" block found")
	}
	return out, nil
}

// firstDER returns the first complete DER element of b (b itself if it
// cannot be parsed).
func firstDER(b []byte) []byte {
	var rv asn1.RawValue
	if _, err := asn1.Unmarshal(b, &rv); err != nil {
		return b
	}
	return rv.FullBytes
}

// ReadCertificateFile reads and parses the certificates in a PEM or DER file.
func ReadCertificateFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	cs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return cs, nil
}

// EncodeCertificatesPEM returns the certificates as concatenated
// "CERTIFICATE" PEM blocks, in order.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
