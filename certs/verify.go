package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Purpose is what a certificate is being checked for.
type Purpose string

// Purposes accepted by [Verify].
const (
	// PurposeServer checks a certificate presented by an SMTP server
	// (extended key usage serverAuth), as Postfix's smtp client does for the
	// "verify" and "secure" security levels.
	PurposeServer Purpose = "server"
	// PurposeClient checks a certificate presented by an SMTP client
	// (extended key usage clientAuth), as Postfix's smtpd does with
	// smtpd_tls_ask_ccert.
	PurposeClient Purpose = "client"
)

// ParsePurpose accepts "server" or "client" (case-insensitive); the empty
// string means [PurposeServer].
func ParsePurpose(s string) (Purpose, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "server":
		return PurposeServer, nil
	case "client":
		return PurposeClient, nil
	}
	return "", fmt.Errorf("certs: unknown purpose %q: want server or client", s)
}

func (p Purpose) eku() x509.ExtKeyUsage {
	if p == PurposeClient {
		return x509.ExtKeyUsageClientAuth
	}
	return x509.ExtKeyUsageServerAuth
}

func (p Purpose) words() string {
	if p == PurposeClient {
		return "TLS client (SMTP client presenting a certificate)"
	}
	return "TLS server (SMTP server)"
}

// VerifyOptions controls [Verify].
type VerifyOptions struct {
	// Name is the host name the certificate must be valid for (a subject
	// alternative name, or the CN if the certificate has no DNS or IP
	// alternative names, as OpenSSL's host check does for Postfix). An IP
	// address is matched against IP alternative names. Empty skips the name
	// check.
	Name string
	// Purpose is the role the certificate is checked for; the zero value
	// means [PurposeServer].
	Purpose Purpose
	// Now is the time at which validity is checked; zero means time.Now().
	Now time.Time
	// Intermediates are untrusted certificates that may be used to build
	// the chain (the rest of the file the peer would send). Optional.
	Intermediates []*x509.Certificate
}

// Sentinel reasons for a failed [Verify]; test with errors.Is. The error's
// text explains the specific case.
var (
	ErrExpired          = errors.New("certs: certificate expired")
	ErrNotYetValid      = errors.New("certs: certificate not yet valid")
	ErrUnknownAuthority = errors.New("certs: unknown authority")
	ErrNameMismatch     = errors.New("certs: name mismatch")
	ErrWrongPurpose     = errors.New("certs: wrong purpose")
	ErrInvalidChain     = errors.New("certs: invalid certificate chain")
)

// VerifyError is returned by [Verify] when a certificate is not acceptable.
// Its message is written for the mail admin: what is wrong, with dates,
// names and the CA involved.
type VerifyError struct {
	Reason error             // one of ErrExpired, ErrNotYetValid, ErrUnknownAuthority, ErrNameMismatch, ErrWrongPurpose, ErrInvalidChain
	Cert   *x509.Certificate // the certificate the problem is about (the leaf or a CA in the chain)
	Detail string            // human explanation
	Err    error             // underlying crypto/x509 error, if any
}

func (e *VerifyError) Error() string { return "certs: " + e.Detail }

// Unwrap returns the reason and the underlying error.
func (e *VerifyError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Reason, e.Err}
	}
	return []error{e.Reason}
}

