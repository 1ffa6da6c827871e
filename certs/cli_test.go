package certs

import (
	"bytes"
	"crypto/x509"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// runCLI runs "tlsgate certs ARGS" at testNow.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, now: func() time.Time { return testNow }}
	code = e.main(args)
	return code, out.String(), errb.String()
}

// cliCase is one invocation and what to expect of it.
type cliCase struct {
	name    string
	args    []string
	stdin   string
	code    int
	stdout  []string // substrings
	stderr  []string // substrings
	noOut   bool     // stdout must be empty
	prepare func(t *testing.T)
}

func (tc cliCase) run(t *testing.T) {
	t.Helper()
	if tc.prepare != nil {
		tc.prepare(t)
	}
	code, out, errs := runCLI(t, tc.stdin, tc.args...)
	if code != tc.code {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errs)
	}
	for _, w := range tc.stdout {
		if !strings.Contains(out, w) {
			t.Errorf("stdout lacks %q:\n%s", w, out)
		}
	}
	for _, w := range tc.stderr {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errs)
		}
	}
	if tc.noOut && out != "" {
		t.Errorf("unexpected stdout:\n%s", out)
	}
}

func TestCLIHelp(t *testing.T) {
	for name, c := range commands {
		t.Run(name, func(t *testing.T) {
			var sets []*flag.FlagSet
			onNewFlagSet = func(fs *flag.FlagSet) { sets = append(sets, fs) }
			defer func() { onNewFlagSet = nil }()
			for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {name, "x", "-help"}, {"help", name}} {
				code, out, errs := runCLI(t, "", args...)
				if code != 0 || errs != "" || out != c.usage {
					t.Errorf("%v: exit %d, stderr %q, stdout is not the usage", args, code, errs)
				}
			}
			if !strings.HasPrefix(c.usage, "usage: tlsgate certs "+name) {
				t.Errorf("usage starts with %q", c.usage[:30])
			}
			var flags []*flag.Flag
			for _, fs := range sets {
				fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
			}
			if len(flags) == 0 && name != "show" {
				t.Error("no flags seen")
			}
			for _, f := range flags {
				if !strings.Contains(c.usage, "--"+f.Name) {
					t.Errorf("flag --%s is not documented in the usage", f.Name)
				}
			}
		})
	}
	for _, tc := range []cliCase{
		{name: "no arguments", code: 2, stderr: []string{"usage: tlsgate certs COMMAND", "Exit status"}, noOut: true},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"Commands:", "pfx2pem", "store"}},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: []string{"Commands:"}},
		{name: "help unknown", args: []string{"help", "frob"}, code: 2, stderr: []string{`unknown command "frob"`}},
		{name: "unknown command", args: []string{"frob"}, code: 2, stderr: []string{`unknown command "frob"`}},
		{name: "unknown flag", args: []string{"show", "--frob", "x"}, code: 2, stderr: []string{"tlsgate certs show: flag provided but not defined: -frob", `Run "tlsgate certs show -h" for help.`}},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestMainUsesRealStreams(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"--help"}, strings.NewReader(""), &out, &errb); code != 0 || !strings.Contains(out.String(), "usage:") {
		t.Errorf("exit %d, stdout %q", code, out.String())
	}
}

func TestCLIKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "mx.key")
	for _, tc := range []cliCase{
		{name: "create", args: []string{"key", "--type", "p256", key}, stdout: []string{"wrote ECDSA P-256 private key to " + key + " (mode 0600)"}},
		{name: "no overwrite", args: []string{"key", key}, code: 2, stderr: []string{"already exists, not overwriting it (use --force"}, noOut: true},
		{name: "force, flags after the file", args: []string{"key", key, "--force", "--type", "rsa2048"}, stdout: []string{"RSA 2048 bits"}},
		{name: "1024 bits refused", args: []string{"key", "--type", "rsa1024", filepath.Join(dir, "weak.key")}, code: 2, stderr: []string{"RSA 1024 bits is refused"}},
		{name: "no file", args: []string{"key"}, code: 2, stderr: []string{"give exactly one KEYFILE"}},
		{name: "stdout refused", args: []string{"key", "-"}, code: 2, stderr: []string{"not standard output"}},
		{name: "two files", args: []string{"key", "a", "b"}, code: 2},
	} {
		t.Run(tc.name, tc.run)
	}
	fi, err := os.Stat(key)
	noErr(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, "weak.key")); err == nil {
		t.Error("weak key written")
	}
}

