package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Store is the CA store: a directory of PEM files, one CA certificate per
// file, from which tlsgate writes the CA bundle the MTA reads (Postfix
// smtpd_tls_CAfile / smtp_tls_CAfile, Sendmail CACertFile) and the
// per-destination trust anchor files (Postfix "tafile=").
//
// Files named *.pem, *.crt or *.cer are read; a file may hold several
// certificates. Other files (README, OpenSSL hash links "*.0") are ignored.
// A Store is a snapshot taken by [OpenStore]; [Store.Add] and [Store.Remove]
// update both the directory and the snapshot. It is not safe for concurrent
// modification.
type Store struct {
	dir      string // "" for a read-only store loaded from a bundle
	bundle   string // path of the bundle a read-only store came from
	entries  []Entry
	warnings []string
	skipped  []Skip
}

// Skip is a file of a store directory that the store leaves out, in full
// or in part: it cannot be read, holds no certificate, or holds a
// certificate that is not a CA.
type Skip struct {
	// File is the base name of the file in the store directory.
	File string
	// Reason says why, as in [Store.Warnings].
	Reason string
}

// Entry is one certificate in a [Store].
type Entry struct {
	File        string            // base name of the file in the store directory
	Subject     string            // RFC 4514 subject DN
	NotAfter    time.Time         // end of validity
	Fingerprint string            // [FingerprintCert]
	Cert        *x509.Certificate // the certificate
}

// storeExts are the file name extensions read from a store directory.
var storeExts = []string{".pem", ".crt", ".cer"}

// OpenStore reads the CA store in dir, which must exist. Files that cannot
// be parsed, or hold certificates that are not CAs, are left out of the
// store and reported by [Store.Warnings] so that one bad file does not make
// every other CA unusable.
func OpenStore(dir string) (*Store, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("certs: CA store %s does not exist (create it with \"tlsgate certs store add --store %s CA.pem\")", dir, dir)
		}
		return nil, fmt.Errorf("certs: CA store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("certs: CA store %s is not a directory", dir)
	}
	s := &Store{dir: dir}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadBundle makes a read-only [Store] from a PEM file holding CA
// certificates, such as the file named by Postfix smtp_tls_CAfile or
// /etc/ssl/certs/ca-certificates.crt. Non-CA certificates are skipped with a
// warning. Add and Remove fail on such a store.
func LoadBundle(path string) (*Store, error) {
	cs, err := ReadCertificateFile(path)
	if err != nil {
		return nil, err
	}
	s := &Store{bundle: path}
	for _, c := range cs {
		if err := checkCA(c); err != nil {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: skipped: %v", path, err))
			continue
		}
		s.entries = append(s.entries, newEntry(filepath.Base(path), c))
	}
	return s, nil
}

func (s *Store) load() error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("certs: CA store: %w", err)
	}
	s.entries, s.warnings, s.skipped = nil, nil, nil
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") || !slices.Contains(storeExts, strings.ToLower(filepath.Ext(name))) {
			continue
		}
		path := filepath.Join(s.dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			s.skip(name, err.Error())
			continue
		}
		if !fi.Mode().IsRegular() {
			s.skip(name, fmt.Sprintf("not a regular file (%s)", fi.Mode().Type()))
			continue
		}
		cs, err := ReadCertificateFile(path)
		if err != nil {
			s.skip(name, err.Error())
			continue
		}
		for _, c := range cs {
			if err := checkCA(c); err != nil {
				s.skip(name, err.Error())
				continue
			}
			s.entries = append(s.entries, newEntry(name, c))
		}
	}
	return nil
}

// skip records that file name of the store directory was left out.
func (s *Store) skip(name, reason string) {
	s.skipped = append(s.skipped, Skip{File: name, Reason: reason})
	s.warnings = append(s.warnings, fmt.Sprintf("%s: skipped: %s", filepath.Join(s.dir, name), reason))
}

// Skipped lists the files of the store directory left out, in full or in
// part, with the reason (one entry per certificate left out of a file
// that holds several); the same as [Store.Warnings].
func (s *Store) Skipped() []Skip { return slices.Clone(s.skipped) }

func newEntry(file string, c *x509.Certificate) Entry {
	return Entry{File: file, Subject: certid.RFC4514(c.RawSubject), NotAfter: c.NotAfter.UTC(), Fingerprint: FingerprintCert(c), Cert: c}
}

// String names the store for messages: its directory or bundle file.
func (s *Store) String() string {
	if s.dir != "" {
		return s.dir
	}
	return s.bundle
}

