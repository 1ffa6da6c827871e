package certs

import (
	"fmt"
)

const csrUsage = `usage: tlsgate certs csr --key KEYFILE --cn NAME [options] [--out CSRFILE]

Create a certificate signing request (CSR) for the key in KEYFILE, to send to
your CA. The common name (--cn) is normally the host name your MX record
points to; it is also added as a subject alternative name, which is what mail
servers actually check. Give every other name this server answers to with
--san.

The CSR is written to CSRFILE (mode 0644), or to standard output without
--out. A summary (subject, names, key, SHA-256 of the CSR) is printed: check
it before sending the CSR; the SHA-256 identifies this exact CSR.

Subject (what CAs usually ask for; all optional except a name):
  --cn NAME        common name, e.g. mx.example.net
  --country CC     two-letter country code, e.g. DE
  --state NAME     state or province, spelled out, e.g. Bayern
  --locality NAME  city, e.g. München
  --org NAME       organization, e.g. "Example GmbH"
  --unit NAME      organizational unit, e.g. IT
  --email ADDR     contact address, e.g. postmaster@example.net
  --subj SUBJECT   the subject in OpenSSL style instead of the options
                   above: "/C=DE/O=Example GmbH/CN=mx.example.net"

Other options:
  --key KEYFILE    the private key (from "tlsgate certs key"); it must not
                   be readable by group or others
  --san NAME       another DNS name for the certificate; repeat the option
                   or separate names with commas
  --out CSRFILE    write the CSR to CSRFILE instead of standard output
  --force          replace CSRFILE if it exists (a regular file, or a
                   symbolic link: the link itself; nothing else)

Example:
  tlsgate certs csr --key mx.key --cn mx.example.net --san mail.example.net \
      --org "Example GmbH" --country DE --out mx.csr
`

func runCSR(e *env, args []string) int {
	fs := newFlagSet("csr")
	keyFile := fs.String("key", "", "")
	var subj Subject
	fs.StringVar(&subj.CN, "cn", "", "")
	fs.StringVar(&subj.C, "country", "", "")
	fs.StringVar(&subj.ST, "state", "", "")
	fs.StringVar(&subj.L, "locality", "", "")
	fs.StringVar(&subj.O, "org", "", "")
	fs.StringVar(&subj.OU, "unit", "", "")
	fs.StringVar(&subj.Email, "email", "", "")
	subjStr := fs.String("subj", "", "")
	var sans stringList
	fs.Var(&sans, "san", "")
	out := fs.String("out", "", "")
	force := fs.Bool("force", false, "")
	pos, code, ok := e.parse(fs, csrUsage, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return e.usageError(fs.Name(), fmt.Sprintf("unexpected argument %q (the key is given with --key, the output with --out)", pos[0]))
	}
	if *keyFile == "" {
		return e.usageError(fs.Name(), "--key KEYFILE is required (create a key with \"tlsgate certs key KEYFILE\")")
	}
	if *subjStr != "" {
		s, err := ParseSubject(*subjStr)
		if err != nil {
			return e.fail(ExitUsage, err)
		}
		if subj, err = mergeSubject(s, subj); err != nil {
			return e.fail(ExitUsage, err)
		}
	}
	if subj.CN == "" && len(sans) == 0 {
		return e.usageError(fs.Name(), "give the server's host name with --cn (and other names with --san)")
	}
	key, err := LoadKeyFile(*keyFile)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	csr, err := NewCSR(key, subj, sans)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	sum, err := SummarizeCSR(csr)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	info := e.stdout
	if *out == "" || *out == "-" {
		// The CSR itself goes to stdout; keep the summary out of the pipe.
		e.stdout.Write(csr)
		info = e.stderr
	} else {
		note := linkNote(*out)
		if err := writeFileAtomic(*out, csr, 0o644, *force); err != nil {
			return e.fail(ExitUsage, err)
		}
		fmt.Fprintf(info, "wrote certificate signing request to %s\n%s", *out, note)
	}
	fmt.Fprint(info, sum.String())
	fmt.Fprintln(info, "Check the subject and names before sending the CSR to your CA. The SHA-256 identifies")
	fmt.Fprintln(info, "this exact CSR (compare: openssl req -in CSRFILE -outform DER | sha256sum).")
	return ExitOK
}

// mergeSubject fills empty fields of a from b; a field set differently in
// both is an error.
func mergeSubject(a, b Subject) (Subject, error) {
	fields := []struct {
		name   string
		dst, v *string
	}{
		{"C", &a.C, &b.C}, {"ST", &a.ST, &b.ST}, {"L", &a.L, &b.L}, {"O", &a.O, &b.O},
		{"OU", &a.OU, &b.OU}, {"CN", &a.CN, &b.CN}, {"emailAddress", &a.Email, &b.Email},
	}
	for _, f := range fields {
		switch {
		case *f.v == "" || *f.v == *f.dst:
		case *f.dst == "":
			*f.dst = *f.v
		default:
			return a, fmt.Errorf("certs: %s is given both in --subj (%q) and as an option (%q)", f.name, *f.dst, *f.v)
		}
	}
	return a, nil
}