func TestCLICSR(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey("p256")
	keyFile := filepath.Join(dir, "mx.key")
	noErr(t, WriteKey(keyFile, k, false))
	openKey := writeFile(t, dir, "open.key", readFileT(t, keyFile), 0o644)
	csrFile := filepath.Join(dir, "mx.csr")
	for _, tc := range []cliCase{
		{name: "to file", args: []string{"csr", "--key", keyFile, "--cn", "mx.example.net", "--san", "mail.example.net,smtp.example.net", "--san", "mx2.example.net",
			"--org", "Example GmbH", "--country", "DE", "--state", "Bayern", "--locality", "München", "--unit", "IT", "--email", "postmaster@example.net", "--out", csrFile},
			stdout: []string{"wrote certificate signing request to " + csrFile,
				"subject:    emailAddress=postmaster@example.net,CN=mx.example.net,OU=IT,O=Example GmbH,L=München,ST=Bayern,C=DE",
				"DNS names:  mx.example.net, mail.example.net, smtp.example.net, mx2.example.net", "SHA-256:    "}},
		{name: "no overwrite", args: []string{"csr", "--key", keyFile, "--cn", "mx.example.net", "--out", csrFile}, code: 2, stderr: []string{"already exists"}},
		{name: "to stdout, summary to stderr", args: []string{"csr", "--key", keyFile, "--subj", "/C=DE/O=Example/CN=mx.example.net"},
			stdout: []string{"-----BEGIN CERTIFICATE REQUEST-----"}, stderr: []string{"subject:    CN=mx.example.net,O=Example,C=DE"}},
		{name: "subj and option agree", args: []string{"csr", "--key", keyFile, "--subj", "/CN=mx.example.net", "--cn", "mx.example.net", "--org", "X"},
			stderr: []string{"CN=mx.example.net,O=X"}},
		{name: "subj and option conflict", args: []string{"csr", "--key", keyFile, "--subj", "/CN=a.example.net", "--cn", "b.example.net"}, code: 2,
			stderr: []string{`CN is given both in --subj ("a.example.net") and as an option ("b.example.net")`}},
		{name: "key readable by others", args: []string{"csr", "--key", openKey, "--cn", "mx.example.net"}, code: 2, stderr: []string{"chmod 600 " + openKey}, noOut: true},
		{name: "missing key option", args: []string{"csr", "--cn", "mx.example.net"}, code: 2, stderr: []string{"--key KEYFILE is required"}},
		{name: "missing key file", args: []string{"csr", "--key", filepath.Join(dir, "none.key"), "--cn", "mx.example.net"}, code: 2, stderr: []string{"no such file"}},
		{name: "no name", args: []string{"csr", "--key", keyFile}, code: 2, stderr: []string{"give the server's host name with --cn"}},
		{name: "bad country", args: []string{"csr", "--key", keyFile, "--cn", "mx.example.net", "--country", "Germany"}, code: 2, stderr: []string{"two-letter"}},
		{name: "stray argument", args: []string{"csr", "--key", keyFile, "--cn", "mx.example.net", "out.csr"}, code: 2, stderr: []string{`unexpected argument "out.csr"`}},
	} {
		t.Run(tc.name, tc.run)
	}
	sum, err := SummarizeCSR(readFileT(t, csrFile))
	noErr(t, err)
	if len(sum.DNSNames) != 4 {
		t.Errorf("CSR names %v", sum.DNSNames)
	}
}