// Verify checks cert the way an MTA would: its validity period, a chain to a
// CA in store (using opts.Intermediates), the host name and the purpose, in
// that order. It returns the verified chain, leaf first and trust anchor
// last. On failure the error is a *[VerifyError].
func Verify(store *Store, cert *x509.Certificate, opts VerifyOptions) ([]*x509.Certificate, error) {
	if store == nil {
		return nil, errors.New("certs: verify: no CA store")
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	purpose := opts.Purpose
	if purpose == "" {
		purpose = PurposeServer
	}
	subj := certid.RFC4514(cert.RawSubject)
	if err := checkValidity(cert, now, "the certificate "+subj); err != nil {
		return nil, err
	}

	inter := x509.NewCertPool()
	for _, c := range opts.Intermediates {
		inter.AddCert(c)
	}
	xopts := x509.VerifyOptions{
		Roots:         store.Pool(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	chains, err := cert.Verify(xopts)
	if err != nil {
		return nil, chainError(store, cert, opts.Intermediates, now, err)
	}

	if opts.Name != "" {
		if err := checkName(cert, opts.Name); err != nil {
			return nil, err
		}
	}

	xopts.KeyUsages = []x509.ExtKeyUsage{purpose.eku()}
	chains2, err := cert.Verify(xopts)
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage {
			return nil, purposeError(cert, chains[0], purpose, err)
		}
		return nil, chainError(store, cert, opts.Intermediates, now, err)
	}
	return chains2[0], nil
}

func checkValidity(c *x509.Certificate, now time.Time, what string) *VerifyError {
	switch {
	case now.After(c.NotAfter):
		return &VerifyError{Reason: ErrExpired, Cert: c,
			Detail: fmt.Sprintf("%s expired on %s (%s ago); it must be renewed", what, c.NotAfter.UTC().Format(timeLayout), humanDuration(now.Sub(c.NotAfter)))}
	case now.Before(c.NotBefore):
		return &VerifyError{Reason: ErrNotYetValid, Cert: c,
			Detail: fmt.Sprintf("%s is not yet valid: it starts on %s (in %s); check the clock of this machine, or wait", what, c.NotBefore.UTC().Format(timeLayout), humanDuration(c.NotBefore.Sub(now)))}
	}
	return nil
}

// chainError explains a crypto/x509 chain-building failure.
func chainError(store *Store, cert *x509.Certificate, inter []*x509.Certificate, now time.Time, err error) error {
	subj := certid.RFC4514(cert.RawSubject)
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return unknownAuthority(store, cert, ua.Cert, inter, err)
	}
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) {
		c := inv.Cert
		if c == nil {
			c = cert
		}
		what := "the CA certificate " + certid.RFC4514(c.RawSubject)
		if c == cert {
			what = "the certificate " + subj
		}
		switch inv.Reason {
		case x509.Expired:
			if ve := checkValidity(c, now, what); ve != nil {
				ve.Err = err
				return ve
			}
		case x509.NotAuthorizedToSign:
			return &VerifyError{Reason: ErrInvalidChain, Cert: c, Err: err,
				Detail: fmt.Sprintf("%s is used as an issuer but is not a CA certificate (basicConstraints CA:FALSE)", what)}
		case x509.CANotAuthorizedForThisName:
			return &VerifyError{Reason: ErrInvalidChain, Cert: c, Err: err,
				Detail: fmt.Sprintf("%s has name constraints that forbid the names in %s", what, subj)}
		case x509.IncompatibleUsage:
			return &VerifyError{Reason: ErrWrongPurpose, Cert: c, Err: err,
				Detail: fmt.Sprintf("%s restricts its extended key usage so that %s cannot be used for TLS", what, subj)}
		}
	}
	return &VerifyError{Reason: ErrInvalidChain, Cert: cert, Err: err,
		Detail: fmt.Sprintf("the certificate %s does not chain to the CA store %s: %v", subj, store, err)}
}

// unknownAuthority explains why no chain to the store was found for c (the
// leaf, or the last CA certificate reached from it).
func unknownAuthority(store *Store, leaf, c *x509.Certificate, inter []*x509.Certificate, err error) *VerifyError {
	if c == nil {
		c = leaf
	}
	subj, issuer := certid.RFC4514(c.RawSubject), certid.RFC4514(c.RawIssuer)
	what := "the certificate " + subj
	if c != leaf {
		what = "the CA certificate " + subj + " (sent along with " + certid.RFC4514(leaf.RawSubject) + ")"
	}
	// A CA of the right name that does not verify the signature is a
	// different problem from a missing CA.
	for _, cand := range append(store.Certificates(), inter...) {
		if string(cand.RawSubject) != string(c.RawIssuer) || cand.Equal(c) {
			continue
		}
		serr := c.CheckSignatureFrom(cand)
		if serr == nil {
			continue
		}
		var ia x509.InsecureAlgorithmError
		if errors.As(serr, &ia) {
			return &VerifyError{Reason: ErrInvalidChain, Cert: c, Err: err,
				Detail: fmt.Sprintf("%s is signed with %v, an algorithm that is no longer accepted (OpenSSL on current Debian and RHEL refuses it too); it must be reissued", what, c.SignatureAlgorithm)}
		}
		return &VerifyError{Reason: ErrUnknownAuthority, Cert: c, Err: err,
			Detail: fmt.Sprintf("unknown authority %q: %s names it as issuer, and the CA store %s has a CA of that name, but with a different key (%v); the CA has probably been renewed with a new key: add the CA certificate that actually issued it", issuer, what, store, serr)}
	}
	d := fmt.Sprintf("unknown authority %q: %s was issued by %q, which is not in the CA store %s", issuer, what, issuer, store)
	switch {
	case isSelfSigned(c) && c == leaf:
		d = fmt.Sprintf("unknown authority %q: %s is self-signed and not in the CA store %s; pin its fingerprint %s instead, or add the CA that issued it", issuer, what, store, FingerprintCert(c))
	case isSelfSigned(c):
		d = fmt.Sprintf("unknown authority %q: %s is a root CA that is not in the CA store %s; add it with \"tlsgate certs store add\" if you trust it", issuer, what, store)
	case c == leaf:
		d += "; add that CA (or the intermediate certificate that links to it) to the store"
	}
	return &VerifyError{Reason: ErrUnknownAuthority, Cert: c, Detail: d, Err: err}
}

