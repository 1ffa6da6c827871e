package certs

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
)

const showUsage = `usage: tlsgate certs show FILE...

Print, for every certificate in each FILE (PEM or DER; "-" reads standard
input): subject and issuer, serial number, validity, key type and size, the
names it is valid for, whether it is a CA, what it may be used for, and its
SHA-256 fingerprints in the form Postfix logs them:

  SHA-256 cert        fingerprint of the whole certificate; changes whenever
                      the certificate is renewed
  SHA-256 public key  fingerprint of the public key only; stays the same when
                      the certificate is renewed with the same key

Either kind can be pinned: "fingerprints" in tlsgate.toml, "match=" with the
Postfix "fingerprint" security level, or check_ccert_access. Certificate
signing requests (CSRs) are summarized too.
`

func runShow(e *env, args []string) int {
	fs := newFlagSet("show")
	pos, code, ok := e.parse(fs, showUsage, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return e.usageError(fs.Name(), "give at least one certificate FILE")
	}
	rc := ExitOK
	now := e.now()
	for i, path := range pos {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		data, err := e.readInput(path)
		if err != nil {
			rc = e.fail(ExitUsage, err)
			continue
		}
		name := path
		if path == "-" {
			name = "standard input"
		}
		if bytes.Contains(data, []byte("CERTIFICATE REQUEST-----")) {
			sum, err := SummarizeCSR(data)
			if err != nil {
				rc = e.fail(ExitUsage, fmt.Errorf("%w (in %s)", err, name))
				continue
			}
			fmt.Fprintf(e.stdout, "%s: certificate signing request\n", name)
			for _, l := range bytes.SplitAfter([]byte(sum.String()), []byte("\n")) {
				if len(l) > 0 {
					fmt.Fprintf(e.stdout, "  %s", l)
				}
			}
			continue
		}
		infos, err := Show(data)
		if err != nil {
			if ext := strings.ToLower(filepath.Ext(path)); ext == ".pfx" || ext == ".p12" {
				err = fmt.Errorf("%w (in %s); for a PKCS#12 file, run \"tlsgate certs pfx2pem %s\" first", err, name, path)
			} else {
				err = fmt.Errorf("%w (in %s)", err, name)
			}
			rc = e.fail(ExitUsage, err)
			continue
		}
		for j, info := range infos {
			if j > 0 {
				fmt.Fprintln(e.stdout)
			}
			if len(infos) > 1 {
				fmt.Fprintf(e.stdout, "%s: certificate %d of %d\n", name, j+1, len(infos))
			} else {
				fmt.Fprintf(e.stdout, "%s:\n", name)
			}
			fmt.Fprint(e.stdout, info.Format("  ", now))
		}
	}
	return rc
}
