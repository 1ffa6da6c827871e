package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func openTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenStore(dir)
	noErr(t, err)
	return s, dir
}

func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	noErr(t, err)
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}

func TestStoreAdd(t *testing.T) {
	root := mkCA(t, "Example Root CA", nil)
	inter := mkCA(t, "Example Issuing CA 2", &root)
	leaf := mkCert(t, certSpec{cn: "mx.partner.example"}, &inter)
	noBC := mkCert(t, certSpec{cn: "v3 without basic constraints", noBC: true}, nil)

	tests := []struct {
		name      string
		data      []byte
		wantFiles int
		wantErr   []string
	}{
		{name: "root", data: root.pem(), wantFiles: 1},
		{name: "DER", data: root.cert.Raw, wantFiles: 1},
		{name: "chain bundle", data: append(inter.pem(), root.pem()...), wantFiles: 2},
		{name: "server certificate refused", data: leaf.pem(),
			wantErr: []string{"CN=mx.partner.example is not a CA certificate (basicConstraints CA:FALSE", "pin its fingerprint " + FingerprintCert(leaf.cert)}},
		{name: "no basic constraints refused", data: noBC.pem(), wantErr: []string{"no basicConstraints extension"}},
		{name: "bundle with a server certificate adds nothing", data: append(root.pem(), leaf.pem()...), wantErr: []string{"not added to"}},
		{name: "not a certificate", data: []byte("hello"), wantErr: []string{"neither PEM nor a DER"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dir := openTestStore(t)
			added, err := s.Add(tc.data)
			if tc.wantErr != nil {
				for _, w := range tc.wantErr {
					wantErr(t, err, w)
				}
				if files := storeFiles(t, dir); len(files) != 0 {
					t.Errorf("files written despite the error: %v", files)
				}
				return
			}
			noErr(t, err)
			files := storeFiles(t, dir)
			if len(added) != tc.wantFiles || len(files) != tc.wantFiles {
				t.Fatalf("added %d, files %v; want %d", len(added), files, tc.wantFiles)
			}
			for _, f := range files {
				fi, _ := os.Stat(filepath.Join(dir, f))
				if fi.Mode().Perm() != 0o644 {
					t.Errorf("%s has mode %04o, want 0644", f, fi.Mode().Perm())
				}
			}
			// Adding again is a no-op.
			again, err := s.Add(tc.data)
			noErr(t, err)
			if len(again) != 0 || len(storeFiles(t, dir)) != tc.wantFiles {
				t.Errorf("duplicate added: %v", again)
			}
			// A fresh OpenStore sees the same.
			s2, err := OpenStore(dir)
			noErr(t, err)
			if len(s2.List()) != tc.wantFiles || len(s2.Warnings()) != 0 {
				t.Errorf("reopened: %v, warnings %v", s2.List(), s2.Warnings())
			}
		})
	}
}

func TestStoreFileName(t *testing.T) {
	c := mkCA(t, "Example Root CA / R1: 2026", nil)
	name := storeFileName(c.cert)
	fp := strings.ToLower(strings.ReplaceAll(FingerprintCert(c.cert)[:11], ":", ""))
	if want := "Example_Root_CA___R1__2026-" + fp + ".pem"; name != want {
		t.Errorf("got %q, want %q", name, want)
	}
	noCN := mkCert(t, certSpec{org: "Org Only", ca: true}, nil)
	if got := storeFileName(noCN.cert); !strings.HasPrefix(got, "Org_Only-") {
		t.Errorf("got %q", got)
	}
	weird := mkCert(t, certSpec{cn: "ÄÖÜ", ca: true}, nil)
	if got := storeFileName(weird.cert); !strings.HasPrefix(got, "ca-") {
		t.Errorf("got %q", got)
	}
}

