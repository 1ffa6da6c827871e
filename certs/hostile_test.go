package certs

import (
	"crypto/x509"
	"encoding/asn1"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"software.sslmate.com/src/go-pkcs12"
)

// unsafeForTerminal returns the first character of s a terminal could act
// on (other than the line ends the commands print themselves), or -1.
func unsafeForTerminal(s string) rune {
	for _, r := range s {
		if r == '\n' {
			continue
		}
		if r == '\uFFFD' || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			return r
		}
	}
	return -1
}

// TestCLIEscapesCertificateNames: a partner's certificate whose names
// carry terminal escapes (clear screen, window title, OSC 52 clipboard,
// bell), C1 controls and bidi overrides, in the subject, the issuer, the
// DNS names and the e-mail addresses, is printed by show, verify (both
// when it passes and when it fails), store add/list and pfx2pem with every
// such character escaped.
func TestCLIEscapesCertificateNames(t *testing.T) {
	evil := "\x1b[2J\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x1b\\"
	root := mkCert(t, certSpec{cn: "Evil Root" + evil + "\u202etxt.exe", org: "Test PKI\u0085\u009b31m", ca: true,
		notBefore: testNow.AddDate(-1, 0, 0), notAfter: testNow.AddDate(5, 0, 0)}, nil)
	leaf := mkCert(t, certSpec{cn: "mx.evil.example" + evil, dns: []string{"mx.evil.example", "a" + evil + ".evil.example"},
		emails: []string{"postmaster" + evil + "@evil.example"}}, &root)
	dir := t.TempDir()
	leafFile := writeFile(t, dir, "leaf.pem", leaf.pem(), 0o644)
	rootFile := writeFile(t, dir, "root.pem", root.pem(), 0o644)
	store := filepath.Join(dir, "store")
	pfx, err := pkcs12.Modern.Encode(leaf.key, leaf.cert, []*x509.Certificate{root.cert}, "pw")
	noErr(t, err)
	pfxFile := writeFile(t, dir, "evil.pfx", pfx, 0o600)
	t.Setenv("PFX_PASS", "pw")

	for _, args := range [][]string{
		{"show", leafFile, rootFile},
		{"store", "add", "--store", store, rootFile},
		{"store", "list", "--store", store},
		{"verify", "--ca", store, "--name", "mx.evil.example", leafFile},
		{"verify", "--ca", store, "--name", "other.example", leafFile},
		{"verify", "--ca", store, "--purpose", "client", "--at", "2099-01-01", leafFile},
		{"store", "add", "--store", store, leafFile},
		{"pfx2pem", "--password-env", "PFX_PASS", "--store", filepath.Join(dir, "store2"), pfxFile},
		{"store", "remove", "--store", store, FingerprintCert(root.cert)},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			_, out, errs := runCLI(t, "", args...)
			for name, s := range map[string]string{"stdout": out, "stderr": errs} {
				if r := unsafeForTerminal(s); r >= 0 {
					t.Errorf("%v: %s carries %U:\n%q", args, name, r, s)
				}
			}
			if !strings.Contains(out+errs, `\1b[2J\1b]0`) {
				t.Errorf("%v: the escaped name is not shown:\n%s%s", args, out, errs)
			}
		})
	}
}

// setMACIterations returns pfx with its MAC iteration count replaced by n
// (the MAC no longer verifies, which does not matter: the count is checked
// first).
func setMACIterations(t *testing.T, pfx []byte, n int64) []byte {
	t.Helper()
	var p struct {
		Version  int
		AuthSafe asn1.RawValue
		MacData  struct {
			Mac        asn1.RawValue
			Salt       []byte
			Iterations int64 `asn1:"optional,default:1"`
		}
	}
	if _, err := asn1.Unmarshal(pfx, &p); err != nil {
		t.Fatal(err)
	}
	p.MacData.Iterations = n
	b, err := asn1.Marshal(p)
	noErr(t, err)
	return b
}

