package certs

import (
	"fmt"
	"strings"
)

const keyUsage = `usage: tlsgate certs key [--type TYPE] [--force] KEYFILE

Create a new private key for this mail server and write it to KEYFILE as
PKCS#8 PEM with mode 0600 (readable only by its owner; Postfix and Sendmail
read it as root). An existing KEYFILE is never replaced unless --force is
given.

Options:
  --type TYPE  rsa2048 (default), rsa3072, rsa4096, p256 or p384.
               rsa2048 works with every MTA and every CA. p256 and p384
               (ECDSA) are smaller and faster, but a few old partner MTAs
               cannot use them. RSA keys below 2048 bits are refused.
  --force      replace KEYFILE if it exists. The old key is lost, and the
               certificate issued for it becomes useless. Only a regular
               file or a symbolic link is replaced (the link itself, not
               what it points to); a device, directory or pipe is refused.

Example:
  tlsgate certs key /etc/postfix/tls/mx.example.net.key
  tlsgate certs csr --key /etc/postfix/tls/mx.example.net.key \
      --cn mx.example.net --org "Example GmbH" --country DE \
      --out mx.example.net.csr
`

func runKey(e *env, args []string) int {
	fs := newFlagSet("key")
	alg := fs.String("type", DefaultKeyAlgorithm, "")
	force := fs.Bool("force", false, "")
	pos, code, ok := e.parse(fs, keyUsage, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return e.usageError(fs.Name(), "give exactly one KEYFILE to write the key to")
	}
	path := pos[0]
	if strings.HasPrefix(path, "-") && path != "-" {
		return e.usageError(fs.Name(), fmt.Sprintf("unknown option %s", path))
	}
	if path == "-" {
		return e.usageError(fs.Name(), "the key must go to a file (mode 0600), not standard output")
	}
	key, err := GenerateKey(*alg)
	if err != nil {
		return e.fail(ExitUsage, err)
	}
	note := linkNote(path)
	if err := WriteKey(path, key, *force); err != nil {
		return e.fail(ExitUsage, err)
	}
	fmt.Fprintf(e.stdout, "wrote %s private key to %s (mode 0600)\n", DescribeKey(key.Public()), path)
	fmt.Fprint(e.stdout, note)
	return ExitOK
}
