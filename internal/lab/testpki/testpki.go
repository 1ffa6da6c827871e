// Package testpki makes X.509 test certificates at test time, with
// crypto/x509 only (no openssl), for tlsgate's unit and real-MTA tests,
// the demo and the benchmark. It is part of the lab (internal/lab).
//
// [New] writes a fixed lab PKI into a directory: the "Lab Test CA", an
// "Other CA", the Postfix server certificate (mx.lab.test), SMTP sink
// certificates (sink.partner.test from either CA, wrong.partner.test), a
// CA-signed client certificate (client.lab.test) and a self-signed one
// (selfsigned.lab.test). [PKI.Intermediate] adds an intermediate CA below
// the Lab Test CA. [PKI.Issue] and [Issue] make more, with arbitrary
// (also hostile) subjects, validity windows, key types, SANs and signers.
//
// Every certificate is written as PEM: NAME.crt (the certificate), NAME.key
// (PKCS#8 private key, mode 0600) and NAME-chain.pem (the certificate
// followed by its issuers up to and including the root). [Cert] also
// carries the SHA-256 fingerprints of the certificate DER and of the
// SubjectPublicKeyInfo DER in the form Postfix logs and sends them
// (upper-case hex pairs joined by colons, as with
// smtpd_tls_fingerprint_digest = sha256, the default from
// compatibility_level 3.6 on).
//
// RSA 2048 key generation is slow, especially under the race detector, so
// private keys are cached per process: a key slot (by default the
// certificate's name) and key type give the same key every time. Two
// certificates with the same slot and key type therefore share their key
// and their SPKI fingerprint; give them different slots when that matters.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// KeyType selects the private key algorithm of a certificate.
type KeyType int

const (
	// RSA2048 is an RSA key of 2048 bits (the zero value, and what the
	// Postfix and Sendmail sides use, as in the lab reference).
	RSA2048 KeyType = iota
	// ECDSAP256 is an ECDSA key on NIST P-256; fast to generate.
	ECDSAP256
)

