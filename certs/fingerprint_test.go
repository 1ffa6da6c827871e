package certs

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/certid"
)

func TestParseFingerprint(t *testing.T) {
	digest := sha256.Sum256([]byte("tlsgate"))
	upper := certid.ColonHex(digest[:])
	plain := hex.EncodeToString(digest[:])
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "postfix form", in: upper},
		{name: "lower case with colons", in: strings.ToLower(upper)},
		{name: "no colons", in: plain},
		{name: "no colons upper", in: strings.ToUpper(plain)},
		{name: "sha256: prefix", in: "sha256:" + plain},
		{name: "SHA256: prefix with colons", in: "SHA256:" + upper},
		{name: "openssl output", in: "sha256 Fingerprint=" + upper},
		{name: "openssl 1.1 output", in: "SHA256 Fingerprint=" + upper},
		{name: "surrounding space", in: "  " + upper + "\n"},
		{name: "empty", in: "", wantErr: "empty fingerprint"},
		{name: "prefix only", in: "sha256:", wantErr: "empty fingerprint"},
		{name: "misplaced colon", in: plain[:3] + ":" + plain[3:], wantErr: "colons must separate pairs"},
		{name: "trailing colon", in: upper + ":", wantErr: "colons must separate pairs"},
		{name: "not hex", in: strings.Repeat("zz", 32), wantErr: "not hexadecimal"},
		{name: "odd length", in: plain[:63], wantErr: "not hexadecimal"},
		{name: "md5", in: plain[:32], wantErr: "an MD5 digest"},
		{name: "sha1", in: upper[:59], wantErr: "a SHA-1 digest"},
		{name: "too long", in: plain + "00", wantErr: "has 33 bytes, want 32"},
		{name: "sha256= prefix", in: "sha256=" + plain},
		{name: "openssl sha1 output", in: "SHA1 Fingerprint=" + upper[:59], wantErr: `only sha256 is supported (Postfix uses sha256 from compatibility_level 3.6), not "SHA1"; accepted forms:`},
		{name: "other digest prefix", in: "md5:" + upper[:47], wantErr: `not "md5"; accepted forms:`},
		{name: "not hex lists the forms", in: "sha256:" + strings.Repeat("zz", 32), wantErr: `not hexadecimal; accepted forms: 64 hex digits with or without colons`},
		{name: "public-key pin names no certificate", in: "sha256//" + base64.StdEncoding.EncodeToString(digest[:]), wantErr: "is a public-key pin (the digest of a public key, not of a certificate)"},
		{name: "sha256// with hex", in: "sha256//" + plain, wantErr: `a "sha256//" pin is the base64 of the public key's 32-byte SHA-256 digest`},
		{name: "bare base64", in: base64.StdEncoding.EncodeToString(digest[:]), wantErr: "is base64, which does not say what was digested"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFingerprint(tc.in)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			noErr(t, err)
			if !bytes.Equal(got, digest[:]) {
				t.Errorf("got %x, want %x", got, digest)
			}
		})
	}
}

// The fingerprints must be exactly what OpenSSL (and so Postfix) computes.
func TestFingerprintsMatchOpenSSL(t *testing.T) {
	needOpenSSL(t)
	rsaKey, err := GenerateKey("rsa2048")
	noErr(t, err)
	certs := map[string]testCert{
		"ecdsa": mkCert(t, certSpec{cn: "mx.example.net", dns: []string{"mx.example.net"}}, nil),
		"rsa":   mkCert(t, certSpec{cn: "mx.example.org", key: rsaKey}, nil),
	}
	for name, tc := range certs {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "c.pem", tc.pem(), 0o644)

			out := openssl(t, nil, "x509", "-in", p, "-noout", "-fingerprint", "-sha256")
			want, ok := strings.CutPrefix(out, "sha256 Fingerprint=")
			if !ok {
				want, ok = strings.CutPrefix(out, "SHA256 Fingerprint=")
			}
			if !ok {
				t.Fatalf("unexpected openssl output %q", out)
			}
			if got := FingerprintCert(tc.cert); got != want {
				t.Errorf("cert fingerprint\n got %s\nwant %s (openssl)", got, want)
			}
			// ParseFingerprint accepts openssl's line as is.
			b, err := ParseFingerprint(out)
			noErr(t, err)
			if certid.ColonHex(b) != want {
				t.Errorf("ParseFingerprint(%q) round trip gives %s", out, certid.ColonHex(b))
			}

			// Public key digest the way Postfix's TLS_README computes it:
			// openssl x509 -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -c
			pub := openssl(t, nil, "x509", "-in", p, "-noout", "-pubkey")
			pubFile := writeFile(t, dir, "pub.pem", []byte(pub+"\n"), 0o644)
			derFile := dir + "/pub.der"
			openssl(t, nil, "pkey", "-pubin", "-in", pubFile, "-outform", "DER", "-out", derFile)
			dgst := openssl(t, nil, "dgst", "-sha256", "-c", derFile)
			_, hexs, _ := strings.Cut(dgst, "= ")
			if got := FingerprintSPKI(tc.cert); got != strings.ToUpper(hexs) {
				t.Errorf("pubkey fingerprint\n got %s\nwant %s (openssl)", got, strings.ToUpper(hexs))
			}
		})
	}
}

func FuzzParseFingerprint(f *testing.F) {
	digest := sha256.Sum256([]byte("seed"))
	for _, s := range []string{
		certid.ColonHex(digest[:]),
		hex.EncodeToString(digest[:]),
		"sha256:" + hex.EncodeToString(digest[:]),
		"sha256 Fingerprint=" + certid.ColonHex(digest[:]),
		"", ":", "sha256:", "AB:CD", "zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseFingerprint(s)
		if err != nil {
			if b != nil {
				t.Fatalf("error %v with non-nil result", err)
			}
			if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		if len(b) != sha256.Size {
			t.Fatalf("ParseFingerprint(%q) returned %d bytes", s, len(b))
		}
		// The canonical forms parse back to the same bytes.
		for _, form := range []string{certid.ColonHex(b), hex.EncodeToString(b), "sha256:" + strings.ToLower(certid.ColonHex(b))} {
			b2, err := ParseFingerprint(form)
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("round trip of %q via %q: %x, %v", s, form, b2, err)
			}
		}
	})
}
