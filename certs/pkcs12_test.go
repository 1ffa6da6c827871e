package certs

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/tlsgate/tlsgate/internal/certid"
)

func TestPFX2PEM(t *testing.T) {
	root := mkCA(t, "P12 Root", nil)
	inter := mkCA(t, "P12 Issuing CA", &root)
	rsaKey, err := GenerateKey("rsa2048")
	noErr(t, err)
	leaf := mkCert(t, certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}, key: rsaKey}, &inter)
	stranger := mkCert(t, certSpec{cn: "other.example.net"}, &inter)
	const pw = "s3cret Pässwort"

	encode := func(enc *pkcs12.Encoder, key any, cert *x509.Certificate, cas []*x509.Certificate, pw string) []byte {
		t.Helper()
		b, err := enc.Encode(key, cert, cas, pw)
		noErr(t, err)
		return b
	}
	tests := []struct {
		name      string
		pfx       []byte
		password  string
		wantChain []string // CA subjects in output order
		wantErr   []string
		wrongPW   bool
	}{
		{name: "modern with chain", pfx: encode(pkcs12.Modern, rsaKey, leaf.cert, []*x509.Certificate{inter.cert, root.cert}, pw), password: pw,
			wantChain: []string{"CN=P12 Issuing CA,O=Test PKI", "CN=P12 Root,O=Test PKI"}},
		{name: "modern 2026", pfx: encode(pkcs12.Modern2026, rsaKey, leaf.cert, nil, pw), password: pw},
		{name: "legacy 3DES", pfx: encode(pkcs12.LegacyDES, rsaKey, leaf.cert, []*x509.Certificate{inter.cert}, pw), password: pw,
			wantChain: []string{"CN=P12 Issuing CA,O=Test PKI"}},
		{name: "legacy RC2", pfx: encode(pkcs12.LegacyRC2, rsaKey, leaf.cert, nil, pw), password: pw},
		{name: "empty password", pfx: encode(pkcs12.Modern, rsaKey, leaf.cert, nil, ""), password: ""},
		{name: "chain stored root first", pfx: encode(pkcs12.Modern, rsaKey, leaf.cert, []*x509.Certificate{root.cert, inter.cert}, pw), password: pw,
			wantChain: []string{"CN=P12 Issuing CA,O=Test PKI", "CN=P12 Root,O=Test PKI"}},
		// Windows sometimes stores a CA before the leaf: the leaf is found
		// by its key, not its position.
		{name: "leaf not first", pfx: encode(pkcs12.Modern, rsaKey, inter.cert, []*x509.Certificate{leaf.cert, root.cert}, pw), password: pw,
			wantChain: []string{"CN=P12 Issuing CA,O=Test PKI", "CN=P12 Root,O=Test PKI"}},
		{name: "wrong password", pfx: encode(pkcs12.Modern, rsaKey, leaf.cert, nil, pw), password: "secret",
			wrongPW: true, wantErr: []string{"wrong PKCS#12 password", "trailing space or newline"}},
		{name: "wrong password legacy", pfx: encode(pkcs12.LegacyDES, rsaKey, leaf.cert, nil, pw), password: "",
			wrongPW: true, wantErr: []string{"wrong PKCS#12 password"}},
		{name: "key does not match", pfx: encode(pkcs12.Modern, rsaKey, stranger.cert, []*x509.Certificate{inter.cert}, pw), password: pw,
			wantErr: []string{"does not belong to the certificate CN=other.example.net", "holds 2 certificate(s), none of them for its private key"}},
		{name: "not PKCS#12", pfx: leaf.cert.Raw, password: pw, wantErr: []string{"cannot read PKCS#12 file"}},
		{name: "trust store without key", pfx: func() []byte {
			b, err := pkcs12.Modern.EncodeTrustStore([]*x509.Certificate{root.cert}, pw)
			noErr(t, err)
			return b
		}(), password: pw, wantErr: []string{"cannot read PKCS#12 file", "private key missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := PFX2PEM(tc.pfx, tc.password)
			if tc.wantErr != nil {
				for _, w := range tc.wantErr {
					wantErr(t, err, w)
				}
				if got := errors.Is(err, ErrWrongPassword); got != tc.wrongPW {
					t.Errorf("errors.Is(err, ErrWrongPassword) = %v", got)
				}
				return
			}
			noErr(t, err)
			checkBundle(t, b, leaf.cert, tc.wantChain)
		})
	}
}