// TestPFXLimits: a file asking for 2^31-1 iterations for its MAC (2.4 KB,
// which kept pfx2pem busy for hours), or too many for its encryption, or
// too many in all, or larger than MaxPFXSize, is refused at once with the
// reason; a file within the limits still converts.
func TestPFXLimits(t *testing.T) {
	root := mkCA(t, "Limit Root", nil)
	leaf := mkCert(t, certSpec{cn: "mx.example.net"}, &root)
	good, err := pkcs12.LegacyDES.Encode(leaf.key, leaf.cert, nil, "pw")
	noErr(t, err)
	if _, err := PFX2PEM(good, "pw"); err != nil {
		t.Fatalf("a normal file: %v", err)
	}
	huge := setMACIterations(t, good, 1<<31-1)
	start := time.Now()
	_, err = PFX2PEM(huge, "pw")
	wantErr(t, err, "asks for 2147483647 iterations of its MAC")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("refusing took %v", el)
	}
	// Encryption iterations: the limit is lowered for the test, since
	// encoding a file with more than a million iterations takes seconds.
	many, err := pkcs12.LegacyDES.WithIterations(5000).Encode(leaf.key, leaf.cert, []*x509.Certificate{root.cert}, "pw")
	noErr(t, err)
	uses := pfxKDFs(many)
	var enc int
	for _, u := range uses {
		if u.what == "key derivation" && u.iterations.Int64() == 5000 {
			enc++
		}
	}
	if len(uses) != 3 || enc != 2 {
		t.Fatalf("found %d key derivations (%d of the encryptions), want the MAC's and 2 encryptions", len(uses), enc)
	}
	modern, err := pkcs12.Modern.WithIterations(5000).Encode(leaf.key, leaf.cert, nil, "pw")
	noErr(t, err)
	if uses := pfxKDFs(modern); len(uses) != 3 {
		t.Fatalf("PBES2 file: found %d key derivations, want the MAC's and 2 PBKDF2s", len(uses))
	}
	big := make([]byte, MaxPFXSize+1)
	_, err = PFX2PEM(big, "pw")
	wantErr(t, err, "more than the 1048576")

	dir := t.TempDir()
	t.Setenv("PFX_PASS", "pw")
	hugeFile := writeFile(t, dir, "huge.pfx", huge, 0o600)
	bigFile := writeFile(t, dir, "big.pfx", big, 0o600)
	for _, tc := range []cliCase{
		{name: "2^31-1 MAC iterations", args: []string{"pfx2pem", "--password-env", "PFX_PASS", hugeFile}, code: 2,
			stderr: []string{"asks for 2147483647 iterations of its MAC; at most 1000000 are accepted"}, noOut: true},
		{name: "too large", args: []string{"pfx2pem", "--password-env", "PFX_PASS", bigFile}, code: 2,
			stderr: []string{"is larger than 1048576 bytes"}, noOut: true},
		{name: "too large on standard input", args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--out", filepath.Join(dir, "x"), "-"}, stdin: string(big), code: 2,
			stderr: []string{"standard input is larger than 1048576 bytes"}, noOut: true},
	} {
		t.Run(tc.name, tc.run)
	}
}

// TestPFXDecodeTimeout: key derivations hidden in an encrypted part cannot
// be checked beforehand; a decoding that takes too long is given up.
func TestPFXDecodeTimeout(t *testing.T) {
	defer func(d time.Duration, f func([]byte, string) (any, *x509.Certificate, []*x509.Certificate, error)) {
		pfxTimeout, decodeChain = d, f
	}(pfxTimeout, decodeChain)
	release := make(chan struct{})
	defer close(release)
	pfxTimeout = 100 * time.Millisecond
	decodeChain = func([]byte, string) (any, *x509.Certificate, []*x509.Certificate, error) {
		<-release
		return nil, nil, nil, nil
	}
	root := mkCA(t, "Slow Root", nil)
	leaf := mkCert(t, certSpec{cn: "mx.example.net"}, &root)
	pfx, err := pkcs12.Modern.Encode(leaf.key, leaf.cert, nil, "pw")
	noErr(t, err)
	_, err = PFX2PEM(pfx, "pw")
	wantErr(t, err, "took more than 100ms")
}