// Dir returns the store directory ("" for a store made by [LoadBundle]).
func (s *Store) Dir() string { return s.dir }

// Warnings lists the files or certificates that were left out of the
// store, with the reason.
func (s *Store) Warnings() []string { return slices.Clone(s.warnings) }

// List returns the store's certificates, sorted by file name.
func (s *Store) List() []Entry {
	out := slices.Clone(s.entries)
	slices.SortStableFunc(out, func(a, b Entry) int { return strings.Compare(a.File, b.File) })
	return out
}

// Certificates returns the store's certificates in [Store.List] order.
func (s *Store) Certificates() []*x509.Certificate {
	var out []*x509.Certificate
	for _, e := range s.List() {
		out = append(out, e.Cert)
	}
	return out
}

// Pool returns a new certificate pool holding every CA in the store.
func (s *Store) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, e := range s.entries {
		p.AddCert(e.Cert)
	}
	return p
}

// checkCA refuses certificates that cannot act as a CA.
func checkCA(c *x509.Certificate) error {
	subj := certid.RFC4514(c.RawSubject)
	switch {
	case !c.BasicConstraintsValid && c.Version < 3 && isSelfSigned(c):
		// Old (X.509 v1) self-signed roots have no extensions at all;
		// OpenSSL and Go accept them as trust anchors.
		return nil
	case !c.BasicConstraintsValid:
		return fmt.Errorf("%s is not a CA certificate (it has no basicConstraints extension, so it cannot sign other certificates); to trust this one server, pin its fingerprint %s instead", subj, FingerprintCert(c))
	case !c.IsCA:
		return fmt.Errorf("%s is not a CA certificate (basicConstraints CA:FALSE: it is a server or client certificate and cannot sign other certificates); to trust this one server, pin its fingerprint %s instead", subj, FingerprintCert(c))
	}
	return nil
}

// ErrReadOnlyStore is returned by Add and Remove on a store made by
// [LoadBundle].
var ErrReadOnlyStore = errors.New("certs: this CA store is a bundle file, not a directory; it cannot be changed")

// Add stores every certificate in certPEM (PEM or DER, see
// [ParseCertificates]) as its own file, named after the subject CN and the
// fingerprint. All certificates are checked first: if any is not a CA
// (basicConstraints CA:FALSE), nothing is added and the error says why.
// Certificates already in the store are skipped. It returns the entries
// added.
func (s *Store) Add(certPEM []byte) ([]Entry, error) {
	if s.dir == "" {
		return nil, ErrReadOnlyStore
	}
	cs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if err := checkCA(c); err != nil {
			return nil, fmt.Errorf("certs: not added to %s: %w", s.dir, err)
		}
	}
	var added []Entry
	for _, c := range cs {
		fp := FingerprintCert(c)
		if slices.ContainsFunc(s.entries, func(e Entry) bool { return e.Fingerprint == fp }) {
			continue
		}
		name := storeFileName(c)
		if err := writeFileAtomic(filepath.Join(s.dir, name), EncodeCertificatesPEM(c), 0o644, false); err != nil {
			return added, err
		}
		e := newEntry(name, c)
		s.entries = append(s.entries, e)
		added = append(added, e)
	}
	return added, nil
}

// Contains reports whether a certificate with the same SHA-256 fingerprint
// is in the store.
func (s *Store) Contains(c *x509.Certificate) bool {
	fp := FingerprintCert(c)
	return slices.ContainsFunc(s.entries, func(e Entry) bool { return e.Fingerprint == fp })
}

// storeFileName derives a stable, readable file name: the subject CN (or
// O) reduced to [A-Za-z0-9._-], then the first 8 hex digits of the
// certificate's SHA-256.
func storeFileName(c *x509.Certificate) string {
	base := c.Subject.CommonName
	if base == "" && len(c.Subject.Organization) > 0 {
		base = c.Subject.Organization[0]
	}
	var b strings.Builder
	for _, r := range base {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ' || r == '/' || r == ':':
			b.WriteByte('_')
		}
	}
	name := strings.Trim(b.String(), "._-")
	if len(name) > 60 {
		name = name[:60]
	}
	if name == "" {
		name = "ca"
	}
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf("%s-%x.pem", name, sum[:4])
}