// checkBundle checks that b holds leaf, its key and the given CAs.
func checkBundle(t *testing.T, b *PEMBundle, leaf *x509.Certificate, chain []string) {
	t.Helper()
	if !b.Leaf.Equal(leaf) {
		t.Errorf("leaf is %s", b.Leaf.Subject)
	}
	k, err := ParsePrivateKey(b.Key)
	noErr(t, err)
	noErr(t, KeyMatchesCert(k, leaf))
	cs, err := ParseCertificates(b.Cert)
	noErr(t, err)
	if len(cs) != 1 || !cs[0].Equal(leaf) {
		t.Error("Cert PEM is not the leaf")
	}
	var got []string
	for _, c := range b.CACerts {
		got = append(got, certid.RFC4514(c.RawSubject))
	}
	if strings.Join(got, "|") != strings.Join(chain, "|") {
		t.Errorf("chain %v, want %v", got, chain)
	}
	if len(chain) == 0 && b.Chain != nil {
		t.Error("Chain PEM without CAs")
	}
	if len(chain) > 0 {
		cs, err := ParseCertificates(b.Chain)
		noErr(t, err)
		if len(cs) != len(chain) {
			t.Errorf("Chain PEM holds %d certs", len(cs))
		}
	}
	full, err := ParseCertificates(b.FullChain())
	noErr(t, err)
	if len(full) != 1+len(chain) || !full[0].Equal(leaf) {
		t.Errorf("FullChain holds %d certs", len(full))
	}
}

// Files made by "openssl pkcs12 -export": the OpenSSL 3 default (AES,
// PBKDF2) and the legacy formats older Windows versions write (RC2-40 for
// the certificates and 3DES for the key with a SHA-1 MAC, or 3DES
// throughout).
func TestPFX2PEMOpenSSL(t *testing.T) {
	bin := needOpenSSL(t)
	root := mkCA(t, "OpenSSL Root", nil)
	rsaKey, _ := GenerateKey("rsa2048")
	leaf := mkCert(t, certSpec{cn: "mx.example.net", key: rsaKey}, &root)
	dir := t.TempDir()
	keyPEM, _ := MarshalKeyPEM(rsaKey)
	keyFile := writeFile(t, dir, "k.pem", keyPEM, 0o600)
	certFile := writeFile(t, dir, "c.pem", leaf.pem(), 0o644)
	chainFile := writeFile(t, dir, "ca.pem", root.pem(), 0o644)
	t.Setenv("P12PASS", "Windows-Export 2026!")

	variants := []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"legacy", []string{"-legacy"}},
		{"3des sha1", []string{"-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "x.pfx")
			args := append([]string{"pkcs12", "-export", "-inkey", keyFile, "-in", certFile, "-certfile", chainFile,
				"-name", "mx.example.net", "-out", out, "-passout", "env:P12PASS"}, v.args...)
			if msg, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
				if v.name == "legacy" && bytes.Contains(msg, []byte("legacy")) {
					t.Skipf("OpenSSL legacy provider not available: %s", msg)
				}
				t.Fatalf("openssl %v: %v\n%s", args, err, msg)
			}
			data := readFileT(t, out)
			b, err := PFX2PEM(data, "Windows-Export 2026!")
			noErr(t, err)
			checkBundle(t, b, leaf.cert, []string{"CN=OpenSSL Root,O=Test PKI"})

			_, err = PFX2PEM(data, "windows-export 2026!")
			if !errors.Is(err, ErrWrongPassword) {
				t.Errorf("wrong password: got %v", err)
			}
		})
	}
}

func TestOrderChain(t *testing.T) {
	root := mkCA(t, "R", nil)
	i1 := mkCA(t, "I1", &root)
	i2 := mkCA(t, "I2", &i1)
	leaf := mkCert(t, certSpec{cn: "leaf.example"}, &i2)
	unrelated := mkCA(t, "U", nil)
	lookalike := mkCA(t, "I2", &root) // I2's name, another key
	got, linked := orderChain(leaf.cert, []*x509.Certificate{unrelated.cert, lookalike.cert, root.cert, i1.cert, i2.cert})
	var names []string
	for _, c := range got {
		names = append(names, c.Subject.CommonName)
	}
	if strings.Join(names, ",") != "I2,I1,R,U,I2" || linked != 3 || got[0] != i2.cert {
		t.Errorf("order %v, %d linked", names, linked)
	}
}