// checkName matches name against the certificate the way OpenSSL's
// X509_check_host does for Postfix: DNS subject alternative names with a
// whole left-most label wildcard; the CN only if there are no DNS (or IP)
// alternative names.
func checkName(c *x509.Certificate, name string) *VerifyError {
	name = strings.TrimSuffix(strings.TrimSpace(name), ".")
	ip := net.ParseIP(strings.Trim(name, "[]"))
	if ip != nil {
		for _, a := range c.IPAddresses {
			if a.Equal(ip) {
				return nil
			}
		}
	} else if len(c.DNSNames) > 0 {
		if c.VerifyHostname(name) == nil {
			return nil
		}
	} else if len(c.IPAddresses) == 0 && c.Subject.CommonName != "" && matchHostname(c.Subject.CommonName, name) {
		return nil
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, a := range c.IPAddresses {
		names = append(names, a.String())
	}
	d := fmt.Sprintf("name mismatch: the certificate is for [%s], not %s", strings.Join(names, ", "), name)
	if len(names) == 0 {
		if c.Subject.CommonName != "" {
			d = fmt.Sprintf("name mismatch: the certificate has no subject alternative names and its CN %q does not match %s", c.Subject.CommonName, name)
		} else {
			d = fmt.Sprintf("name mismatch: the certificate names no host at all (no subject alternative names, no CN), so it cannot be valid for %s", name)
		}
	}
	return &VerifyError{Reason: ErrNameMismatch, Cert: c, Detail: d}
}

// matchHostname compares a certificate name (possibly "*.example.com")
// with a host name, case-insensitively; the wildcard covers exactly one
// whole left-most label.
func matchHostname(pattern, host string) bool {
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	host = strings.ToLower(host)
	if pattern == host {
		return true
	}
	rest, ok := strings.CutPrefix(pattern, "*.")
	if !ok || !strings.Contains(rest, ".") {
		return false
	}
	_, hostRest, ok := strings.Cut(host, ".")
	return ok && hostRest == rest
}

func purposeError(cert *x509.Certificate, chain []*x509.Certificate, p Purpose, err error) *VerifyError {
	subj := certid.RFC4514(cert.RawSubject)
	for _, c := range chain {
		if !allowsEKU(c, p.eku()) {
			allowed := "nothing usable for TLS"
			if ps := purposes(c); len(ps) > 0 {
				allowed = strings.Join(ps, ", ")
			}
			what := "the certificate " + subj
			if c != cert {
				what = "the CA certificate " + certid.RFC4514(c.RawSubject) + " (issuer of " + subj + ")"
			}
			return &VerifyError{Reason: ErrWrongPurpose, Cert: c, Err: err,
				Detail: fmt.Sprintf("wrong purpose: %s is only for %s (extended key usage), not for %s", what, allowed, p.words())}
		}
	}
	return &VerifyError{Reason: ErrWrongPurpose, Cert: cert, Err: err,
		Detail: fmt.Sprintf("wrong purpose: the certificate %s cannot be used as %s: %v", subj, p.words(), err)}
}

func allowsEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == want || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
