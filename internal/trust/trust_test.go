package trust

import (
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/policy"
)

func setup(t *testing.T, extra string) (*policy.Policy, *testpki.PKI, string) {
	t.Helper()
	pki := testpki.NewT(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	os.MkdirAll(store, 0o755)
	for _, c := range []*testpki.Cert{pki.CA, pki.OtherCA} {
		data, _ := os.ReadFile(c.CertFile)
		if err := os.WriteFile(filepath.Join(store, c.Name+".pem"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := `mta = "postfix"
[certs]
ca_store = "` + store + `"
ca_bundle = "` + filepath.Join(dir, "bundle.pem") + `"
trust_anchor_dir = "` + filepath.Join(dir, "ta") + `"
` + extra
	p, err := policy.Parse("t.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "ta"), 0o755)
	return p, pki, dir
}

func TestAnchorsAndBundle(t *testing.T) {
	p, pki, dir := setup(t, `
[[endpoint]]
name = "by-cn"
hosts = ["a.example"]
  [endpoint.outbound]
  issuer_cn = "lab test ca"
  cn = "sink.partner.test"
[[endpoint]]
name = "by-dn"
hosts = ["b.example"]
  [endpoint.outbound]
  issuer_dn = "CN=Other CA, O=Other Org, C=DE"
`)
	plan, err := Prepare(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(p); err != nil {
		t.Fatal(err)
	}
	bundle, _ := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if got := strings.Count(string(bundle), "BEGIN CERTIFICATE"); got != 2 {
		t.Errorf("bundle has %d certificates, want 2", got)
	}
	for file, want := range map[string]*testpki.Cert{"by-cn.pem": pki.CA, "by-dn.pem": pki.OtherCA} {
		cs, err := certs.ReadCertificateFile(filepath.Join(dir, "ta", file))
		if err != nil || len(cs) != 1 || !cs[0].Equal(want.Cert) {
			t.Errorf("%s: %d certs %v, want only %s", file, len(cs), err, want.Cert.Subject)
		}
	}
}

// TestWriteMakesDirectory: a missing trust-anchor or bundle directory is
// created (the shipped example puts the trust anchors in a directory of
// their own below /var/spool/postfix/tlsgate), a missing parent is not.
func TestWriteMakesDirectory(t *testing.T) {
	p, _, dir := setup(t, `
[[endpoint]]
name = "by-cn"
hosts = ["a.example"]
  [endpoint.outbound]
  issuer_cn = "lab test ca"
`)
	os.Remove(filepath.Join(dir, "ta"))
	p.Settings.CABundle = filepath.Join(dir, "lib", "bundle.pem")
	plan, err := Prepare(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(p); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ta/by-cn.pem", "lib/bundle.pem"} {
		if _, err := certs.ReadCertificateFile(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	p.Settings.CABundle = filepath.Join(dir, "no", "such", "bundle.pem")
	if err := plan.Write(p); err == nil || !strings.Contains(err.Error(), "[certs] ca_bundle") {
		t.Errorf("missing parent: err = %v", err)
	}
}

func TestPinWithoutCA(t *testing.T) {
	p, _, _ := setup(t, `
[[endpoint]]
name = "nope"
hosts = ["a.example"]
  [endpoint.outbound]
  issuer_cn = "Unknown Issuing CA"
`)
	_, err := Prepare(p)
	if err == nil || !strings.Contains(err.Error(), `endpoint "nope" outbound pins issuer "Unknown Issuing CA", but no CA certificate`) {
		t.Fatalf("err = %v", err)
	}
}

func TestExpiry(t *testing.T) {
	p, pki, _ := setup(t, "")
	old, err := pki.Issue(testpki.Options{Name: "old", Subject: pkix.Name{CommonName: "mx.old.test"}, Signer: pki.CA,
		NotBefore: time.Now().Add(-60 * 24 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	p.Settings.ServerCert, p.Settings.ServerKey = old.CertFile, old.KeyFile
	plan, err := Prepare(p)
	if err != nil {
		t.Fatal(err)
	}
	var expired, warned int
	for _, r := range plan.Expiry(time.Now(), certs.DefaultWarnWithin) {
		switch r.Status {
		case certs.ExpiryExpired:
			expired++
			if !strings.Contains(r.Name, "server cert") {
				t.Errorf("expired: %s", r.Name)
			}
		case certs.ExpiryWarning:
			warned++
		}
	}
	if expired != 1 || warned != 2 { // the lab CAs live 30 days: inside the warning window
		t.Errorf("expired %d warned %d", expired, warned)
	}
	os.Chmod(old.KeyFile, 0o644)
	if _, err := Prepare(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable key accepted: %v", err)
	}
}

// TestSendmail: for Sendmail tlsgate does not write the CA bundle (root
// does: Sendmail uses only files root owns), and the server key is judged
// by Sendmail's rules, so that Debian's 0640 key of a group tlsgate is not
// in passes, and one others may read does not.
func TestSendmail(t *testing.T) {
	pki := testpki.NewT(t)
	// Sendmail judges every directory above a file: not below /tmp.
	dir, err := os.MkdirTemp(".", ".test-sendmail-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if dir, err = filepath.Abs(dir); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	store := filepath.Join(dir, "ca")
	os.MkdirAll(store, 0o755)
	data, _ := os.ReadFile(pki.CA.CertFile)
	if err := os.WriteFile(filepath.Join(store, "ca.pem"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "tls")
	os.Mkdir(base, 0o755)
	key := filepath.Join(base, "key.pem")
	kb, _ := os.ReadFile(pki.Server.KeyFile)
	if err := os.WriteFile(key, kb, 0o640); err != nil {
		t.Fatal(err)
	}
	conf := func(mta string) *policy.Policy {
		p, err := policy.Parse("t.toml", []byte(`mta = "`+mta+`"
[certs]
ca_store = "`+store+`"
ca_bundle = "`+filepath.Join(dir, "bundle.pem")+`"
server_cert = "`+pki.Server.CertFile+`"
server_key = "`+key+`"
`))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := conf("sendmail")
	if WritesBundle(p) || !WritesBundle(conf("postfix")) {
		t.Error("WritesBundle: want false for Sendmail, true for Postfix")
	}
	if os.Geteuid() == 0 {
		// A group the key's reader is not in (tlsgate's user or root).
		if err := os.Chown(key, 0, 65534); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := Prepare(p)
	if err != nil {
		// Prepare judges the key's directories too: the checkout may
		// sit below a directory others may write to.
		if !strings.Contains(err.Error(), "is writable by") {
			t.Fatalf("Prepare refused the 0640 key for Sendmail: %v", err)
		}
	} else {
		if err := plan.Write(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "bundle.pem")); err == nil {
			t.Error("tlsgate wrote the CA bundle for Sendmail")
		}
	}
	if os.Geteuid() == 0 {
		if _, err := Prepare(conf("postfix")); err == nil || !strings.Contains(err.Error(), "readable by its group") {
			t.Errorf("Postfix: a 0640 key of a group tlsgate is not in: %v", err)
		}
	}
	os.Chmod(key, 0o644)
	if _, err := Prepare(p); err == nil || !strings.Contains(err.Error(), "Sendmail refuses") {
		t.Errorf("Sendmail: a key others may read: %v", err)
	}
}
