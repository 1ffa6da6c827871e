package certs

import (
	"crypto/x509"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// DefaultWarnWithin is the warning horizon used by [Expiry] when none is
// given: 30 days, enough time to get a certificate reissued by a CA.
const DefaultWarnWithin = 30 * 24 * time.Hour

// ExpiryStatus classifies a certificate's remaining validity.
type ExpiryStatus int

// Expiry statuses, from good to bad.
const (
	ExpiryOK      ExpiryStatus = iota // valid beyond the warning horizon
	ExpiryWarning                     // expires within the warning horizon
	ExpiryExpired                     // expired (or not yet valid)
)

// String returns "ok", "warning" or "expired".
func (s ExpiryStatus) String() string {
	switch s {
	case ExpiryOK:
		return "ok"
	case ExpiryWarning:
		return "warning"
	case ExpiryExpired:
		return "expired"
	}
	return "unknown"
}

// NamedCert is a certificate labelled with where tlsgate knows it from,
// for example "server cert /etc/postfix/mx.crt" or "CA store: Example CA".
type NamedCert struct {
	Name string // label for reports; empty means the subject DN
	Cert *x509.Certificate
}

// ExpiryReport is one line of an [Expiry] result.
type ExpiryReport struct {
	Name      string        // NamedCert.Name, or the subject DN
	NotBefore time.Time     // start of validity
	NotAfter  time.Time     // end of validity
	Left      time.Duration // time until NotAfter (negative once expired)
	Status    ExpiryStatus  // ok, warning or expired
}

// Expiry reports, in input order, which certificates are valid at now,
// which expire within warnWithin (zero means [DefaultWarnWithin]) and which
// have expired. A certificate whose validity has not started yet is also
// reported as expired: an MTA rejects it just the same.
func Expiry(certs []NamedCert, now time.Time, warnWithin time.Duration) []ExpiryReport {
	if warnWithin == 0 {
		warnWithin = DefaultWarnWithin
	}
	out := make([]ExpiryReport, 0, len(certs))
	for _, nc := range certs {
		c := nc.Cert
		r := ExpiryReport{Name: nc.Name, NotBefore: c.NotBefore, NotAfter: c.NotAfter, Left: c.NotAfter.Sub(now)}
		if r.Name == "" {
			r.Name = certid.RFC4514(c.RawSubject)
		}
		switch {
		case now.After(c.NotAfter), now.Before(c.NotBefore):
			r.Status = ExpiryExpired
		case r.Left <= warnWithin:
			r.Status = ExpiryWarning
		}
		out = append(out, r)
	}
	return out
}

// Worst returns the most severe status among reports (ExpiryOK if empty).
func Worst(reports []ExpiryReport) ExpiryStatus {
	w := ExpiryOK
	for _, r := range reports {
		w = max(w, r.Status)
	}
	return w
}