func TestStoreListAndRemove(t *testing.T) {
	a := mkCA(t, "A Root", nil)
	b := mkCA(t, "B Root", nil)
	c := mkCA(t, "C Root", nil)
	d := mkCA(t, "D Root", nil)

	setup := func(t *testing.T) (*Store, string) {
		s, dir := openTestStore(t)
		for _, x := range []testCert{c, a, b} {
			_, err := s.Add(x.pem())
			noErr(t, err)
		}
		// A hand-made file holding two CAs.
		writeFile(t, dir, "pair.crt", append(d.pem(), EncodeCertificatesPEM(mkCA(t, "E Root", nil).cert)...), 0o644)
		s, err := OpenStore(dir)
		noErr(t, err)
		return s, dir
	}

	t.Run("list", func(t *testing.T) {
		s, _ := setup(t)
		var subjects []string
		for _, e := range s.List() {
			subjects = append(subjects, e.Subject)
			if e.Fingerprint != FingerprintCert(e.Cert) || !e.NotAfter.Equal(e.Cert.NotAfter) {
				t.Errorf("inconsistent entry %+v", e)
			}
		}
		want := []string{"CN=A Root,O=Test PKI", "CN=B Root,O=Test PKI", "CN=C Root,O=Test PKI", "CN=D Root,O=Test PKI", "CN=E Root,O=Test PKI"}
		if !slices.Equal(subjects, want) {
			t.Errorf("got %v, want %v", subjects, want)
		}
		if len(s.Certificates()) != 5 {
			t.Error("Certificates")
		}
		if !s.Contains(a.cert) || s.Contains(mkCA(t, "X", nil).cert) {
			t.Error("Contains")
		}
	})

	tests := []struct {
		name    string
		what    func(dir string) string
		removed []string // subjects
		left    int
		wantErr string
	}{
		{name: "by fingerprint", what: func(string) string { return FingerprintCert(b.cert) }, removed: []string{"CN=B Root,O=Test PKI"}, left: 4},
		{name: "by sha256: fingerprint lower case", what: func(string) string { return "sha256:" + strings.ToLower(FingerprintCert(a.cert)) }, removed: []string{"CN=A Root,O=Test PKI"}, left: 4},
		{name: "by file name", what: func(string) string { return storeFileName(c.cert) }, removed: []string{"CN=C Root,O=Test PKI"}, left: 4},
		{name: "by file name without extension", what: func(string) string { return strings.TrimSuffix(storeFileName(c.cert), ".pem") }, removed: []string{"CN=C Root,O=Test PKI"}, left: 4},
		{name: "by path inside the store", what: func(dir string) string { return filepath.Join(dir, storeFileName(c.cert)) }, removed: []string{"CN=C Root,O=Test PKI"}, left: 4},
		{name: "a file with two CAs", what: func(string) string { return "pair.crt" }, removed: []string{"CN=D Root,O=Test PKI", "CN=E Root,O=Test PKI"}, left: 3},
		{name: "one CA out of a shared file", what: func(string) string { return FingerprintCert(d.cert) }, removed: []string{"CN=D Root,O=Test PKI"}, left: 4},
		{name: "unknown fingerprint", what: func(string) string { return FingerprintCert(mkCA(t, "X", nil).cert) }, wantErr: "no certificate with fingerprint"},
		{name: "unknown name", what: func(string) string { return "nope.pem" }, wantErr: `"nope.pem" is neither a file in the CA store`},
		{name: "path outside the store", what: func(string) string { return "/etc/passwd" }, wantErr: "is not a file in the CA store"},
	}
	for _, tc := range tests {
		t.Run("remove "+tc.name, func(t *testing.T) {
			s, dir := setup(t)
			removed, err := s.Remove(tc.what(dir))
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				if len(s.List()) != 5 {
					t.Error("store changed")
				}
				return
			}
			noErr(t, err)
			var got []string
			for _, r := range removed {
				got = append(got, r.Subject)
			}
			if !slices.Equal(got, tc.removed) {
				t.Errorf("removed %v, want %v", got, tc.removed)
			}
			s2, err := OpenStore(dir)
			noErr(t, err)
			if len(s.List()) != tc.left || len(s2.List()) != tc.left {
				t.Errorf("left %d in memory, %d on disk; want %d", len(s.List()), len(s2.List()), tc.left)
			}
		})
	}
}

