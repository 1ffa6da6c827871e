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
--force is given.

The password is asked for on the terminal (not echoed), unless it comes from:
  --password-file FILE  the first line of FILE ("-" reads standard input)
  --password-env VAR    the environment variable VAR
It is never accepted on the command line, where other users could read it.

Options:
  --out PREFIX          write PREFIX.key, PREFIX.crt, ... (see above)
  --force               replace existing output files
  --store DIR           also add the CA certificates that came with it (our
                        own signing CA) to tlsgate's CA store, so that the
                        MTA trusts peers whose certificates it signed; DIR
                        is created if missing, as "store add" does

Example:
  tlsgate certs pfx2pem --out /etc/postfix/tls/mx mx.example.net.pfx
`

func runPFX(e *env, args []string) int {
	fset := newFlagSet("pfx2pem")
	pwFile := fset.String("password-file", "", "")
	pwEnv := fset.String("password-env", "", "")
	out := fset.String("out", "", "")
	force := fset.Bool("force", false, "")
	storeDir := fset.String("store", "", "")
	pos, code, ok := e.parse(fset, pfxUsage, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return e.usageError(fset.Name(), "give exactly one PFXFILE")
	}
	if *pwFile != "" && *pwEnv != "" {
		return e.usageError(fset.Name(), "give either --password-file or --password-env, not both")
	}
	in := pos[0]
	if in == "-" && *pwFile == "-" {
		return e.usageError(fset.Name(), "standard input cannot hold both the PKCS#12 file and the password")
	}
	data, err := e.readInput(in)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	prefix := *out
	if prefix == "" {
		if in == "-" {
			return e.usageError(fset.Name(), "--out PREFIX is required when reading standard input")
		}
		prefix = strings.TrimSuffix(in, filepath.Ext(in))
	}
	if fi, err := os.Stat(filepath.Dir(prefix)); err != nil || !fi.IsDir() {
		return e.fail(ExitUsage, fmt.Errorf("certs: output directory %s does not exist", filepath.Dir(prefix)))
	}
	files := pfxOutputs(prefix)
	if !*force {
		for _, f := range files {
			if _, err := os.Lstat(f); err == nil {
				return e.fail(ExitUsage, existsError(f))
			}
		}
	}
	pw, err := PasswordSource{File: *pwFile, Env: *pwEnv, Stdin: e.stdin,
		Prompt: fmt.Sprintf("Password for %s: ", filepath.Base(in))}.Read()
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	b, err := PFX2PEM(data, pw)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	// Everything --store needs is settled before any file is written, so
	// that a store problem leaves nothing half done. Like "store add", a
	// missing store directory is created.
	var st *Store
	var storeCAs []*x509.Certificate
	if *storeDir != "" {
		for _, ca := range b.CACerts {
			if ca.IsCA {
				storeCAs = append(storeCAs, ca)
			}
		}
		if len(storeCAs) == 0 {
			return e.fail(ExitUsage, fmt.Errorf("certs: --store: %s holds no CA certificate to add; nothing was written", in))
		}
		for _, ca := range storeCAs {
			if err := checkCA(ca); err != nil {
				return e.fail(ExitUsage, fmt.Errorf("certs: --store: %w; nothing was written", err))
			}
		}
		if err := os.MkdirAll(*storeDir, 0o755); err != nil {
			return e.fail(ExitUsage, fmt.Errorf("certs: create CA store: %w; nothing was written", err))
		}
		if st, err = e.openStore(*storeDir); err != nil {
			return e.fail(ExitUsage, fmt.Errorf("%w; nothing was written", err))
		}
	}
	type output struct {
		path string
		data []byte
		perm fs.FileMode
		what string
	}
	outs := []output{
		{files[0], b.Key, 0o600, "private key (" + DescribeKey(b.PrivateKey.Public()) + ")"},
		{files[1], b.Cert, 0o644, "certificate " + certid.RFC4514(b.Leaf.RawSubject)},
	}
	if b.Chain != nil {
		outs = append(outs,
			output{files[2], b.Chain, 0o644, fmt.Sprintf("%d CA certificate(s)", len(b.CACerts))},
			output{files[3], b.FullChain(), 0o644, "certificate and CA certificates"})
	} else {
		outs = append(outs, output{files[3], b.FullChain(), 0o644, "certificate (the file had no CA certificates)"})
	}
	for _, o := range outs {
		if err := writeFileAtomic(o.path, o.data, o.perm, *force); err != nil {
			return e.fail(ExitUsage, err)
		}
		fmt.Fprintf(e.stdout, "wrote %s: %s\n", o.path, o.what)
	}
	if b.Chain == nil {
		fmt.Fprintln(e.stdout, "note: the file had no CA certificates; partners may need the intermediate certificate from your CA in the fullchain file")
	}
	if st != nil {
		for _, ca := range storeCAs {
			added, err := st.Add(EncodeCertificatesPEM(ca))
			if err != nil {
				return e.fail(ExitUsage, fmt.Errorf("%w (the PEM files above were written)", err))
			}
			for _, en := range added {
				fmt.Fprintf(e.stdout, "added to CA store %s: %s (expires %s)\n", *storeDir, en.Subject, en.NotAfter.UTC().Format("2006-01-02"))
			}
		}
	}
	info := Describe(b.Leaf)
	fmt.Fprintf(e.stdout, "\n%s", info.Format("  ", e.now()))
	if e.now().After(b.Leaf.NotAfter) {
		fmt.Fprintln(e.stdout, "warning: this certificate has expired; the MTA will not be able to use it")
	}
	return ExitOK
}

// pfxOutputs names the files pfx2pem writes: key, cert, chain, fullchain.
func pfxOutputs(prefix string) []string {
	return []string{prefix + ".key", prefix + ".crt", prefix + ".chain.crt", prefix + ".fullchain.crt"}
}
