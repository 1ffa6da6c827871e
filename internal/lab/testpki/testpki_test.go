package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	fpRe = regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`)

	sharedOnce sync.Once
	shared     *PKI
	sharedErr  error
)

// lab returns one PKI for the whole test binary.
func lab(t *testing.T) *PKI {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "testpki-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = New(dir)
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		os.RemoveAll(shared.Dir)
	}
	os.Exit(code)
}

func TestLabCertificates(t *testing.T) {
	p := lab(t)
	labPool, otherPool := p.CA.Pool(), p.OtherCA.Pool()
	tests := []struct {
		name     string
		cert     *Cert
		file     string
		subject  string
		issuer   string
		isCA     bool
		pool     *x509.CertPool // verifies against this pool ...
		dnsName  string         // ... for this name (when set)
		usage    x509.ExtKeyUsage
		verifyOK bool
	}{
		{"lab CA", p.CA, "ca", "CN=Lab Test CA,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", true, labPool, "", x509.ExtKeyUsageAny, true},
		{"other CA", p.OtherCA, "other-ca", "CN=Other CA,O=Other Org,C=DE", "CN=Other CA,O=Other Org,C=DE", true, otherPool, "", x509.ExtKeyUsageAny, true},
		{"other CA not trusted by lab", p.OtherCA, "other-ca", "CN=Other CA,O=Other Org,C=DE", "CN=Other CA,O=Other Org,C=DE", true, labPool, "", x509.ExtKeyUsageAny, false},
		{"postfix server", p.Server, "mx", "CN=mx.lab.test,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", false, labPool, "mx.lab.test", x509.ExtKeyUsageServerAuth, true},
		{"sink", p.Sink, "sink", "CN=sink.partner.test,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", false, labPool, "sink.partner.test", x509.ExtKeyUsageServerAuth, true},
		{"client", p.Client, "client", "CN=client.lab.test,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", false, labPool, "", x509.ExtKeyUsageClientAuth, true},
		{"client as server", p.Client, "client", "CN=client.lab.test,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", false, labPool, "client.lab.test", x509.ExtKeyUsageServerAuth, true},
		{"self-signed client", p.SelfSigned, "selfsigned", "CN=selfsigned.lab.test,O=Lab Test,C=DE", "CN=selfsigned.lab.test,O=Lab Test,C=DE", false, labPool, "", x509.ExtKeyUsageClientAuth, false},
		{"wrong CN for sink name", p.WrongCN, "wrong", "CN=wrong.partner.test,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", false, labPool, "sink.partner.test", x509.ExtKeyUsageServerAuth, false},
		{"wrong CN for own name", p.WrongCN, "wrong", "CN=wrong.partner.test,O=Lab Test,C=DE", "CN=Lab Test CA,O=Lab Test,C=DE", false, labPool, "wrong.partner.test", x509.ExtKeyUsageServerAuth, true},
		{"other-CA sink with lab pool", p.OtherCASink, "other-sink", "CN=sink.partner.test,O=Lab Test,C=DE", "CN=Other CA,O=Other Org,C=DE", false, labPool, "sink.partner.test", x509.ExtKeyUsageServerAuth, false},
		{"other-CA sink with other pool", p.OtherCASink, "other-sink", "CN=sink.partner.test,O=Lab Test,C=DE", "CN=Other CA,O=Other Org,C=DE", false, otherPool, "sink.partner.test", x509.ExtKeyUsageServerAuth, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cert
			if got := c.Cert.Subject.String(); got != tc.subject {
				t.Errorf("subject = %q, want %q", got, tc.subject)
			}
			if got := c.Cert.Issuer.String(); got != tc.issuer {
				t.Errorf("issuer = %q, want %q", got, tc.issuer)
			}
			if c.IsCA() != tc.isCA {
				t.Errorf("IsCA = %v, want %v", c.IsCA(), tc.isCA)
			}
			k, ok := c.Key.(*rsa.PrivateKey)
			if !ok || k.N.BitLen() != 2048 {
				t.Errorf("key is %T, want RSA 2048", c.Key)
			}
			for path, want := range map[string]string{
				c.CertFile:  filepath.Join(p.Dir, tc.file+".crt"),
				c.KeyFile:   filepath.Join(p.Dir, tc.file+".key"),
				c.ChainFile: filepath.Join(p.Dir, tc.file+"-chain.pem"),
			} {
				if path != want {
					t.Errorf("path %q, want %q", path, want)
				}
			}
			_, err := c.Cert.Verify(x509.VerifyOptions{
				Roots: tc.pool, DNSName: tc.dnsName, KeyUsages: []x509.ExtKeyUsage{tc.usage},
			})
			if (err == nil) != tc.verifyOK {
				t.Errorf("Verify(dns=%q) err = %v, want ok=%v", tc.dnsName, err, tc.verifyOK)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	p := lab(t)
	for _, c := range []*Cert{p.CA, p.OtherCA, p.Server, p.Sink, p.Client, p.SelfSigned, p.WrongCN, p.OtherCASink} {
		t.Run(c.Name, func(t *testing.T) {
			st, err := os.Stat(c.KeyFile)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key mode %v, want 0600", st.Mode().Perm())
			}
			pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				t.Fatalf("LoadX509KeyPair: %v", err)
			}
			if !bytes.Equal(pair.Certificate[0], c.DER) {
				t.Error("CertFile does not hold DER")
			}
			chain, err := os.ReadFile(c.ChainFile)
			if err != nil {
				t.Fatal(err)
			}
			var ders [][]byte
			for rest := chain; ; {
				var b *pem.Block
				b, rest = pem.Decode(rest)
				if b == nil {
					break
				}
				ders = append(ders, b.Bytes)
			}
			want := c.Chain()
			if len(ders) != len(want) {
				t.Fatalf("chain has %d certs, want %d", len(ders), len(want))
			}
			for i := range want {
				if !bytes.Equal(ders[i], want[i].Raw) {
					t.Errorf("chain[%d] differs", i)
				}
			}
			if !want[len(want)-1].IsCA && c.Issuer != nil {
				t.Error("chain does not end with the root")
			}
			sum := sha256.Sum256(c.DER)
			if !fpRe.MatchString(c.Fingerprint) || strings.ReplaceAll(c.Fingerprint, ":", "") != fmt.Sprintf("%X", sum) {
				t.Errorf("Fingerprint %q", c.Fingerprint)
			}
			spki := sha256.Sum256(c.Cert.RawSubjectPublicKeyInfo)
			if !fpRe.MatchString(c.PubkeyFingerprint) || strings.ReplaceAll(c.PubkeyFingerprint, ":", "") != fmt.Sprintf("%X", spki) {
				t.Errorf("PubkeyFingerprint %q", c.PubkeyFingerprint)
			}
		})
	}
}

// TestOpenSSLAgrees checks the files and fingerprints with an independent
// implementation: openssl computes the same fingerprints and verifies the
// chains the same way (openssl is what Postfix and Sendmail use).
func TestOpenSSLAgrees(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not found; run scripts/install-test-deps.sh")
		}
		t.Skip("openssl not found; install it with: sudo scripts/install-test-deps.sh")
	}
	p := lab(t)
	run := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command("openssl", args...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, c := range []*Cert{p.CA, p.Server, p.Client, p.SelfSigned, p.OtherCASink} {
		t.Run(c.Name, func(t *testing.T) {
			out, err := run(nil, "x509", "-in", c.CertFile, "-noout", "-fingerprint", "-sha256")
			if err != nil {
				t.Fatalf("openssl x509: %v: %s", err, out)
			}
			if got := strings.TrimSpace(out[strings.Index(out, "=")+1:]); got != c.Fingerprint {
				t.Errorf("openssl fingerprint %q, ours %q", got, c.Fingerprint)
			}
			pub, err := run(nil, "pkey", "-in", c.KeyFile, "-pubout", "-outform", "DER")
			if err != nil {
				t.Fatalf("openssl pkey: %v: %s", err, pub)
			}
			if got := Fingerprint([]byte(pub)); got != c.PubkeyFingerprint {
				t.Errorf("SPKI from openssl %q, ours %q", got, c.PubkeyFingerprint)
			}
		})
	}
	for _, tc := range []struct {
		cert *Cert
		ca   *Cert
		ok   bool
	}{
		{p.Server, p.CA, true}, {p.Sink, p.CA, true}, {p.Client, p.CA, true},
		{p.SelfSigned, p.CA, false}, {p.OtherCASink, p.CA, false}, {p.OtherCASink, p.OtherCA, true},
	} {
		out, err := run(nil, "verify", "-CAfile", tc.ca.CertFile, tc.cert.CertFile)
		if (err == nil) != tc.ok {
			t.Errorf("openssl verify %s with %s: err=%v want ok=%v: %s", tc.cert.Name, tc.ca.Name, err, tc.ok, out)
		}
	}
}

func TestIssue(t *testing.T) {
	p := lab(t)
	hostile := []string{
		"evil\r\nRCPT TO:<x@y>",
		`paren (and) "quotes" <angle> \back+slash`,
		"Ümläut Süß 证书 😀",
		strings.Repeat("A", 4096),
		"nul\x00byte",
		"/C=XX/CN=fake",
	}
	rawSubject, err := asn1.Marshal(pkix.Name{CommonName: "raw"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-60 * 24 * time.Hour)
	tests := []struct {
		name    string
		opts    Options
		check   func(t *testing.T, c *Cert)
		wantErr string
	}{
		{name: "ecdsa leaf", opts: Options{Name: "ec", Subject: pkix.Name{CommonName: "ec.lab.test"},
			DNSNames: []string{"ec.lab.test"}, KeyType: ECDSAP256, Signer: p.CA},
			check: func(t *testing.T, c *Cert) {
				if _, ok := c.Key.(*ecdsa.PrivateKey); !ok {
					t.Errorf("key %T", c.Key)
				}
				if _, err := c.Cert.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), DNSName: "ec.lab.test"}); err != nil {
					t.Error(err)
				}
			}},
		{name: "expired", opts: Options{Name: "expired", Subject: pkix.Name{CommonName: "old.lab.test"},
			NotBefore: past, NotAfter: past.Add(24 * time.Hour), KeyType: ECDSAP256, Signer: p.CA},
			check: func(t *testing.T, c *Cert) {
				if !c.Cert.NotAfter.Equal(past.Add(24 * time.Hour).Truncate(time.Second)) {
					t.Errorf("NotAfter %v", c.Cert.NotAfter)
				}
				if _, err := c.Cert.Verify(x509.VerifyOptions{Roots: p.CA.Pool()}); err == nil {
					t.Error("expired certificate verified")
				}
			}},
		{name: "not yet valid default length", opts: Options{Name: "future", NotBefore: time.Now().Add(24 * time.Hour), KeyType: ECDSAP256},
			check: func(t *testing.T, c *Cert) {
				if d := c.Cert.NotAfter.Sub(c.Cert.NotBefore); d != 30*24*time.Hour {
					t.Errorf("validity %v", d)
				}
			}},
		{name: "intermediate CA and leaf", opts: Options{Name: "inter", Subject: pkix.Name{CommonName: "Lab Intermediate"},
			IsCA: true, KeyType: ECDSAP256, Signer: p.CA},
			check: func(t *testing.T, c *Cert) {
				leaf, err := p.Issue(Options{Name: "under-inter", Subject: pkix.Name{CommonName: "deep.lab.test"},
					DNSNames: []string{"deep.lab.test"}, KeyType: ECDSAP256, Signer: c})
				if err != nil {
					t.Fatal(err)
				}
				if n := len(leaf.Chain()); n != 3 {
					t.Errorf("chain length %d", n)
				}
				inter := x509.NewCertPool()
				inter.AddCert(c.Cert)
				if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), Intermediates: inter, DNSName: "deep.lab.test"}); err != nil {
					t.Error(err)
				}
			}},
		{name: "SANs and serial", opts: Options{Name: "sans", KeyType: ECDSAP256, Signer: p.CA, SerialNumber: big.NewInt(4242),
			DNSNames: []string{"a.test", "b.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, EmailAddresses: []string{"pm@lab.test"}},
			check: func(t *testing.T, c *Cert) {
				if c.Cert.SerialNumber.Int64() != 4242 || len(c.Cert.DNSNames) != 2 || len(c.Cert.IPAddresses) != 1 || len(c.Cert.EmailAddresses) != 1 {
					t.Errorf("cert %v %v %v %v", c.Cert.SerialNumber, c.Cert.DNSNames, c.Cert.IPAddresses, c.Cert.EmailAddresses)
				}
			}},
		{name: "raw subject", opts: Options{Name: "raw", RawSubject: rawSubject, KeyType: ECDSAP256},
			check: func(t *testing.T, c *Cert) {
				if c.Cert.Subject.CommonName != "raw" || !bytes.Equal(c.Cert.RawSubject, rawSubject) {
					t.Errorf("subject %v", c.Cert.Subject)
				}
			}},
		{name: "RSA leaf default slot", opts: Options{Name: "rsa-extra", Subject: pkix.Name{CommonName: "x"}, Signer: p.CA},
			check: func(t *testing.T, c *Cert) {
				if k, ok := c.Key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
					t.Errorf("key %T", c.Key)
				}
			}},
		{name: "empty name", opts: Options{}, wantErr: "empty Name"},
		{name: "path in name", opts: Options{Name: "../x"}, wantErr: "only letters"},
		{name: "dot name", opts: Options{Name: ".x"}, wantErr: "must not start"},
		{name: "signer not CA", opts: Options{Name: "bad-signer", Signer: p.Server}, wantErr: "not a CA"},
		{name: "bad key type", opts: Options{Name: "bad-key", KeyType: KeyType(9)}, wantErr: "unknown key type"},
	}
	for i, s := range hostile {
		tests = append(tests, struct {
			name    string
			opts    Options
			check   func(t *testing.T, c *Cert)
			wantErr string
		}{
			name: fmt.Sprintf("hostile %d", i),
			opts: Options{Name: fmt.Sprintf("hostile-%d", i), KeyType: ECDSAP256, KeySlot: "hostile", Signer: p.CA,
				Subject: pkix.Name{CommonName: s, Organization: []string{s}, OrganizationalUnit: []string{"(" + s + ")"}}},
			check: func(t *testing.T, c *Cert) {
				if c.Cert.Subject.CommonName != s || c.Cert.Subject.Organization[0] != s {
					t.Errorf("subject does not round-trip: %q", c.Cert.Subject.CommonName)
				}
				if c.Cert.Issuer.CommonName != "Lab Test CA" {
					t.Errorf("issuer %q", c.Cert.Issuer.CommonName)
				}
				if _, err := c.Cert.Verify(x509.VerifyOptions{Roots: p.CA.Pool()}); err != nil {
					t.Error(err)
				}
			},
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := p.Issue(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
				t.Fatalf("files do not load: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestKeyCache(t *testing.T) {
	p := lab(t)
	a, err := p.Issue(Options{Name: "slot-a", KeySlot: "same", KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Issue(Options{Name: "slot-b", KeySlot: "same", KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Issue(Options{Name: "slot-c", KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if a.PubkeyFingerprint != b.PubkeyFingerprint {
		t.Error("same slot, different keys")
	}
	if a.Fingerprint == b.Fingerprint {
		t.Error("two certificates with one fingerprint")
	}
	if a.PubkeyFingerprint == c.PubkeyFingerprint {
		t.Error("different slots, same key")
	}

	// A second lab PKI reuses the keys: same SPKI, new certificates, and
	// no RSA key generation (fast).
	start := time.Now()
	q, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second New took %v", time.Since(start))
	if q.Server.PubkeyFingerprint != p.Server.PubkeyFingerprint || q.Server.Fingerprint == p.Server.Fingerprint {
		t.Error("second New: keys not reused or certificate not new")
	}
	seen := map[string]string{}
	for _, c := range []*Cert{q.CA, q.OtherCA, q.Server, q.Sink, q.Client, q.SelfSigned, q.WrongCN, q.OtherCASink} {
		if other, dup := seen[c.PubkeyFingerprint]; dup {
			t.Errorf("%s and %s share a key", c.Name, other)
		}
		seen[c.PubkeyFingerprint] = c.Name
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(""); err == nil {
		t.Error("New(\"\") succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(filepath.Join(f, "sub")); err == nil || !strings.Contains(err.Error(), "testpki: New") {
		t.Errorf("New under a file: %v", err)
	}
}

func TestNewT(t *testing.T) {
	p := NewT(t)
	st, err := os.Stat(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("dir mode %v", st.Mode().Perm())
	}
	if p.CA.Cert.Subject.CommonName != "Lab Test CA" {
		t.Error("no CA")
	}
}

func TestFingerprint(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"},
		{"abc", "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"},
	} {
		if got := Fingerprint([]byte(tc.in)); got != tc.want {
			t.Errorf("Fingerprint(%q) = %s", tc.in, got)
		}
	}
	if RSA2048.String() != "RSA2048" || ECDSAP256.String() != "ECDSAP256" || KeyType(7).String() != "KeyType(7)" {
		t.Error("KeyType.String")
	}
}

// TestIntermediate: PKI.Intermediate makes a CA below the Lab Test CA;
// a leaf it signs verifies to the root through it, and its chain file
// lists leaf, intermediate and root.
func TestIntermediate(t *testing.T) {
	p := lab(t)
	inter, err := p.Intermediate("lab-inter", "Lab Intermediate CA")
	if err != nil {
		t.Fatal(err)
	}
	if !inter.IsCA() || inter.Cert.Subject.String() != "CN=Lab Intermediate CA,O=Lab Test,C=DE" || inter.Cert.Issuer.String() != p.CA.Cert.Subject.String() {
		t.Fatalf("intermediate %s issued by %s", inter.Cert.Subject, inter.Cert.Issuer)
	}
	leaf, err := p.Issue(Options{Name: "lab-inter-leaf", Subject: pkix.Name{CommonName: "sink.partner.test"}, DNSNames: []string{"sink.partner.test"},
		KeyType: ECDSAP256, Signer: inter})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), Intermediates: inter.Pool(), DNSName: "sink.partner.test"}); err != nil {
		t.Error(err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), DNSName: "sink.partner.test"}); err == nil {
		t.Error("the leaf verifies without its intermediate")
	}
	data, err := os.ReadFile(leaf.ChainFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "BEGIN CERTIFICATE"); n != 3 {
		t.Errorf("%s holds %d certificates, want 3", leaf.ChainFile, n)
	}
}