func TestOpenStoreProblems(t *testing.T) {
	_, err := OpenStore(filepath.Join(t.TempDir(), "missing"))
	wantErr(t, err, "does not exist (create it with")
	f := writeFile(t, t.TempDir(), "file", nil, 0o644)
	_, err = OpenStore(f)
	wantErr(t, err, "is not a directory")

	dir := t.TempDir()
	root := mkCA(t, "Good Root", nil)
	leaf := mkCert(t, certSpec{cn: "mx.example.net"}, &root)
	writeFile(t, dir, "good.pem", root.pem(), 0o644)
	writeFile(t, dir, "leaf.pem", leaf.pem(), 0o644)
	writeFile(t, dir, "broken.crt", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	writeFile(t, dir, "README", []byte("not read"), 0o644)
	writeFile(t, dir, ".hidden.pem", []byte("not read"), 0o644)
	noErr(t, os.Symlink("good.pem", filepath.Join(dir, "abcd1234.0")))
	s, err := OpenStore(dir)
	noErr(t, err)
	if len(s.List()) != 1 || s.List()[0].File != "good.pem" {
		t.Errorf("entries %v", s.List())
	}
	w := strings.Join(s.Warnings(), "\n")
	for _, want := range []string{"broken.crt: skipped", "leaf.pem: skipped: CN=mx.example.net is not a CA certificate"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	// The bad file can still be removed by name.
	_, err = s.Remove("leaf.pem")
	noErr(t, err)
	if strings.Contains(strings.Join(s.Warnings(), "\n"), "leaf.pem") {
		t.Error("warning about a removed file remains")
	}
	if k := s.Skipped(); len(k) != 1 || k[0].File != "broken.crt" {
		t.Errorf("Skipped() = %v after removing leaf.pem", k)
	}
}

// TestOpenStoreNothingSilent: every file with a certificate extension
// that adds nothing, or less than it holds, to the store is a Skip with
// its reason: a dangling symbolic link, a directory, a file cut short
// after its first certificate, one with a damaged block between two good
// ones.
func TestOpenStoreNothingSilent(t *testing.T) {
	dir := t.TempDir()
	a, b := mkCA(t, "Root A", nil), mkCA(t, "Root B", nil)
	writeFile(t, dir, "good.pem", a.pem(), 0o644)
	two := append(a.pem(), b.pem()...)
	writeFile(t, dir, "cut.pem", two[:len(a.pem())+100], 0o644)
	damaged := append(append(a.pem(), []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")...), b.pem()...)
	writeFile(t, dir, "damaged.pem", damaged, 0o644)
	noErr(t, os.Symlink("missing.pem", filepath.Join(dir, "dangling.pem")))
	noErr(t, os.Mkdir(filepath.Join(dir, "dir.pem"), 0o755))
	s, err := OpenStore(dir)
	noErr(t, err)
	if len(s.List()) != 1 || s.List()[0].File != "good.pem" {
		t.Errorf("entries %v", s.List())
	}
	want := map[string]string{
		"cut.pem":      "1 of 2 PEM blocks cannot be read",
		"damaged.pem":  "1 of 3 PEM blocks cannot be read",
		"dangling.pem": "no such file or directory",
		"dir.pem":      "not a regular file",
	}
	got := map[string]string{}
	for _, k := range s.Skipped() {
		got[k.File] = k.Reason
	}
	for f, w := range want {
		if !strings.Contains(got[f], w) {
			t.Errorf("%s: skip reason %q, want %q", f, got[f], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("skipped %v", got)
	}
}

func TestStoreWriteBundle(t *testing.T) {
	s, _ := openTestStore(t)
	out := filepath.Join(t.TempDir(), "ca-bundle.pem")
	wantErr(t, s.WriteBundle(out), "is empty; not writing")

	partner := mkCA(t, "Partner Issuing CA", nil)
	other := mkCA(t, "Other Root", nil)
	for _, c := range []testCert{partner, other} {
		_, err := s.Add(c.pem())
		noErr(t, err)
	}
	noErr(t, os.WriteFile(out, []byte("old"), 0o600))
	noErr(t, s.WriteBundle(out))
	fi, _ := os.Stat(out)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("bundle mode %04o, want 0644", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(out)
	cs, err := ParseCertificates(data)
	noErr(t, err)
	if len(cs) != 2 || !strings.Contains(string(data), "# CN=Partner Issuing CA,O=Test PKI\n# expires ") {
		t.Errorf("bundle:\n%s", data)
	}

	ta := filepath.Join(t.TempDir(), "partner-ta.pem")
	noErr(t, s.WriteTrustAnchors(ta, func(c *x509.Certificate) bool { return c.Subject.CommonName == "Partner Issuing CA" }))
	data, _ = os.ReadFile(ta)
	cs, err = ParseCertificates(data)
	noErr(t, err)
	if len(cs) != 1 || !cs[0].Equal(partner.cert) {
		t.Errorf("trust anchors: %d certs", len(cs))
	}
	wantErr(t, s.WriteTrustAnchors(ta, func(*x509.Certificate) bool { return false }), "no CA in store")

	if needOpenSSL(t) != "" {
		// OpenSSL (and so Postfix) reads the bundle, comments and all.
		leaf := mkCert(t, certSpec{cn: "mx.partner.example"}, &partner)
		lf := writeFile(t, t.TempDir(), "leaf.pem", leaf.pem(), 0o644)
		got := openssl(t, nil, "verify", "-CAfile", ta, "-attime", fmt.Sprint(testNow.Unix()), lf)
		if !strings.HasSuffix(got, ": OK") {
			t.Errorf("openssl verify: %s", got)
		}
	}
}

func TestLoadBundle(t *testing.T) {
	root := mkCA(t, "Bundle Root", nil)
	leaf := mkCert(t, certSpec{cn: "mx.example.net"}, &root)
	p := writeFile(t, t.TempDir(), "bundle.pem", append(root.pem(), leaf.pem()...), 0o644)
	s, err := LoadBundle(p)
	noErr(t, err)
	if len(s.List()) != 1 || len(s.Warnings()) != 1 || s.String() != p || s.Dir() != "" {
		t.Errorf("entries %v warnings %v", s.List(), s.Warnings())
	}
	if _, err := s.Add(root.pem()); !errors.Is(err, ErrReadOnlyStore) {
		t.Errorf("Add: %v", err)
	}
	if _, err := s.Remove("x"); !errors.Is(err, ErrReadOnlyStore) {
		t.Errorf("Remove: %v", err)
	}
	_, err = Verify(s, leaf.cert, VerifyOptions{Now: testNow})
	noErr(t, err)
	_, err = LoadBundle(filepath.Join(t.TempDir(), "none.pem"))
	wantErr(t, err, "no such file")
}
