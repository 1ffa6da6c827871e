package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestGenerateKey(t *testing.T) {
	tests := []struct {
		alg     string
		want    string // DescribeKey of the result
		wantErr string
		weak    bool
		slow    bool
	}{
		{alg: "rsa2048", want: "RSA 2048 bits"},
		{alg: "RSA-3072", want: "RSA 3072 bits", slow: true},
		{alg: "rsa4096", want: "RSA 4096 bits", slow: true},
		{alg: "rsa", want: "RSA 2048 bits"},
		{alg: "p256", want: "ECDSA P-256"},
		{alg: "ECDSA-P256", want: "ECDSA P-256"},
		{alg: "prime256v1", want: "ECDSA P-256"},
		{alg: "P-384", want: "ECDSA P-384"},
		{alg: "secp384r1", want: "ECDSA P-384"},
		{alg: "rsa1024", wantErr: "RSA 1024 bits is refused: NIST has disallowed RSA keys below 2048 bits", weak: true},
		{alg: "rsa512", wantErr: "RSA 512 bits is refused", weak: true},
		{alg: "rsa2047", wantErr: "below 2048", weak: true},
		{alg: "rsa8192", wantErr: "use 2048, 3072 or 4096"},
		{alg: "dsa", wantErr: `unknown key type "dsa"`},
		{alg: "ed25519", wantErr: "want one of rsa2048"},
		{alg: "rsaxyz", wantErr: "unknown key type"},
		{alg: "", wantErr: "unknown key type"},
	}
	for _, tc := range tests {
		t.Run(tc.alg, func(t *testing.T) {
			if tc.slow && testing.Short() {
				t.Skip("slow key generation")
			}
			k, err := GenerateKey(tc.alg)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				if got := errors.Is(err, ErrWeakKey); got != tc.weak {
					t.Errorf("errors.Is(err, ErrWeakKey) = %v, want %v", got, tc.weak)
				}
				return
			}
			noErr(t, err)
			if got := DescribeKey(k.Public()); got != tc.want {
				t.Errorf("key is %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWriteKey(t *testing.T) {
	old := syscall.Umask(0) // the mode must not depend on the umask
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "mx.key")
	k1, err := GenerateKey("p256")
	noErr(t, err)
	noErr(t, WriteKey(path, k1, false))
	fi, err := os.Stat(path)
	noErr(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	first, _ := os.ReadFile(path)
	got, err := ParsePrivateKey(first)
	noErr(t, err)
	if !k1.(*ecdsa.PrivateKey).Equal(got) {
		t.Error("key read back differs")
	}
	if b, _ := pem.Decode(first); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("not a PKCS#8 PEM block: %q", first)
	}

	k2, _ := GenerateKey("p256")
	err = WriteKey(path, k2, false)
	wantErr(t, err, "already exists, not overwriting it")
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("error %v is not fs.ErrExist", err)
	}
	if now, _ := os.ReadFile(path); string(now) != string(first) {
		t.Error("existing key was changed without force")
	}

	noErr(t, WriteKey(path, k2, true))
	now, _ := os.ReadFile(path)
	got, _ = ParsePrivateKey(now)
	if !k2.(*ecdsa.PrivateKey).Equal(got) {
		t.Error("force did not replace the key")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
}

func TestWriteKeyDanglingSymlink(t *testing.T) {
	// A symlink at the target, even a dangling one, is an existing file.
	dir := t.TempDir()
	path := filepath.Join(dir, "mx.key")
	noErr(t, os.Symlink(filepath.Join(dir, "elsewhere"), path))
	k, _ := GenerateKey("p256")
	if err := WriteKey(path, k, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("got %v, want fs.ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Error("wrote through the symlink")
	}
}

func TestWriteKeyMissingDir(t *testing.T) {
	k, _ := GenerateKey("p256")
	err := WriteKey(filepath.Join(t.TempDir(), "no", "such", "mx.key"), k, false)
	wantErr(t, err, "certs: write")
}

func TestParsePrivateKey(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	noErr(t, err)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pkcs8, _ := MarshalKeyPEM(ecKey)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	secDER, _ := x509.MarshalECPrivateKey(ecKey)
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: secDER})
	legacyEnc := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})
	enc := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})
	certFirst := append(mkCert(t, certSpec{cn: "x"}, nil).pem(), pkcs8...)

	tests := []struct {
		name    string
		data    []byte
		want    string
		wantErr string
	}{
		{name: "pkcs8", data: pkcs8, want: "ECDSA P-384"},
		{name: "pkcs1", data: pkcs1, want: "RSA 2048 bits"},
		{name: "sec1", data: sec1, want: "ECDSA P-384"},
		{name: "after a certificate", data: certFirst, want: "ECDSA P-384"},
		{name: "legacy encrypted", data: legacyEnc, wantErr: "the private key is encrypted"},
		{name: "pkcs8 encrypted", data: enc, wantErr: "openssl pkey"},
		{name: "no key", data: []byte("hello"), wantErr: "no PEM private key found"},
		{name: "garbage in block", data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), wantErr: "certs: parse private key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePrivateKey(tc.data)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			noErr(t, err)
			if got := DescribeKey(k.Public()); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestKeyMatchesCert(t *testing.T) {
	a := mkCert(t, certSpec{cn: "a.example"}, nil)
	b := mkCert(t, certSpec{cn: "b.example"}, nil)
	noErr(t, KeyMatchesCert(a.key, a.cert))
	wantErr(t, KeyMatchesCert(b.key, a.cert), "does not belong to the certificate CN=a.example")
	rsaKey, _ := GenerateKey("rsa2048")
	wantErr(t, KeyMatchesCert(rsaKey, a.cert), "private key (RSA 2048 bits) does not belong")
}
