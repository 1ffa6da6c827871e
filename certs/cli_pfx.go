package certs

import (
	"crypto/x509"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

const pfxUsage = `usage: tlsgate certs pfx2pem [--password-file FILE | --password-env VAR]
                             [--out PREFIX] [--force] [--store DIR] PFXFILE

Convert a PKCS#12 file (.pfx or .p12, as exported by Windows, IIS, Exchange
or an appliance) into the PEM files Postfix and Sendmail read:

  PREFIX.key            the private key, mode 0600
                        (Postfix smtpd_tls_key_file, Sendmail ServerKeyFile)
  PREFIX.crt            the server certificate alone
                        (Sendmail ServerCertFile)
  PREFIX.chain.crt      the CA certificates that came with it, if any
  PREFIX.fullchain.crt  the certificate followed by its CA certificates
                        (Postfix smtpd_tls_cert_file, smtp_tls_cert_file)

PREFIX defaults to PFXFILE without its extension. The key must belong to the
certificate, or nothing is written. Existing files are not replaced unless
--force is given, and then only regular files and symbolic links (the link
itself, not what it points to). A PFXFILE over 1 MiB, or one asking for
more than 1000000 key-derivation iterations (exporters use 2048 to 10000),
is refused before the password is used.

The password is asked for on the terminal (not echoed), unless it comes from:
  --password-file FILE  the first line of FILE ("-" reads standard input)
  --password-env VAR    the environment variable VAR
It is never accepted on the command line, where other users could read it.

Options:
  --out PREFIX          write PREFIX.key, PREFIX.crt, ... (see above)
  --force               replace existing output files
  --store DIR           also add the CA certificates of the certificate's
                        own chain (our signing CA) to tlsgate's CA store,
                        so that the MTA trusts peers whose certificates it
                        signed; other certificates in the file are listed
                        and not added. DIR is created if missing, as "store
                        add" does

Example:
  tlsgate certs pfx2pem --out /etc/postfix/tls/mx mx.example.net.pfx
`

// pfxArgs are pfx2pem's arguments.
type pfxArgs struct {
	in, prefix    string
	pwFile, pwEnv string
	storeDir      string
	force         bool
	files         []string // key, cert, chain, fullchain (pfxOutputs)
	replacedLinks []string // notes on symbolic links --force replaces
}

func runPFX(e *env, args []string) int {
	a, code, ok := e.parsePFX(args)
	if !ok {
		return code
	}
	data, err := e.readInputMax(a.in, MaxPFXSize)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	if err := a.checkOutputs(); err != nil {
		return e.fail(ExitUsage, err)
	}
	pw, err := PasswordSource{File: a.pwFile, Env: a.pwEnv, Stdin: e.stdin,
		Prompt: fmt.Sprintf("Password for %s: ", filepath.Base(a.in))}.Read()
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	b, err := PFX2PEM(data, pw)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	// Everything --store needs is settled before any file is written, so
	// that a store problem leaves nothing half done.
	var st *Store
	var add, skip []*x509.Certificate
	if a.storeDir != "" {
		if st, add, skip, err = e.pfxStore(a, b); err != nil {
			return e.fail(ExitUsage, err)
		}
	}
	if err := e.writePFX(a, b); err != nil {
		return e.fail(ExitUsage, err)
	}
	if st != nil {
		if err := e.addToStore(st, a.storeDir, add, skip); err != nil {
			return e.fail(ExitUsage, fmt.Errorf("%w (the PEM files above were written)", err))
		}
	}
	info := Describe(b.Leaf)
	fmt.Fprintf(e.stdout, "\n%s", info.Format("  ", e.now()))
	if e.now().After(b.Leaf.NotAfter) {
		fmt.Fprintln(e.stdout, "warning: this certificate has expired; the MTA will not be able to use it")
	}
	return ExitOK
}

// parsePFX reads pfx2pem's flags and arguments.
func (e *env) parsePFX(args []string) (a pfxArgs, code int, ok bool) {
	fset := newFlagSet("pfx2pem")
	fset.StringVar(&a.pwFile, "password-file", "", "")
	fset.StringVar(&a.pwEnv, "password-env", "", "")
	fset.StringVar(&a.prefix, "out", "", "")
	fset.BoolVar(&a.force, "force", false, "")
	fset.StringVar(&a.storeDir, "store", "", "")
	pos, code, ok := e.parse(fset, pfxUsage, args)
	if !ok {
		return a, code, false
	}
	usage := func(msg string) (pfxArgs, int, bool) { return a, e.usageError(fset.Name(), msg), false }
	switch {
	case len(pos) != 1:
		return usage("give exactly one PFXFILE")
	case a.pwFile != "" && a.pwEnv != "":
		return usage("give either --password-file or --password-env, not both")
	case pos[0] == "-" && a.pwFile == "-":
		return usage("standard input cannot hold both the PKCS#12 file and the password")
	case pos[0] == "-" && a.prefix == "":
		return usage("--out PREFIX is required when reading standard input")
	}
	a.in = pos[0]
	if a.prefix == "" {
		a.prefix = strings.TrimSuffix(a.in, filepath.Ext(a.in))
	}
	a.files = pfxOutputs(a.prefix)
	return a, 0, true
}

// checkOutputs makes sure the output files can be written: their directory
// exists, and none of them exists (without --force) or each is a regular
// file or a symbolic link (with --force). It notes the links --force
// replaces.
func (a *pfxArgs) checkOutputs() error {
	if fi, err := os.Stat(filepath.Dir(a.prefix)); err != nil || !fi.IsDir() {
		return fmt.Errorf("certs: output directory %s does not exist", filepath.Dir(a.prefix))
	}
	for _, f := range a.files {
		if !a.force {
			if _, err := os.Lstat(f); err == nil {
				return existsError(f)
			}
			continue
		}
		if err := checkReplaceable(f); err != nil {
			return err
		}
		if note := linkNote(f); note != "" {
			a.replacedLinks = append(a.replacedLinks, note)
		}
	}
	return nil
}

// pfxStore prepares --store: the CA certificates of the leaf's own chain
// (linked to it by issuer name and signature) are to be added, every other
// certificate in the file is skipped. A missing store directory is
// created, as "store add" does.
func (e *env) pfxStore(a pfxArgs, b *PEMBundle) (st *Store, add, skip []*x509.Certificate, err error) {
	for i, c := range b.CACerts {
		if i < b.Linked && c.IsCA {
			add = append(add, c)
		} else {
			skip = append(skip, c)
		}
	}
	if len(add) == 0 {
		return nil, nil, nil, fmt.Errorf("certs: --store: %s holds no CA certificate of the chain of %s to add%s; nothing was written",
			a.in, certid.RFC4514(b.Leaf.RawSubject), skippedList(skip))
	}
	for _, ca := range add {
		if err := checkCA(ca); err != nil {
			return nil, nil, nil, fmt.Errorf("certs: --store: %w; nothing was written", err)
		}
	}
	if err := os.MkdirAll(a.storeDir, 0o755); err != nil {
		return nil, nil, nil, fmt.Errorf("certs: create CA store: %w; nothing was written", err)
	}
	if st, err = e.openStore(a.storeDir); err != nil {
		return nil, nil, nil, fmt.Errorf("%w; nothing was written", err)
	}
	return st, add, skip, nil
}

// skippedList names the certificates --store leaves out, for an error.
func skippedList(skip []*x509.Certificate) string {
	if len(skip) == 0 {
		return ""
	}
	names := make([]string, len(skip))
	for i, c := range skip {
		names[i] = certid.RFC4514(c.RawSubject)
	}
	return " (its other certificates are not in that chain: " + strings.Join(names, "; ") + ")"
}

// writePFX writes the PEM files.
func (e *env) writePFX(a pfxArgs, b *PEMBundle) error {
	type output struct {
		path string
		data []byte
		perm fs.FileMode
		what string
	}
	outs := []output{
		{a.files[0], b.Key, 0o600, "private key (" + DescribeKey(b.PrivateKey.Public()) + ")"},
		{a.files[1], b.Cert, 0o644, "certificate " + certid.Printable(certid.RFC4514(b.Leaf.RawSubject))},
	}
	if b.Chain != nil {
		outs = append(outs,
			output{a.files[2], b.Chain, 0o644, fmt.Sprintf("%d CA certificate(s)", len(b.CACerts))},
			output{a.files[3], b.FullChain(), 0o644, "certificate and CA certificates"})
	} else {
		outs = append(outs, output{a.files[3], b.FullChain(), 0o644, "certificate (the file had no CA certificates)"})
	}
	for _, o := range outs {
		if err := writeFileAtomic(o.path, o.data, o.perm, a.force); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s: %s\n", o.path, o.what)
	}
	for _, n := range a.replacedLinks {
		fmt.Fprint(e.stdout, n)
	}
	if b.Chain == nil {
		fmt.Fprintln(e.stdout, "note: the file had no CA certificates; partners may need the intermediate certificate from your CA in the fullchain file")
	}
	return nil
}

// addToStore adds the chain's CA certificates to the store and lists those
// it skipped.
func (e *env) addToStore(st *Store, dir string, add, skip []*x509.Certificate) error {
	for _, ca := range add {
		added, err := st.Add(EncodeCertificatesPEM(ca))
		if err != nil {
			return err
		}
		for _, en := range added {
			fmt.Fprintf(e.stdout, "added to CA store %s: %s (expires %s)\n", dir, certid.Printable(en.Subject), en.NotAfter.UTC().Format("2006-01-02"))
		}
	}
	for _, c := range skip {
		why := "not in the chain of this certificate"
		if !c.IsCA {
			why = "not a CA certificate"
		}
		fmt.Fprintf(e.stdout, "not added to CA store %s: %s (%s, SHA-256 %s)\n", dir, certid.Printable(certid.RFC4514(c.RawSubject)), why, FingerprintCert(c))
	}
	return nil
}

// pfxOutputs names the files pfx2pem writes: key, cert, chain, fullchain.
func pfxOutputs(prefix string) []string {
	return []string{prefix + ".key", prefix + ".crt", prefix + ".chain.crt", prefix + ".fullchain.crt"}
}