// TestPFXStoreOnlyTheChain: --store adds the CA certificates the leaf's
// chain links to (by issuer name and signature), and lists the others:
// an unrelated CA, and a look-alike with the issuer's name but another
// key.
func TestPFXStoreOnlyTheChain(t *testing.T) {
	root := mkCA(t, "Chain Root", nil)
	inter := mkCA(t, "Chain Issuing CA", &root)
	leaf := mkCert(t, certSpec{cn: "mx.example.net"}, &inter)
	unrelated := mkCA(t, "Somebody Else's Root", nil)
	lookalike := mkCA(t, "Chain Issuing CA", &unrelated)
	pfx, err := pkcs12.Modern.Encode(leaf.key, leaf.cert, []*x509.Certificate{unrelated.cert, lookalike.cert, root.cert, inter.cert}, "pw")
	noErr(t, err)
	dir := t.TempDir()
	file := writeFile(t, dir, "mx.pfx", pfx, 0o600)
	store := filepath.Join(dir, "store")
	t.Setenv("PFX_PASS", "pw")
	cliCase{args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--store", store, file}, stdout: []string{
		"added to CA store " + store + ": CN=Chain Issuing CA,O=Test PKI",
		"added to CA store " + store + ": CN=Chain Root,O=Test PKI",
		"not added to CA store " + store + ": CN=Somebody Else's Root,O=Test PKI (not in the chain of this certificate, SHA-256 " + FingerprintCert(unrelated.cert),
		"not added to CA store " + store + ": CN=Chain Issuing CA,O=Test PKI (not in the chain of this certificate, SHA-256 " + FingerprintCert(lookalike.cert),
	}}.run(t)
	s, err := OpenStore(store)
	noErr(t, err)
	if got := s.List(); len(got) != 2 {
		t.Fatalf("the store holds %d certificates, want the 2 of the chain", len(got))
	}
	for _, en := range s.List() {
		if en.Cert.Equal(unrelated.cert) || en.Cert.Equal(lookalike.cert) {
			t.Errorf("%s was added", en.Subject)
		}
	}
}

// TestForceRefusesSpecialFiles: --force replaces a regular file, and a
// symbolic link by a regular file (its target left alone), but never a
// device node, a directory or a named pipe.
func TestForceRefusesSpecialFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a device node")
	}
	dir := t.TempDir()
	null := filepath.Join(dir, "null")
	noErr(t, syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3)) // like /dev/null
	fifo := filepath.Join(dir, "fifo")
	noErr(t, syscall.Mkfifo(fifo, 0o600))
	sub := filepath.Join(dir, "sub")
	noErr(t, os.Mkdir(sub, 0o700))
	target := writeFile(t, dir, "managed.key", []byte("managed by another tool\n"), 0o600)
	key, err := GenerateKey("p256")
	noErr(t, err)
	keyFile := filepath.Join(dir, "csr.key")
	noErr(t, WriteKey(keyFile, key, false))
	link := filepath.Join(dir, "link.key")
	noErr(t, os.Symlink(target, link))

	for _, tc := range []cliCase{
		{name: "device", args: []string{"key", "--force", null}, code: 2, stderr: []string{null + " is a device; --force replaces only regular files"}, noOut: true},
		{name: "named pipe", args: []string{"key", "--force", fifo}, code: 2, stderr: []string{"is a named pipe"}, noOut: true},
		{name: "directory", args: []string{"key", "--force", sub}, code: 2, stderr: []string{"is a directory"}, noOut: true},
		{name: "device as CSR output", args: []string{"csr", "--key", keyFile, "--cn", "x.example", "--out", null, "--force"}, code: 2, stderr: []string{"is a device"}},
		{name: "symbolic link", args: []string{"key", "--force", link}, stdout: []string{"wrote", "note: " + link + " was a symbolic link to " + target + "; it is now a regular file, and " + target + " was left unchanged"}},
	} {
		t.Run(tc.name, tc.run)
	}
	if fi, err := os.Lstat(null); err != nil || fi.Mode().Type() != os.ModeDevice|os.ModeCharDevice {
		t.Errorf("the device node was replaced: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the link was not replaced by a regular file: %v, %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(target); string(b) != "managed by another tool\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	noErr(t, CheckKeyFile(link))

	// pfx2pem checks every output before writing any.
	root := mkCA(t, "Force Root", nil)
	leaf := mkCert(t, certSpec{cn: "mx.example.net"}, &root)
	pfx, err := pkcs12.Modern.Encode(leaf.key, leaf.cert, nil, "pw")
	noErr(t, err)
	t.Setenv("PFX_PASS", "pw")
	prefix := filepath.Join(dir, "mx")
	noErr(t, syscall.Mknod(prefix+".fullchain.crt", syscall.S_IFCHR|0o666, 1<<8|3))
	cliCase{args: []string{"pfx2pem", "--password-env", "PFX_PASS", "--force", "--out", prefix, writeFile(t, dir, "mx.pfx", pfx, 0o600)},
		code: 2, stderr: []string{"mx.fullchain.crt is a device"}, noOut: true}.run(t)
	if _, err := os.Lstat(prefix + ".key"); err == nil {
		t.Error("pfx2pem wrote the key before refusing the device")
	}
}
