package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// safeDir is a directory for files Sendmail must accept: not below /tmp
// (Sendmail refuses a TLS file below a directory others may write to),
// but in the package directory, which the test removes.
func safeDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(".", ".test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(abs, 0o755)
	return abs
}

// TestCheckSendmailFiles: with mta = "sendmail", check refuses the CA
// bundle layouts Sendmail refuses or that do not match the CA store, and
// accepts the one root writes with "tlsgate certs store bundle".
func TestCheckSendmailFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the files must be root's")
	}
	pki := testpki.NewT(t)
	dir := safeDir(t)
	store := filepath.Join(dir, "ca")
	bundle := filepath.Join(dir, "tls", "tlsgate-ca.pem")
	os.Mkdir(filepath.Join(dir, "tls"), 0o755)
	conf := filepath.Join(dir, "tlsgate.toml")
	os.WriteFile(conf, []byte(`mta = "sendmail"
[certs]
ca_store  = "`+store+`"
ca_bundle = "`+bundle+`"
`), 0o644)
	if _, errs, code := runCLI(t, "certs", "store", "add", "--store", store, pki.CA.CertFile); code != 0 {
		t.Fatal(errs)
	}
	fix := "tlsgate certs store bundle --store " + store + " --out " + bundle
	check := func(want string) {
		t.Helper()
		out, errs, code := runCLI(t, "check", "-c", conf)
		if want == "" {
			if code != exitOK || !strings.Contains(out, "Sendmail accepts its TLS files") {
				t.Errorf("code %d\n%s%s", code, out, errs)
			}
			return
		}
		if code != exitUsage || !strings.Contains(errs, want) {
			t.Errorf("code %d, want %q in\n%s%s", code, want, out, errs)
		}
	}
	check("does not exist; Sendmail reads it as CACertFile and tlsgate does not write it for Sendmail (Sendmail uses only files root owns): write it as root: " + fix)
	if _, errs, code := runCLI(t, "certs", "store", "bundle", "--store", store, "--out", bundle); code != 0 {
		t.Fatal(errs)
	}
	check("")
	os.Chown(bundle, 65534, -1)
	check("it is owned by nobody, not root")
	os.Chown(bundle, 0, -1)
	if _, errs, code := runCLI(t, "certs", "store", "add", "--store", store, pki.OtherCA.CertFile); code != 0 {
		t.Fatal(errs)
	}
	check("lacks 1 CA(s) of the store (CN=Other CA,O=Other Org,C=DE); Sendmail trusts the bundle, not the store: write it as root: " + fix + ", then restart Sendmail")
	runCLI(t, "certs", "store", "bundle", "--store", store, "--out", bundle)
	check("")
	os.WriteFile(filepath.Join(dir, "tls", "5fc3a378.0"), nil, 0o644)
	check("holds OpenSSL hash links (5fc3a378.0): Sendmail would trust those CAs too")
	os.Remove(filepath.Join(dir, "tls", "5fc3a378.0"))
	os.Chmod(filepath.Join(dir, "tls"), 0o775)
	check("directory " + filepath.Join(dir, "tls") + " is writable by group")
}