// String returns "RSA2048" or "ECDSAP256".
func (k KeyType) String() string {
	switch k {
	case RSA2048:
		return "RSA2048"
	case ECDSAP256:
		return "ECDSAP256"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// Options describe one certificate for [Issue] and [PKI.Issue].
type Options struct {
	// Name is the file base name (NAME.crt, NAME.key, NAME-chain.pem) and
	// the default key slot. Required; letters, digits, '.', '_' and '-'
	// only.
	Name string
	// Subject is the subject DN. Any strings are accepted, including CR,
	// LF, NUL, quotes, parentheses, non-ASCII and very long values: they
	// are encoded as UTF8String when not printable. Ignored if RawSubject
	// is set. When Signer is nil the issuer equals the subject.
	Subject pkix.Name
	// RawSubject, if set, is the DER of the subject Name used verbatim
	// (for DNs that pkix.Name cannot express). Default: nil.
	RawSubject []byte
	// DNSNames are the DNS subjectAltNames. Default: none (the CN is not
	// copied automatically).
	DNSNames []string
	// IPAddresses are the IP subjectAltNames. Default: none.
	IPAddresses []net.IP
	// EmailAddresses are the rfc822Name subjectAltNames. Default: none.
	EmailAddresses []string
	// NotBefore is the start of validity. Default: one hour ago.
	NotBefore time.Time
	// NotAfter is the end of validity. Default: NotBefore + 30 days
	// (or now + 30 days when NotBefore is zero).
	NotAfter time.Time
	// KeyType is the key algorithm. Default: RSA2048.
	KeyType KeyType
	// KeySlot names the cached key to use. Default: Name.
	KeySlot string
	// Signer issues the certificate. Nil means self-signed. A signer
	// must be a CA certificate ([Cert.IsCA]).
	Signer *Cert
	// IsCA makes a CA certificate (basicConstraints CA:TRUE, keyCertSign).
	IsCA bool
	// ExtKeyUsage lists the extended key usages. Default for a non-CA
	// certificate: serverAuth and clientAuth; for a CA: none.
	ExtKeyUsage []x509.ExtKeyUsage
	// SerialNumber is the serial number. Default: 128 random bits.
	SerialNumber *big.Int
}

// Cert is one certificate written by [Issue] and its parsed form.
type Cert struct {
	// Name is Options.Name.
	Name string
	// Cert is the parsed certificate.
	Cert *x509.Certificate
	// DER is the certificate's DER encoding.
	DER []byte
	// Key is the private key (*rsa.PrivateKey or *ecdsa.PrivateKey).
	Key crypto.Signer
	// CertFile is the path of the PEM certificate (NAME.crt).
	CertFile string
	// KeyFile is the path of the PEM PKCS#8 private key (NAME.key, 0600).
	KeyFile string
	// ChainFile is the path of NAME-chain.pem: this certificate followed
	// by its issuers, the root included.
	ChainFile string
	// Fingerprint is the SHA-256 of DER, as Postfix writes it
	// (ccert_fingerprint): "66:76:5D:...".
	Fingerprint string
	// PubkeyFingerprint is the SHA-256 of the SubjectPublicKeyInfo DER,
	// as Postfix writes it (ccert_pubkey_fingerprint).
	PubkeyFingerprint string
	// Issuer is the signing certificate, nil when self-signed.
	Issuer *Cert
}

// IsCA reports whether c is a CA certificate.
func (c *Cert) IsCA() bool { return c.Cert.IsCA }

// Chain returns c's certificate followed by its issuers, the root last.
func (c *Cert) Chain() []*x509.Certificate {
	var out []*x509.Certificate
	for x := c; x != nil; x = x.Issuer {
		out = append(out, x.Cert)
	}
	return out
}

// Pool returns a certificate pool holding only c's certificate, for use
// as RootCAs or ClientCAs.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// PKI is the fixed lab PKI written by [New].
type PKI struct {
	// Dir is the directory holding all files.
	Dir string
	// CA is "Lab Test CA" (C=DE, O=Lab Test, CN=Lab Test CA), files ca.*.
	CA *Cert
	// OtherCA is "Other CA" (C=DE, O=Other Org, CN=Other CA), files
	// other-ca.*. Nothing in the lab trusts it.
	OtherCA *Cert
	// Server is mx.lab.test signed by CA (CN and DNS SAN), the certificate
	// of the private Postfix's smtpd; files mx.*.
	Server *Cert
	// Sink is sink.partner.test signed by CA (CN and DNS SAN), for SMTP
	// sinks with STARTTLS; files sink.*.
	Sink *Cert
	// Client is client.lab.test signed by CA, subject C=DE, O=Lab Test,
	// CN=client.lab.test, ExtKeyUsage clientAuth and serverAuth; files
	// client.*.
	Client *Cert
	// SelfSigned is the self-signed client certificate selfsigned.lab.test
	// (C=DE, O=Lab Test, CN=selfsigned.lab.test); files selfsigned.*.
	SelfSigned *Cert
	// WrongCN is a server certificate for wrong.partner.test signed by CA
	// (a name mismatch for sink.partner.test); files wrong.*.
	WrongCN *Cert
	// OtherCASink is sink.partner.test signed by OtherCA (an untrusted
	// chain); files other-sink.*.
	OtherCASink *Cert
}

// New writes the lab PKI into dir (created with mode 0755 if missing) and
// returns it. Keys are RSA 2048 and cached per process, so a second call
// costs only the signatures.
func New(dir string) (*PKI, error) {
	if dir == "" {
		return nil, errors.New("testpki: New: empty directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testpki: New: %w", err)
	}
	// Generate the keys concurrently; RSA 2048 takes a while.
	slots := []string{"ca", "other-ca", "mx", "sink", "client", "selfsigned", "wrong", "other-sink"}
	errs := make([]error, len(slots))
	var wg sync.WaitGroup
	for i, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = cachedKey(s, RSA2048)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("testpki: New: %w", err)
	}

	p := &PKI{Dir: dir}
	lab := func(cn string) pkix.Name {
		return pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: cn}
	}
	var err error
	steps := []struct {
		dst  **Cert
		opts func() Options
	}{
		{&p.CA, func() Options {
			return Options{Name: "ca", Subject: lab("Lab Test CA"), IsCA: true}
		}},
		{&p.OtherCA, func() Options {
			return Options{Name: "other-ca", IsCA: true,
				Subject: pkix.Name{Country: []string{"DE"}, Organization: []string{"Other Org"}, CommonName: "Other CA"}}
		}},
		{&p.Server, func() Options {
			return Options{Name: "mx", Subject: lab("mx.lab.test"), DNSNames: []string{"mx.lab.test"}, Signer: p.CA}
		}},
		{&p.Sink, func() Options {
			return Options{Name: "sink", Subject: lab("sink.partner.test"), DNSNames: []string{"sink.partner.test"}, Signer: p.CA}
		}},
		{&p.Client, func() Options {
			return Options{Name: "client", Subject: lab("client.lab.test"), DNSNames: []string{"client.lab.test"}, Signer: p.CA}
		}},
		{&p.SelfSigned, func() Options {
			return Options{Name: "selfsigned", Subject: lab("selfsigned.lab.test"), DNSNames: []string{"selfsigned.lab.test"}}
		}},
		{&p.WrongCN, func() Options {
			return Options{Name: "wrong", Subject: lab("wrong.partner.test"), DNSNames: []string{"wrong.partner.test"}, Signer: p.CA}
		}},
		{&p.OtherCASink, func() Options {
			return Options{Name: "other-sink", Subject: lab("sink.partner.test"), DNSNames: []string{"sink.partner.test"}, Signer: p.OtherCA}
		}},
	}
	for _, s := range steps {
		if *s.dst, err = Issue(dir, s.opts()); err != nil {
			return nil, fmt.Errorf("testpki: New: %w", err)
		}
	}
	return p, nil
}

// T is the part of a test's *testing.T that [NewT] uses; mtalab.Runner
// has it too.
type T interface {
	Helper()
	TempDir() string
	Fatalf(format string, args ...any)
}

