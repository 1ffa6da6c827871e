package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// KeyAlgorithms lists the names accepted by [GenerateKey], default first.
var KeyAlgorithms = []string{"rsa2048", "rsa3072", "rsa4096", "p256", "p384"}

// DefaultKeyAlgorithm is the key type made when none is asked for: RSA 2048
// is accepted by every MTA, TLS library and public CA.
const DefaultKeyAlgorithm = "rsa2048"

// ErrWeakKey is wrapped by the error [GenerateKey] returns for RSA keys
// shorter than 2048 bits.
var ErrWeakKey = errors.New("certs: key too weak")

// GenerateKey makes a new private key. alg is one of [KeyAlgorithms]
// ("rsa2048", "rsa3072", "rsa4096", "p256", "p384"; case-insensitive, the
// spellings "rsa-2048", "ecdsa-p256", "P-256", "prime256v1", "secp384r1" are
// also accepted). RSA keys shorter than 2048 bits are refused with the
// reason.
func GenerateKey(alg string) (crypto.Signer, error) {
	a := strings.ToLower(strings.TrimSpace(alg))
	a = strings.NewReplacer("-", "", "_", "").Replace(a)
	switch a {
	case "p256", "ecdsap256", "prime256v1", "secp256r1", "ec", "ecdsa":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384", "ecdsap384", "secp384r1":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	if bits, ok := strings.CutPrefix(a, "rsa"); ok {
		if bits == "" {
			bits = "2048"
		}
		n, err := strconv.Atoi(bits)
		if err != nil {
			return nil, unknownAlg(alg)
		}
		switch {
		case n < 2048:
			return nil, fmt.Errorf("%w: RSA %d bits is refused: NIST has disallowed RSA keys below 2048 bits for signatures since 2014, public CAs have not signed them since 2013 (CA/Browser Forum), and OpenSSL's default security level on Debian and RHEL rejects them in the TLS handshake, so partners could not connect; use rsa2048 or larger", ErrWeakKey, n)
		case n == 2048, n == 3072, n == 4096:
			return rsa.GenerateKey(rand.Reader, n)
		default:
			return nil, fmt.Errorf("certs: RSA %d bits is not offered: use 2048, 3072 or 4096 (key sizes every MTA supports)", n)
		}
	}
	return nil, unknownAlg(alg)
}

func unknownAlg(alg string) error {
	return fmt.Errorf("certs: unknown key type %q: want one of %s", alg, strings.Join(KeyAlgorithms, ", "))
}

// MarshalKeyPEM encodes key as an unencrypted PKCS#8 "PRIVATE KEY" PEM block,
// the format Postfix (smtpd_tls_key_file) and Sendmail (ServerKeyFile) read.
func MarshalKeyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteKey writes key to path as PKCS#8 PEM with mode 0600, atomically
// (temporary file in the same directory, then rename). An existing file is
// only replaced when force is true; otherwise the error satisfies
// errors.Is(err, fs.ErrExist).
func WriteKey(path string, key crypto.PrivateKey, force bool) error {
	data, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600, force)
}

// ParsePrivateKey decodes the first private key in PEM data: PKCS#8
// ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
// Encrypted keys are refused with a hint, since an MTA cannot prompt for a
// passphrase at start.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("certs: no PEM private key found (want a \"-----BEGIN PRIVATE KEY-----\" block)")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			if block.Headers["Proc-Type"] != "" {
				return nil, errEncryptedKey
			}
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			if block.Headers["Proc-Type"] != "" {
				return nil, errEncryptedKey
			}
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errEncryptedKey
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("certs: parse %s: %w", strings.ToLower(block.Type), err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("certs: unsupported private key type %T", key)
		}
		return s, nil
	}
}

var errEncryptedKey = errors.New("certs: the private key is encrypted; an MTA cannot ask for its passphrase at start, decrypt it once with \"openssl pkey -in KEY -out KEY.new\" and keep the result mode 0600")

// LoadKeyFile reads a private key from path after [CheckKeyFile] has
// confirmed that only its owner can read it.
func LoadKeyFile(path string) (crypto.Signer, error) {
	if err := CheckKeyFile(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: read key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// DescribeKey names a public key the way admins compare them: "RSA 2048
// bits", "ECDSA P-256", "Ed25519".
func DescribeKey(pub crypto.PublicKey) string {
	alg, bits := keyAlgorithm(pub)
	if bits > 0 && alg == "RSA" {
		return fmt.Sprintf("RSA %d bits", bits)
	}
	return alg
}

// keyAlgorithm returns the algorithm name and key size in bits.
func keyAlgorithm(pub crypto.PublicKey) (string, int) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA", k.N.BitLen()
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name, k.Curve.Params().BitSize
	case ed25519.PublicKey:
		return "Ed25519", 256
	default:
		return fmt.Sprintf("unknown (%T)", pub), 0
	}
}
