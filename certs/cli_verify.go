package certs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

const verifyUsage = `usage: tlsgate certs verify --ca STORE [--name HOST] [--purpose server|client]
                            [--at TIME] CERTFILE

Check the certificate in CERTFILE the way a mail server checks its peer's:
validity dates, the chain to a CA in STORE, the host name, and the purpose.
Further certificates in CERTFILE after the first are used as intermediate
CAs, as a server would send them along.

Options:
  --ca STORE         the CA store directory (see "tlsgate certs store"), or
                     a PEM bundle file such as the one in smtp_tls_CAfile;
                     --store STORE is the same
  --name HOST        the host name the certificate must be valid for: a
                     partner's MX host name, or your own server's name.
                     Without it, names are not checked.
  --purpose server   (default) a certificate an SMTP server presents: what
                     Postfix checks when sending to a partner
  --purpose client   a certificate an SMTP client presents to your server
                     (smtpd_tls_ask_ccert)
  --at TIME          check as of TIME (2006-01-02, "2006-01-02 15:04" UTC,
                     or RFC 3339) instead of now

Exit status: 0 the certificate is acceptable, 1 it is not (the reason is
printed), 2 the files cannot be read.

Example:
  tlsgate certs verify --ca /etc/tlsgate/ca --name mx.partner.example partner.pem
`

func runVerify(e *env, args []string) int {
	fs := newFlagSet("verify")
	ca := fs.String("ca", "", "")
	fs.StringVar(ca, "store", "", "")
	name := fs.String("name", "", "")
	purposeStr := fs.String("purpose", "server", "")
	at := fs.String("at", "", "")
	pos, code, ok := e.parse(fs, verifyUsage, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return e.usageError(fs.Name(), "give exactly one CERTFILE")
	}
	if *ca == "" {
		return e.usageError(fs.Name(), "--ca STORE is required (a CA store directory or a PEM bundle file)")
	}
	purpose, err := ParsePurpose(*purposeStr)
	if err != nil {
		return e.usageError(fs.Name(), strings.TrimPrefix(err.Error(), "certs: "))
	}
	now := e.now()
	if *at != "" {
		if now, err = parseTime(*at); err != nil {
			return e.usageError(fs.Name(), err.Error())
		}
	}
	store, err := openStoreOrBundle(*ca)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	e.warnStore(store)
	data, err := e.readInput(pos[0])
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	cs, err := ParseCertificates(data)
	if err != nil {
		return e.fail(ExitUsage, fmt.Errorf("%w (in %s)", err, pos[0]))
	}
	chain, err := Verify(store, cs[0], VerifyOptions{Name: *name, Purpose: purpose, Now: now, Intermediates: cs[1:]})
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			fmt.Fprintf(e.stdout, "%s: FAILED: %s\n", pos[0], certid.Printable(ve.Detail))
			return ExitFailed
		}
		return e.fail(ExitUsage, err)
	}
	fmt.Fprintf(e.stdout, "%s: OK\n", pos[0])
	fmt.Fprintf(e.stdout, "  certificate:  %s\n", certid.Printable(certid.RFC4514(cs[0].RawSubject)))
	for _, c := range chain[1:] {
		fmt.Fprintf(e.stdout, "  issued by:    %s\n", certid.Printable(certid.RFC4514(c.RawSubject)))
	}
	fmt.Fprintf(e.stdout, "  trusted via:  CA store %s\n", store)
	fmt.Fprintf(e.stdout, "  valid until:  %s%s\n", cs[0].NotAfter.UTC().Format(timeLayout), remaining(cs[0].NotAfter, now))
	if *name != "" {
		fmt.Fprintf(e.stdout, "  name:         %s matches\n", *name)
	} else {
		fmt.Fprintf(e.stdout, "  name:         not checked (no --name)\n")
	}
	fmt.Fprintf(e.stdout, "  purpose:      %s\n", purpose.words())
	return ExitOK
}

// openStoreOrBundle opens a store directory, or a PEM bundle file read-only.
func openStoreOrBundle(path string) (*Store, error) {
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		return LoadBundle(path)
	}
	return OpenStore(path)
}
