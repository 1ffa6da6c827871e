package certs_test

import (
	"fmt"
	"log"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/certid"
)

// The fingerprints of a partner's certificate, in the form Postfix logs them
// and tlsgate.toml's "fingerprints" takes. The expected values were
// computed with
//
//	openssl x509 -in testdata/mx.partner.example.pem -noout -fingerprint -sha256
//	openssl x509 -in testdata/mx.partner.example.pem -pubkey -noout |
//	    openssl pkey -pubin -outform DER | openssl dgst -sha256 -c
func ExampleFingerprintCert() {
	cs, err := certs.ReadCertificateFile("testdata/mx.partner.example.pem")
	if err != nil {
		log.Fatal(err)
	}
	info := certs.Describe(cs[0])
	fmt.Println(info.Subject)
	fmt.Println(certs.FingerprintCert(cs[0]))
	fmt.Println(certs.FingerprintSPKI(cs[0]))
	// Output:
	// CN=mx.partner.example,O=Partner AG
	// 80:D9:44:46:24:7D:60:59:CC:C6:12:11:E3:5D:4F:07:49:82:05:26:B9:C1:7C:A4:A2:64:0A:24:CB:96:F4:2D
	// D9:89:A9:06:4B:26:1F:30:EB:B5:D9:36:98:8C:91:A3:B6:C9:3B:43:AE:1B:40:88:74:10:B3:26:71:1D:57:B4
}

// Fingerprints are accepted as admins paste them: from OpenSSL output,
// lower case, without colons, or with a "sha256:" prefix.
func ExampleParseFingerprint() {
	for _, s := range []string{
		"sha256 Fingerprint=80:D9:44:46:24:7D:60:59:CC:C6:12:11:E3:5D:4F:07:49:82:05:26:B9:C1:7C:A4:A2:64:0A:24:CB:96:F4:2D",
		"sha256:80d94446247d6059ccc61211e35d4f0749820526b9c17ca4a2640a24cb96f42d",
		"80:d9:44:46", // too short
	} {
		b, err := certs.ParseFingerprint(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(certid.ColonHex(b))
	}
	// Output:
	// 80:D9:44:46:24:7D:60:59:CC:C6:12:11:E3:5D:4F:07:49:82:05:26:B9:C1:7C:A4:A2:64:0A:24:CB:96:F4:2D
	// 80:D9:44:46:24:7D:60:59:CC:C6:12:11:E3:5D:4F:07:49:82:05:26:B9:C1:7C:A4:A2:64:0A:24:CB:96:F4:2D
	// certs: fingerprint "80:d9:44:46" has 4 bytes, want 32 (SHA-256)
}