// Remove deletes certificates from the store. what is either a file name
// in the store directory (with or without ".pem") or a SHA-256 certificate
// fingerprint (see [ParseFingerprint]). A file holding several certificates
// is removed as a whole when named; when one of its certificates is named by
// fingerprint, the file is rewritten without it. It returns the entries
// removed, or an error if nothing matched.
func (s *Store) Remove(what string) ([]Entry, error) {
	if s.dir == "" {
		return nil, ErrReadOnlyStore
	}
	if fp, err := ParseFingerprint(what); err == nil {
		want := certid.ColonHex(fp)
		i := slices.IndexFunc(s.entries, func(e Entry) bool { return e.Fingerprint == want })
		if i < 0 {
			return nil, fmt.Errorf("certs: no certificate with fingerprint %s in CA store %s", want, s.dir)
		}
		e := s.entries[i]
		var keep []*x509.Certificate
		for _, o := range s.entries {
			if o.File == e.File && o.Fingerprint != want {
				keep = append(keep, o.Cert)
			}
		}
		path := filepath.Join(s.dir, e.File)
		if len(keep) == 0 {
			err = os.Remove(path)
		} else {
			err = writeFileAtomic(path, EncodeCertificatesPEM(keep...), 0o644, true)
		}
		if err != nil {
			return nil, fmt.Errorf("certs: remove from CA store: %w", err)
		}
		s.entries = slices.Delete(s.entries, i, i+1)
		return []Entry{e}, nil
	}

	name := filepath.Base(what)
	if name != what && filepath.Clean(filepath.Dir(what)) != filepath.Clean(s.dir) {
		return nil, fmt.Errorf("certs: %s is not a file in the CA store %s; give its file name or fingerprint", what, s.dir)
	}
	candidates := []string{name}
	if filepath.Ext(name) == "" {
		for _, ext := range storeExts {
			candidates = append(candidates, name+ext)
		}
	}
	for _, n := range candidates {
		path := filepath.Join(s.dir, n)
		if _, err := os.Lstat(path); err != nil {
			continue
		}
		var removed []Entry
		for _, e := range s.entries {
			if e.File == n {
				removed = append(removed, e)
			}
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("certs: remove from CA store: %w", err)
		}
		syncDir(s.dir)
		s.entries = slices.DeleteFunc(s.entries, func(e Entry) bool { return e.File == n })
		s.warnings = slices.DeleteFunc(s.warnings, func(w string) bool { return strings.HasPrefix(w, path+":") })
		s.skipped = slices.DeleteFunc(s.skipped, func(k Skip) bool { return k.File == n })
		return removed, nil
	}
	return nil, fmt.Errorf("certs: %q is neither a file in the CA store %s nor a SHA-256 fingerprint of a certificate in it", what, s.dir)
}

// WriteBundle writes every CA in the store, concatenated as PEM with a
// comment line per certificate, to path (mode 0644, atomically, replacing
// the previous bundle). This is the file for Postfix smtpd_tls_CAfile and
// smtp_tls_CAfile and Sendmail's CACertFile.
func (s *Store) WriteBundle(path string) error {
	return s.WriteTrustAnchors(path, nil)
}

// WriteTrustAnchors writes the store's CAs for which filter returns true
// (all of them if filter is nil) to path like [Store.WriteBundle]. It is
// used for Postfix's per-destination "tafile=", which pins the issuers a
// partner's certificate may chain to. Writing an empty file is refused:
// Postfix would then trust nothing, or fail on the policy entry.
func (s *Store) WriteTrustAnchors(path string, filter func(*x509.Certificate) bool) error {
	data, err := s.TrustAnchorsPEM(path, filter)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o644, true)
}

// TrustAnchorsPEM returns what [Store.WriteTrustAnchors] would write to
// path (named in its error only): the store's CAs for which filter returns
// true (all if filter is nil), with a comment line per certificate. No CA
// is an error.
func (s *Store) TrustAnchorsPEM(path string, filter func(*x509.Certificate) bool) ([]byte, error) {
	var b bytes.Buffer
	n := 0
	for _, e := range s.List() {
		if filter != nil && !filter(e.Cert) {
			continue
		}
		fmt.Fprintf(&b, "# %s\n# expires %s, SHA-256 %s\n", e.Subject, e.NotAfter.Format(timeLayout), e.Fingerprint)
		b.Write(EncodeCertificatesPEM(e.Cert))
		n++
	}
	if n == 0 {
		if filter != nil {
			return nil, fmt.Errorf("certs: no CA in store %s matches; not writing an empty %s", s, path)
		}
		return nil, fmt.Errorf("certs: CA store %s is empty; not writing an empty %s", s, path)
	}
	return b.Bytes(), nil
}
