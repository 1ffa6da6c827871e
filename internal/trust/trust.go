// Package trust connects the policy to the CA store: it writes the CA
// bundle the MTA reads and the per-endpoint trust-anchor files that pin an
// outbound peer's issuer on Postfix (tafile=), and it lists every
// certificate tlsgate knows with its expiry.
package trust

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/sendmailfile"
)

// Plan is what the policy asks of the CA store.
type Plan struct {
	// Store is the CA store, nil when [certs] ca_store is not set.
	Store *certs.Store
	// Anchors maps each trust-anchor file to the CA certificates it holds.
	Anchors map[string][]*x509.Certificate
	// Known are the certificates whose expiry tlsgate watches.
	Known []certs.NamedCert
}

// Prepare reads the CA store and the server certificate named by p and
// works out the trust-anchor files. It fails when an endpoint pins an
// issuer that no CA in the store has, since the MTA would then refuse
// every server certificate of that peer. Its errors are a
// *policy.LoadError whose problems name the file and line of the setting
// or endpoint concerned.
func Prepare(p *policy.Policy) (*Plan, error) {
	s := p.Settings
	plan := &Plan{Anchors: map[string][]*x509.Certificate{}}
	if s.CAStore != "" {
		st, err := certs.OpenStore(s.CAStore)
		if err != nil {
			return nil, p.SettingError("certs.ca_store", err)
		}
		plan.Store = st
		for _, c := range st.Certificates() {
			plan.Known = append(plan.Known, certs.NamedCert{Name: "CA store: " + certid.DNFromPKIX(c.Subject).String(), Cert: c})
		}
	}
	if s.ServerCert != "" {
		cs, err := certs.ReadCertificateFile(s.ServerCert)
		if err != nil {
			return nil, p.SettingError("certs.server_cert", err)
		}
		if len(cs) > 0 {
			plan.Known = append(plan.Known, certs.NamedCert{Name: "server cert " + s.ServerCert, Cert: cs[0]})
		}
		if s.ServerKey != "" {
			if err := checkKey(p); err != nil {
				return nil, p.SettingError("certs.server_key", err)
			}
		}
	}
	var problems []*policy.Problem
	for _, ep := range p.Endpoints {
		o := &ep.Outbound
		if o.TrustAnchorFile == "" {
			continue
		}
		if plan.Store == nil {
			problems = append(problems, &policy.Problem{File: p.File, Line: ep.Line,
				Msg: fmt.Sprintf("endpoint %q outbound pins its issuer, but [certs] ca_store is not set", ep.Name)})
			continue
		}
		var match []*x509.Certificate
		for _, c := range plan.Store.Certificates() {
			if IssuerMatches(o, c) {
				match = append(match, c)
			}
		}
		if len(match) == 0 {
			want := o.IssuerCN
			if o.IssuerDN != nil {
				want = o.IssuerDN.String()
			}
			problems = append(problems, &policy.Problem{File: p.File, Line: ep.Line,
				Msg: fmt.Sprintf("endpoint %q outbound pins issuer %q, but no CA certificate in %s has that subject; add it with: tlsgate certs store --store %s add CA.pem", ep.Name, want, s.CAStore, s.CAStore)})
			continue
		}
		plan.Anchors[o.TrustAnchorFile] = match
	}
	if len(problems) > 0 {
		return nil, &policy.LoadError{Problems: problems}
	}
	return plan, nil
}

// checkKey judges the server key by who reads it. Postfix's smtpd reads
// it as root, but tlsgate reads it too (probe), so it must be exposed to
// no one but tlsgate's user and its key groups (certs.CheckKeyFile).
// Sendmail reads it as root by its own rules (sendmailfile), which allow a
// group-readable key with DontBlameSendmail=GroupReadableKeyFile: Debian's
// 0640 root:smmsp sendmail-common.key, which "tlsgate mta-config" wires
// with that option.
func checkKey(p *policy.Policy) error {
	if p.MTA == policy.Sendmail {
		return sendmailfile.Check(p.Settings.ServerKey, sendmailfile.Key, sendmailfile.Debian)
	}
	return certs.CheckKeyFile(p.Settings.ServerKey)
}

// WritesBundle reports whether tlsgate itself writes [certs] ca_bundle
// from the CA store. It does for Postfix. Sendmail, which runs as root,
// reads a CA file only if root owns it (sendmailfile), which tlsgate's
// user cannot make: with mta = "sendmail" root writes the bundle with
// "tlsgate certs store bundle" and "tlsgate check" makes sure it is safe
// and holds the CA store.
func WritesBundle(p *policy.Policy) bool {
	return p.MTA != policy.Sendmail && p.Settings.CABundle != ""
}

// IssuerMatches reports whether CA certificate c is the issuer an
// endpoint's outbound requirements pin (by DN, else by CN).
func IssuerMatches(o *policy.Requirements, c *x509.Certificate) bool {
	if o.IssuerDN != nil {
		return o.IssuerDN.Equal(certid.DNFromPKIX(c.Subject))
	}
	return o.IssuerCN != "" && strings.EqualFold(strings.TrimSpace(c.Subject.CommonName), o.IssuerCN)
}

// Write writes the CA bundle ([certs] ca_bundle; not for Sendmail, see
// WritesBundle) and the trust-anchor files, each atomically. The directory of each file is created (mode 0755
// less the umask) when it is missing, but not its parents: a mistyped path
// fails rather than growing a tree.
func (plan *Plan) Write(p *policy.Policy) error {
	if plan.Store != nil && WritesBundle(p) {
		if err := makeDir(filepath.Dir(p.Settings.CABundle)); err != nil {
			return fmt.Errorf("[certs] ca_bundle: %w", err)
		}
		if err := plan.Store.WriteBundle(p.Settings.CABundle); err != nil {
			return err
		}
	}
	if len(plan.Anchors) > 0 {
		if err := makeDir(filepath.Clean(p.Settings.TrustAnchorDir)); err != nil {
			return fmt.Errorf("[certs] trust_anchor_dir: %w", err)
		}
	}
	for path, cas := range plan.Anchors {
		want := map[*x509.Certificate]bool{}
		for _, c := range cas {
			want[c] = true
		}
		if err := plan.Store.WriteTrustAnchors(filepath.Clean(path), func(c *x509.Certificate) bool { return want[c] }); err != nil {
			return err
		}
	}
	return nil
}

// makeDir creates dir if it does not exist; its parent must.
func makeDir(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return nil
	}
	return err
}

// Expiry reports every known certificate expiring within warn, and those
// already expired.
func (plan *Plan) Expiry(now time.Time, warn time.Duration) []certs.ExpiryReport {
	var out []certs.ExpiryReport
	for _, r := range certs.Expiry(plan.Known, now, warn) {
		if r.Status != certs.ExpiryOK {
			out = append(out, r)
		}
	}
	return out
}