func TestCLIPFX2PEM(t *testing.T) {
	root := mkCA(t, "PFX Root", nil)
	inter := mkCA(t, "PFX Issuing CA", &root)
	leaf := mkCert(t, certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}}, &inter)
	other := mkCert(t, certSpec{cn: "other.example.net"}, &inter)
	enc := func(cert *x509.Certificate, cas []*x509.Certificate) []byte {
		b, err := pkcs12.Modern.Encode(leaf.key, cert, cas, "pfx-pass")
		noErr(t, err)
		return b
	}
	dir := t.TempDir()
	full := writeFile(t, dir, "mx.pfx", enc(leaf.cert, []*x509.Certificate{root.cert, inter.cert}), 0o600)
	bare := writeFile(t, dir, "bare.p12", enc(leaf.cert, nil), 0o600)
	mismatch := writeFile(t, dir, "mismatch.pfx", enc(other.cert, nil), 0o600)
	pwFile := writeFile(t, dir, "pw", []byte("pfx-pass\n"), 0o600)
	t.Setenv("PFX_PASS", "pfx-pass")
	t.Setenv("PFX_WRONG", "pfx-Pass")
	out := filepath.Join(dir, "out", "mx")
	os.Mkdir(filepath.Dir(out), 0o755)
	store := filepath.Join(dir, "store")
	os.Mkdir(store, 0o755)
	newStore := filepath.Join(dir, "new", "ca") // pfx2pem creates it, like "store add"

	for _, tc := range []cliCase{
		{name: "with chain, default prefix", args: []string{"pfx2pem", "--password-env", "PFX_PASS", full},
			stdout: []string{"wrote " + filepath.Join(dir, "mx.key") + ": private key (ECDSA P-256)", filepath.Join(dir, "mx.crt"),
				filepath.Join(dir, "mx.chain.crt") + ": 2 CA certificate(s)", filepath.Join(dir, "mx.fullchain.crt"),
				"subject:            CN=mx.example.net", "SHA-256 cert:       " + FingerprintCert(leaf.cert)}},
		{name: "outputs exist", args: []string{"pfx2pem", "--password-env", "PFX_PASS", full}, code: 2, stderr: []string{"mx.key already exists"}, noOut: true},
		{name: "force", args: []string{"pfx2pem", full, "--password-file", pwFile, "--force"}, stdout: []string{"mx.fullchain.crt"}},
		{name: "password from stdin, --out", args: []string{"pfx2pem", "--password-file", "-", "--out", out, bare}, stdin: "pfx-pass\n",
			stdout: []string{out + ".key", "the file had no CA certificates"}},
		{name: "wrong password", args: []string{"pfx2pem", "--password-env", "PFX_WRONG", "--out", filepath.Join(dir, "w"), full}, code: 2,
			stderr: []string{"tlsgate certs: wrong PKCS#12 password"}},
		{name: "unset variable", args: []string{"pfx2pem", "--password-env", "PFX_NOPE_XYZ", "--out", filepath.Join(dir, "w"), full}, code: 2,
			stderr: []string{"PFX_NOPE_XYZ (named by --password-env) is not set"}},
		{name: "key/cert mismatch", args: []string{"pfx2pem", "--password-env", "PFX_PASS", mismatch}, code: 2,
			stderr: []string{"does not belong to the certificate CN=other.example.net"}},
		{name: "both password options", args: []string{"pfx2pem", "--password-env", "A", "--password-file", "B", full}, code: 2, stderr: []string{"not both"}},
		{name: "stdin twice", args: []string{"pfx2pem", "--password-file", "-", "-"}, code: 2, stderr: []string{"cannot hold both"}},
		{name: "stdin needs --out", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "-"}, code: 2, stderr: []string{"--out PREFIX is required"}},
		{name: "missing file", args: []string{"pfx2pem", "--password-env", "PFX_PASS", filepath.Join(dir, "none.pfx")}, code: 2, stderr: []string{"no such file"}},
		{name: "no file", args: []string{"pfx2pem"}, code: 2, stderr: []string{"give exactly one PFXFILE"}},
		{name: "store our signing CAs", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--out", filepath.Join(dir, "s"), "--store", store, full},
			stdout: []string{"added to CA store " + store + ": CN=PFX Root", "added to CA store " + store + ": CN=PFX Issuing CA"}},
		{name: "store without CAs", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--out", filepath.Join(dir, "b2"), "--store", store, bare}, code: 2,
			stderr: []string{"holds no CA certificate of the chain of CN=mx.example.net to add; nothing was written"}, noOut: true},
		{name: "store directory created", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--out", filepath.Join(dir, "n"), "--store", newStore, full},
			stdout: []string{"wrote " + filepath.Join(dir, "n.fullchain.crt"), "added to CA store " + newStore + ": CN=PFX Root",
				"added to CA store " + newStore + ": CN=PFX Issuing CA", "subject:            CN=mx.example.net"}},
		{name: "store is a file", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--out", filepath.Join(dir, "f"), "--store", pwFile, full}, code: 2,
			stderr: []string{"create CA store", "nothing was written"}, noOut: true},
		{name: "output directory missing", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--out", filepath.Join(dir, "nodir", "mx"), full}, code: 2,
			stderr: []string{"output directory " + filepath.Join(dir, "nodir") + " does not exist"}},
	} {
		t.Run(tc.name, tc.run)
	}

	modes := map[string]os.FileMode{"mx.key": 0o600, "mx.crt": 0o644, "mx.chain.crt": 0o644, "mx.fullchain.crt": 0o644}
	for f, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, f))
		noErr(t, err)
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", f, fi.Mode().Perm(), want)
		}
	}
	noErr(t, CheckKeyFile(filepath.Join(dir, "mx.key")))
	fullchain, err := ParseCertificates(readFileT(t, filepath.Join(dir, "mx.fullchain.crt")))
	noErr(t, err)
	if len(fullchain) != 3 || !fullchain[0].Equal(leaf.cert) || !fullchain[1].Equal(inter.cert) || !fullchain[2].Equal(root.cert) {
		t.Errorf("fullchain has %d certs in the wrong order", len(fullchain))
	}
	if _, err := os.Stat(out + ".chain.crt"); err == nil {
		t.Error("empty chain file written")
	}
	if fi, err := os.Stat(filepath.Join(dir, "new", "ca")); err != nil || !fi.IsDir() {
		t.Errorf("store directory not created: %v", err)
	} else if st, err := OpenStore(filepath.Join(dir, "new", "ca")); err != nil || len(st.List()) != 2 {
		t.Errorf("new store: %v", err)
	}
	for _, f := range []string{"w.key", "w.crt", "mismatch.key", "b2.key", "b2.crt", "f.key", "f.fullchain.crt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s written despite the error", f)
		}
	}
}