// NewT is [New] into tb.TempDir() (made traversable, mode 0755, so that
// MTA daemons running as other users can read the certificates); it
// fails the test on error.
func NewT(tb T) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("testpki: %v", err)
	}
	// The per-test parent directory is 0700 too.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		tb.Fatalf("testpki: %v", err)
	}
	p, err := New(dir)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return p
}

// Intermediate issues an intermediate CA below p.CA: subject C=DE,
// O=Lab Test, CN=cn, files NAME.*. Certificates it signs ([Options].Signer)
// chain leaf, intermediate, root; their NAME-chain.pem lists all three, as
// a server sends its chain.
func (p *PKI) Intermediate(name, cn string) (*Cert, error) {
	return p.Issue(Options{Name: name, IsCA: true, Signer: p.CA,
		Subject: pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: cn}})
}

// Issue makes one more certificate in p.Dir; see [Issue].
func (p *PKI) Issue(opts Options) (*Cert, error) { return Issue(p.Dir, opts) }

// Issue makes the certificate described by opts and writes its files into
// dir (which must exist).
func Issue(dir string, opts Options) (*Cert, error) {
	if err := validName(opts.Name); err != nil {
		return nil, fmt.Errorf("testpki: Issue: %w", err)
	}
	where := fmt.Sprintf("testpki: Issue %q", opts.Name)
	if opts.Signer != nil && !opts.Signer.IsCA() {
		return nil, fmt.Errorf("%s: signer %q is not a CA", where, opts.Signer.Name)
	}
	slot := opts.KeySlot
	if slot == "" {
		slot = opts.Name
	}
	key, err := cachedKey(slot, opts.KeyType)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}

	serial := opts.SerialNumber
	if serial == nil {
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("%s: serial: %w", where, err)
		}
	}
	nb := opts.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	na := opts.NotAfter
	if na.IsZero() {
		na = nb.Add(30 * 24 * time.Hour)
		if opts.NotBefore.IsZero() {
			na = time.Now().Add(30 * 24 * time.Hour)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               opts.Subject,
		RawSubject:            opts.RawSubject,
		NotBefore:             nb,
		NotAfter:              na,
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPAddresses,
		EmailAddresses:        opts.EmailAddresses,
		BasicConstraintsValid: true,
		IsCA:                  opts.IsCA,
		ExtKeyUsage:           opts.ExtKeyUsage,
	}
	if opts.IsCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if opts.KeyType == RSA2048 {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		if tmpl.ExtKeyUsage == nil {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		}
	}
	parent, parentKey := tmpl, key
	if opts.Signer != nil {
		parent, parentKey = opts.Signer.Cert, opts.Signer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("%s: create: %w", where, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: parse back: %w", where, err)
	}
	c := &Cert{
		Name:              opts.Name,
		Cert:              cert,
		DER:               der,
		Key:               key,
		CertFile:          filepath.Join(dir, opts.Name+".crt"),
		KeyFile:           filepath.Join(dir, opts.Name+".key"),
		ChainFile:         filepath.Join(dir, opts.Name+"-chain.pem"),
		Fingerprint:       Fingerprint(der),
		PubkeyFingerprint: Fingerprint(cert.RawSubjectPublicKeyInfo),
		Issuer:            opts.Signer,
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s: marshal key: %w", where, err)
	}
	var chain []byte
	for x := c; x != nil; x = x.Issuer {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.DER})...)
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{c.ChainFile, chain, 0o644},
	}
	for _, f := range files {
		if err := writeFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return c, nil
}

// Fingerprint returns the SHA-256 of b as upper-case hex pairs joined by
// colons, the form of Postfix's ccert_fingerprint and
// ccert_pubkey_fingerprint and of "match=" in a fingerprint TLS policy.
func Fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

// writeFile writes data to path with exactly mode (also when the file
// existed with other permissions), via a temporary file and rename.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return nil
}

func validName(name string) error {
	if name == "" {
		return errors.New("empty Name")
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("Name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	if name[0] == '.' {
		return fmt.Errorf("Name %q must not start with '.'", name)
	}
	return nil
}

type slotKey struct {
	slot string
	typ  KeyType
}

type slotEntry struct {
	once sync.Once
	key  crypto.Signer
	err  error
}

var (
	keyMu    sync.Mutex
	keyCache = map[slotKey]*slotEntry{}
)

// cachedKey returns the process-wide key of (slot, typ), generating it on
// first use. Concurrent callers for the same slot wait for one generation.
func cachedKey(slot string, typ KeyType) (crypto.Signer, error) {
	keyMu.Lock()
	e, ok := keyCache[slotKey{slot, typ}]
	if !ok {
		e = &slotEntry{}
		keyCache[slotKey{slot, typ}] = e
	}
	keyMu.Unlock()
	e.once.Do(func() {
		switch typ {
		case RSA2048:
			e.key, e.err = rsa.GenerateKey(rand.Reader, 2048)
		case ECDSAP256:
			e.key, e.err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		default:
			e.err = fmt.Errorf("unknown key type %v", typ)
		}
		if e.err != nil {
			e.err = fmt.Errorf("key slot %q (%v): %w", slot, typ, e.err)
		}
	})
	return e.key, e.err
}
