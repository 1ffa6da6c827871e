package certs

import (
	"fmt"
	"os"

	"github.com/tlsgate/tlsgate/internal/certid"
)

const storeUsage = `usage: tlsgate certs store list   --store DIR
       tlsgate certs store add    --store DIR CAFILE...
       tlsgate certs store remove --store DIR NAME|FINGERPRINT...
       tlsgate certs store bundle --store DIR --out FILE

tlsgate's CA store is a directory of PEM files, one CA certificate each
([certs] ca_store in tlsgate.toml). From it tlsgate writes the CA bundle your
MTA reads (Postfix smtpd_tls_CAfile and smtp_tls_CAfile, Sendmail
CACertFile) and the per-partner trust anchor files (Postfix "tafile=").

Commands:
  list      show each CA: file name, subject, expiry and SHA-256 fingerprint
  add       add the CA certificates in each CAFILE (PEM or DER). Certificates
            that are not CAs (a partner's server certificate, for example)
            are refused: pin their fingerprint instead. DIR is created if
            it does not exist.
  remove    remove CAs, named by file name (as shown by list) or by SHA-256
            fingerprint
  bundle    write all CAs, concatenated, to FILE (mode 0644)

Options:
  --store DIR   the CA store directory (required)
  --out FILE    the bundle file to write (bundle only)

After add or remove, rewrite the bundle and reload the MTA so that it sees the
change: for Postfix "systemctl reload tlsgate" (tlsgate writes [certs]
ca_bundle) and "postfix reload"; for Sendmail, which uses a CA file only when
root owns it, "tlsgate certs store bundle" as root (into [certs] ca_bundle,
e.g. /etc/mail/tls/tlsgate-ca.pem) and a restart of Sendmail.
`

func runStore(e *env, args []string) int {
	fs := newFlagSet("store")
	dir := fs.String("store", "", "")
	out := fs.String("out", "", "")
	pos, code, ok := e.parse(fs, storeUsage, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return e.usageError(fs.Name(), "give a command: list, add, remove or bundle")
	}
	action, rest := pos[0], pos[1:]
	if *dir == "" {
		return e.usageError(fs.Name(), "--store DIR is required")
	}
	if *out != "" && action != "bundle" {
		return e.usageError(fs.Name(), "--out is only used with bundle")
	}
	switch action {
	case "list":
		if len(rest) > 0 {
			return e.usageError(fs.Name(), "list takes no arguments")
		}
		return e.storeList(*dir)
	case "add":
		if len(rest) == 0 {
			return e.usageError(fs.Name(), "give at least one CAFILE to add")
		}
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return e.fail(ExitUsage, fmt.Errorf("certs: create CA store: %w", err))
		}
		return e.storeAdd(*dir, rest)
	case "remove", "rm":
		if len(rest) == 0 {
			return e.usageError(fs.Name(), "give the file name or fingerprint of the CA to remove")
		}
		return e.storeRemove(*dir, rest)
	case "bundle":
		if len(rest) > 0 {
			return e.usageError(fs.Name(), "bundle takes no arguments")
		}
		if *out == "" {
			return e.usageError(fs.Name(), "bundle needs --out FILE")
		}
		s, err := e.openStore(*dir)
		if err != nil {
			return e.fail(ExitUsage, err)
		}
		if err := s.WriteBundle(*out); err != nil {
			return e.fail(ExitUsage, err)
		}
		fmt.Fprintf(e.stdout, "wrote %d CA certificate(s) to %s\n", len(s.List()), *out)
		return ExitOK
	}
	return e.usageError(fs.Name(), fmt.Sprintf("unknown command %q: want list, add, remove or bundle", action))
}

func (e *env) openStore(dir string) (*Store, error) {
	s, err := OpenStore(dir)
	if err != nil {
		return nil, err
	}
	e.warnStore(s)
	return s, nil
}

// warnStore prints the store's warnings (files it skipped), which may
// quote a certificate, made safe for a terminal.
func (e *env) warnStore(s *Store) {
	for _, w := range s.Warnings() {
		fmt.Fprintf(e.stderr, "warning: %s\n", certid.Printable(w))
	}
}

func (e *env) storeList(dir string) int {
	s, err := e.openStore(dir)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	entries := s.List()
	if len(entries) == 0 {
		fmt.Fprintf(e.stdout, "CA store %s is empty\n", dir)
		return ExitOK
	}
	now := e.now()
	reports := make([]NamedCert, len(entries))
	for i, en := range entries {
		reports[i] = NamedCert{Name: en.File, Cert: en.Cert}
	}
	for i, r := range Expiry(reports, now, 0) {
		en := entries[i]
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		fmt.Fprintf(e.stdout, "%s\n", en.File)
		fmt.Fprintf(e.stdout, "  subject:  %s\n", certid.Printable(en.Subject))
		status := ""
		switch r.Status {
		case ExpiryExpired:
			if now.Before(en.Cert.NotBefore) {
				status = " (NOT YET VALID)"
			} else {
				status = " (EXPIRED)"
			}
		case ExpiryWarning:
			status = " (expires in " + humanDuration(r.Left) + ")"
		}
		fmt.Fprintf(e.stdout, "  expires:  %s%s\n", en.NotAfter.Format(timeLayout), status)
		fmt.Fprintf(e.stdout, "  SHA-256:  %s\n", en.Fingerprint)
	}
	return ExitOK
}

func (e *env) storeAdd(dir string, files []string) int {
	s, err := e.openStore(dir)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	rc := ExitOK
	for _, f := range files {
		data, err := e.readInput(f)
		if err != nil {
			rc = e.fail(ExitUsage, err)
			continue
		}
		cs, err := ParseCertificates(data)
		if err != nil {
			rc = e.fail(ExitUsage, fmt.Errorf("%w (in %s)", err, f))
			continue
		}
		added, err := s.Add(data)
		if err != nil {
			rc = e.fail(ExitUsage, fmt.Errorf("%w (in %s)", err, f))
			continue
		}
		for _, a := range added {
			fmt.Fprintf(e.stdout, "added %s as %s (expires %s)\n", certid.Printable(a.Subject), a.File, a.NotAfter.Format(timeLayout))
			if e.now().After(a.NotAfter) {
				fmt.Fprintf(e.stdout, "warning: %s has expired; certificates it issued will not verify\n", certid.Printable(a.Subject))
			}
		}
		if skipped := len(cs) - len(added); skipped > 0 {
			fmt.Fprintf(e.stdout, "%d certificate(s) from %s already in the store\n", skipped, f)
		}
	}
	return rc
}

func (e *env) storeRemove(dir string, names []string) int {
	s, err := e.openStore(dir)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	rc := ExitOK
	for _, n := range names {
		removed, err := s.Remove(n)
		if err != nil {
			rc = e.fail(ExitUsage, err)
			continue
		}
		if len(removed) == 0 {
			fmt.Fprintf(e.stdout, "removed %s (it held no usable CA certificate)\n", n)
		}
		for _, r := range removed {
			fmt.Fprintf(e.stdout, "removed %s (%s)\n", certid.Printable(r.Subject), r.File)
		}
	}
	return rc
}
