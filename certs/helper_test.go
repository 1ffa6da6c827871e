package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testNow is the fixed "now" of the tests; certificates default to being
// valid from a day before to 90 days after it.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

var serial atomic.Int64

// certSpec describes a test certificate; zero fields get defaults.
type certSpec struct {
	cn        string
	org       string
	dns       []string
	ips       []net.IP
	emails    []string
	notBefore time.Time // zero: testNow - 24h
	notAfter  time.Time // zero: testNow + 90 days
	eku       []x509.ExtKeyUsage
	noEKU     bool // omit the extended key usage extension (default: server+client, CA: none)
	ca        bool
	noBC      bool          // omit basic constraints
	key       crypto.Signer // zero: new P-256 key
}

type testCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (tc testCert) pem() []byte { return EncodeCertificatesPEM(tc.cert) }

// mkCert issues a certificate from issuer (self-signed if issuer is nil).
func mkCert(t testing.TB, spec certSpec, issuer *testCert) testCert {
	t.Helper()
	key := spec.key
	if key == nil {
		var err error
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
	}
	nb, na := spec.notBefore, spec.notAfter
	if nb.IsZero() {
		nb = testNow.Add(-24 * time.Hour)
	}
	if na.IsZero() {
		na = testNow.Add(90 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000 + serial.Add(1)),
		Subject:               pkix.Name{CommonName: spec.cn},
		NotBefore:             nb,
		NotAfter:              na,
		DNSNames:              spec.dns,
		IPAddresses:           spec.ips,
		EmailAddresses:        spec.emails,
		BasicConstraintsValid: !spec.noBC,
		IsCA:                  spec.ca,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if spec.org != "" {
		tmpl.Subject.Organization = []string{spec.org}
	}
	if spec.ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else if !spec.noEKU && spec.eku == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	if spec.eku != nil {
		tmpl.ExtKeyUsage = spec.eku
	}
	parent, signer := tmpl, key
	if issuer != nil {
		parent, signer = issuer.cert, issuer.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{cert: c, key: key}
}

func mkCA(t testing.TB, cn string, issuer *testCert) testCert {
	return mkCert(t, certSpec{cn: cn, org: "Test PKI", ca: true,
		notBefore: testNow.AddDate(-1, 0, 0), notAfter: testNow.AddDate(5, 0, 0)}, issuer)
}

// writeFile writes data to dir/name with perm and returns the path.
func writeFile(t testing.TB, dir, name string, data []byte, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// needOpenSSL skips the test if openssl is not on PATH.
func needOpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	return p
}

// openssl runs openssl with args and returns its trimmed standard output.
func openssl(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command(needOpenSSL(t), args...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out))
}

func wantErr(t testing.TB, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func serialOne() *big.Int { return big.NewInt(1) }

func randReader() io.Reader { return rand.Reader }

func readFileT(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