func TestCLIShow(t *testing.T) {
	dir := t.TempDir()
	root := mkCA(t, "Show Root", nil)
	leaf := mkCert(t, certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}, notAfter: testNow.Add(10 * 24 * time.Hour)}, &root)
	expired := mkCert(t, certSpec{cn: "old.example.net", notBefore: testNow.AddDate(-2, 0, 0), notAfter: testNow.AddDate(-1, 0, 0)}, &root)
	leafFile := writeFile(t, dir, "mx.pem", leaf.pem(), 0o644)
	chainFile := writeFile(t, dir, "chain.pem", append(leaf.pem(), root.pem()...), 0o644)
	derFile := writeFile(t, dir, "mx.cer", leaf.cert.Raw, 0o644)
	k, _ := GenerateKey("p256")
	csr, _ := NewCSR(k, Subject{CN: "mx.example.net"}, nil)
	csrFile := writeFile(t, dir, "mx.csr", csr, 0o644)
	sum, _ := SummarizeCSR(csr)
	for _, tc := range []cliCase{
		{name: "one", args: []string{"show", leafFile}, stdout: []string{leafFile + ":\n", "subject:            CN=mx.example.net", "issuer:             CN=Show Root,O=Test PKI",
			"(10 days left)", "DNS names:          mx.example.net", "purposes:           TLS server, TLS client",
			"SHA-256 cert:       " + FingerprintCert(leaf.cert), "SHA-256 public key: " + FingerprintSPKI(leaf.cert)}},
		{name: "chain", args: []string{"show", chainFile}, stdout: []string{"certificate 1 of 2", "certificate 2 of 2", "CA:                 yes (self-signed)"}},
		{name: "DER and stdin", args: []string{"show", derFile, "-"}, stdin: string(expired.pem()), stdout: []string{derFile + ":", "standard input:", "EXPIRED 365 days ago"}},
		{name: "CSR", args: []string{"show", csrFile}, stdout: []string{"certificate signing request", "SHA-256:    " + sum.SHA256}},
		{name: "missing file does not stop the others", args: []string{"show", filepath.Join(dir, "none.pem"), leafFile}, code: 2,
			stdout: []string{"CN=mx.example.net"}, stderr: []string{"no such file"}},
		{name: "not a certificate", args: []string{"show", csrFile + "x"}, code: 2},
		{name: "garbage", args: []string{"show", "-"}, stdin: "hello", code: 2, stderr: []string{"neither PEM nor a DER certificate: ", "(in standard input)"}},
		{name: "no file", args: []string{"show"}, code: 2, stderr: []string{"give at least one"}},
		{name: "PKCS#12", args: []string{"show", writeFile(t, dir, "x.pfx", []byte{0x30, 0x03, 2, 1, 3}, 0o600)}, code: 2, stderr: []string{"run \"tlsgate certs pfx2pem " + filepath.Join(dir, "x.pfx") + "\" first"}},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestCLIVerify(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t)
	storeDir := pki.store.Dir()
	bundle := filepath.Join(dir, "bundle.pem")
	noErr(t, pki.store.WriteBundle(bundle))
	good := mkCert(t, certSpec{cn: "mx.partner.example", dns: []string{"mx.partner.example"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &pki.inter)
	goodFile := writeFile(t, dir, "good.pem", append(good.pem(), pki.inter.pem()...), 0o644)
	leafOnly := writeFile(t, dir, "leafonly.pem", good.pem(), 0o644)
	expired := mkCert(t, certSpec{cn: "old.partner.example", notBefore: testNow.AddDate(-1, 0, 0), notAfter: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}, &pki.root)
	expiredFile := writeFile(t, dir, "expired.pem", expired.pem(), 0o644)
	for _, tc := range []cliCase{
		{name: "ok", args: []string{"verify", "--ca", storeDir, "--name", "mx.partner.example", goodFile},
			stdout: []string{goodFile + ": OK", "issued by:    CN=Test Issuing CA,O=Test PKI", "issued by:    CN=Test Root CA,O=Test PKI", "name:         mx.partner.example matches", "purpose:      TLS server"}},
		{name: "flags after the file, bundle as CA", args: []string{"verify", goodFile, "--store", bundle}, stdout: []string{": OK", "name:         not checked"}},
		{name: "expired", args: []string{"verify", "--ca", storeDir, expiredFile}, code: 1,
			stdout: []string{expiredFile + ": FAILED: the certificate CN=old.partner.example expired on 2026-05-01 00:00:00 UTC (31 days ago)"}},
		{name: "expired, checked in the past", args: []string{"verify", "--ca", storeDir, "--at", "2026-04-01", expiredFile}, stdout: []string{": OK"}},
		{name: "name mismatch", args: []string{"verify", "--ca", storeDir, "--name", "mx.other.example", goodFile}, code: 1,
			stdout: []string{"FAILED: name mismatch: the certificate is for [mx.partner.example], not mx.other.example"}},
		{name: "wrong purpose", args: []string{"verify", "--ca", storeDir, "--purpose", "client", goodFile}, code: 1,
			stdout: []string{"FAILED: wrong purpose: the certificate CN=mx.partner.example is only for TLS server"}},
		{name: "unknown authority", args: []string{"verify", "--ca", storeDir, leafOnly}, code: 1,
			stdout: []string{`FAILED: unknown authority "CN=Test Issuing CA,O=Test PKI"`}},
		{name: "no --ca", args: []string{"verify", goodFile}, code: 2, stderr: []string{"--ca STORE is required"}},
		{name: "bad purpose", args: []string{"verify", "--ca", storeDir, "--purpose", "smime", goodFile}, code: 2, stderr: []string{"unknown purpose"}},
		{name: "bad time", args: []string{"verify", "--ca", storeDir, "--at", "yesterday", goodFile}, code: 2, stderr: []string{"cannot read time"}},
		{name: "missing cert", args: []string{"verify", "--ca", storeDir, filepath.Join(dir, "none.pem")}, code: 2, stderr: []string{"no such file"}},
		{name: "missing store", args: []string{"verify", "--ca", filepath.Join(dir, "nostore"), goodFile}, code: 2, stderr: []string{"does not exist"}},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestCLIStore(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	root := mkCA(t, "Partner Root CA", nil)
	soon := mkCert(t, certSpec{cn: "Expiring CA", ca: true, notAfter: testNow.Add(5 * 24 * time.Hour)}, nil)
	leaf := mkCert(t, certSpec{cn: "mx.partner.example"}, &root)
	rootFile := writeFile(t, dir, "root.pem", root.pem(), 0o644)
	soonFile := writeFile(t, dir, "soon.der", soon.cert.Raw, 0o644)
	leafFile := writeFile(t, dir, "leaf.pem", leaf.pem(), 0o644)
	bundle := filepath.Join(dir, "ca-bundle.pem")
	for _, tc := range []cliCase{
		{name: "list before the store exists", args: []string{"store", "list", "--store", store}, code: 2, stderr: []string{"does not exist (create it with"}},
		{name: "add creates the store", args: []string{"store", "add", "--store", store, rootFile, soonFile},
			stdout: []string{"added CN=Partner Root CA,O=Test PKI as Partner_Root_CA-", "added CN=Expiring CA as Expiring_CA-"}},
		{name: "add again", args: []string{"store", "--store", store, "add", rootFile}, stdout: []string{"1 certificate(s) from " + rootFile + " already in the store"}},
		{name: "add a server certificate", args: []string{"store", "add", "--store", store, leafFile}, code: 2,
			stderr: []string{"CN=mx.partner.example is not a CA certificate (basicConstraints CA:FALSE", "pin its fingerprint", "(in " + leafFile + ")"}},
		{name: "list", args: []string{"store", "list", "--store", store},
			stdout: []string{"subject:  CN=Partner Root CA,O=Test PKI", "SHA-256:  " + FingerprintCert(root.cert), "subject:  CN=Expiring CA", "(expires in 5 days)"}},
		{name: "bundle", args: []string{"store", "bundle", "--store", store, "--out", bundle}, stdout: []string{"wrote 2 CA certificate(s) to " + bundle}},
		{name: "bundle needs --out", args: []string{"store", "bundle", "--store", store}, code: 2, stderr: []string{"bundle needs --out FILE"}},
		{name: "--out with list", args: []string{"store", "list", "--store", store, "--out", "x"}, code: 2, stderr: []string{"only used with bundle"}},
		{name: "remove by fingerprint", args: []string{"store", "remove", "--store", store, strings.ToLower(FingerprintCert(soon.cert))}, stdout: []string{"removed CN=Expiring CA (Expiring_CA-"}},
		{name: "remove unknown", args: []string{"store", "remove", "--store", store, "nope"}, code: 2, stderr: []string{`"nope" is neither a file in the CA store`}},
		{name: "remove without argument", args: []string{"store", "remove", "--store", store}, code: 2},
		{name: "no --store", args: []string{"store", "list"}, code: 2, stderr: []string{"--store DIR is required"}},
		{name: "no command", args: []string{"store", "--store", store}, code: 2, stderr: []string{"give a command"}},
		{name: "unknown command", args: []string{"store", "--store", store, "purge"}, code: 2, stderr: []string{`unknown command "purge"`}},
		{name: "list takes no arguments", args: []string{"store", "--store", store, "list", "x"}, code: 2},
	} {
		t.Run(tc.name, tc.run)
	}
	cs, err := ParseCertificates(readFileT(t, bundle))
	noErr(t, err)
	if len(cs) != 2 {
		t.Errorf("bundle holds %d certificates", len(cs))
	}
	code, out, _ := runCLI(t, "", "store", "list", "--store", store)
	if code != 0 || strings.Contains(out, "Expiring CA") {
		t.Errorf("after remove: %s", out)
	}
	// Empty store.
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	cliCase{name: "empty", args: []string{"store", "list", "--store", empty}, stdout: []string{"is empty"}}.run(t)
	// Warnings for bad files go to stderr.
	writeFile(t, empty, "leaf.pem", leaf.pem(), 0o644)
	cliCase{name: "warn", args: []string{"store", "list", "--store", empty}, stderr: []string{"warning: " + filepath.Join(empty, "leaf.pem") + ": skipped"}}.run(t)
}

func TestParseTime(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2026-04-01":                time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC),
		"2026-04-01 10:30":          time.Date(2026, 4, 1, 10, 30, 0, 0, time.UTC),
		"2026-04-01T10:30:05":       time.Date(2026, 4, 1, 10, 30, 5, 0, time.UTC),
		"2026-04-01T10:30:05+02:00": time.Date(2026, 4, 1, 8, 30, 5, 0, time.UTC),
	} {
		got, err := parseTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseTime("soon"); err == nil {
		t.Error("no error")
	}
}
