package milter

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/policy"
)

func bag(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(n string) (string, bool) {
		v, ok := m[n]
		return v, ok
	}
}

func mustDN(t *testing.T, s string) certid.DN {
	t.Helper()
	d, err := certid.ParseDN(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustFP(t *testing.T, s string) certid.Fingerprint {
	t.Helper()
	f, err := certid.ParseFingerprint(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const sha256FP = "66:76:5D:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:6B:36"

func TestFactsFromMacros(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name   string
		mta    policy.MTA
		get    func(string) (string, bool)
		want   policy.Facts
		verify string
		fpProb string // substring of FingerprintProblem, "" = none
		notes  int
	}{
		{
			// Observed on Postfix 3.7.11: plaintext, requested macros.
			name: "postfix plaintext",
			mta:  policy.Postfix,
			get: bag("{client_addr}", "127.0.0.1", "{client_name}", "localhost", "{client_resolve}", "OK",
				"{mail_addr}", "sender@lab.test"),
			want: policy.Facts{ClientAddr: lo, ClientName: "localhost", Sender: "sender@lab.test", Verify: policy.VerifyNone},
		},
		{
			name: "postfix TLS no cert (or untrusted): no cert macros at all",
			mta:  policy.Postfix,
			get: bag("{client_addr}", "127.0.0.1", "{client_name}", "localhost",
				"{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256"),
			want:   policy.Facts{ClientAddr: lo, ClientName: "localhost", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: policy.VerifyUnknown},
			verify: "UNVERIFIED",
		},
		{
			name: "postfix trusted: CN only, decoded, not xtext",
			mta:  policy.Postfix,
			get: bag("{client_addr}", "127.0.0.1", "{client_name}", "localhost",
				"{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256",
				"{cert_subject}", "client.lab.test", "{cert_issuer}", "Lab Test CA"),
			want: policy.Facts{ClientAddr: lo, ClientName: "localhost", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256,
				Verify: policy.VerifyTrusted, SubjectCN: "client.lab.test", IssuerCN: "Lab Test CA"},
			verify: "OK",
		},
		{
			name: "postfix trusted cert without CN: present but empty",
			mta:  policy.Postfix,
			get: bag("{tls_version}", "TLSv1.2", "{cipher}", "ECDHE-RSA-AES128-GCM-SHA256", "{cipher_bits}", "128",
				"{cert_subject}", "", "{cert_issuer}", ""),
			want:   policy.Facts{TLSVersion: "TLSv1.2", Cipher: "ECDHE-RSA-AES128-GCM-SHA256", Bits: 128, Verify: policy.VerifyTrusted},
			verify: "OK",
		},
		{
			name:   "postfix issuer without subject is not trusted",
			mta:    policy.Postfix,
			get:    bag("{tls_version}", "TLSv1.3", "{cipher_bits}", "256", "{cert_issuer}", "Lab Test CA"),
			want:   policy.Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: policy.VerifyUnknown},
			verify: "UNVERIFIED",
		},
		{
			name: "postfix IPv6 client, unknown name",
			mta:  policy.Postfix,
			get:  bag("{client_addr}", "IPv6:2001:db8::10", "{client_name}", "unknown"),
			want: policy.Facts{ClientAddr: netip.MustParseAddr("2001:db8::10"), Verify: policy.VerifyNone},
		},
		{
			name: "forged reverse name is no verified name",
			mta:  policy.Postfix,
			get:  bag("{client_addr}", "192.0.2.10", "{client_name}", "mx.company-b.example", "{client_resolve}", "FORGED"),
			want: policy.Facts{ClientAddr: netip.MustParseAddr("192.0.2.10"), Verify: policy.VerifyNone},
		},
		{
			name:   "postfix plus sign is literal (no xtext on Postfix milter macros)",
			mta:    policy.Postfix,
			get:    bag("{tls_version}", "TLSv1.3", "{cert_subject}", "a+20b", "{cert_issuer}", "CA+1"),
			want:   policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyTrusted, SubjectCN: "a+20b", IssuerCN: "CA+1"},
			verify: "OK",
		},
		{
			// Observed on Sendmail 8.17.1.9: plaintext sends no TLS macros.
			name: "sendmail plaintext",
			mta:  policy.Sendmail,
			get:  bag("{client_addr}", "127.0.0.1", "{client_name}", "localhost", "{mail_addr}", "sender@lab.test"),
			want: policy.Facts{ClientAddr: lo, ClientName: "localhost", Sender: "sender@lab.test", Verify: policy.VerifyNone, FingerprintsKnown: true},
		},
		{
			name: "sendmail TLS no cert: macros sent empty",
			mta:  policy.Sendmail,
			get: bag("{client_addr}", "127.0.0.1", "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256",
				"{cert_subject}", "", "{cert_issuer}", "", "{cn_subject}", "", "{cn_issuer}", "", "{cert_md5}", "", "{verify}", "NO"),
			want:   policy.Facts{ClientAddr: lo, TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: policy.VerifyNone, FingerprintsKnown: true},
			verify: "NO",
		},
		{
			name: "sendmail CA-signed: xtext DNs and CNs, md5 only",
			mta:  policy.Sendmail,
			get: bag("{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256", "{verify}", "OK",
				"{cert_subject}", "/C=DE/O=Lab+20Test/CN=client.lab.test", "{cert_issuer}", "/C=DE/O=Lab+20Test/CN=Lab+20Test+20CA",
				"{cn_subject}", "client.lab.test", "{cn_issuer}", "Lab+20Test+20CA", "{cert_md5}", "D1:8A:D0:34:DD:CD:0B:D9:D7:F4:CE:8A:62:96:14:9C"),
			want: policy.Facts{TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: policy.VerifyTrusted,
				SubjectCN: "client.lab.test", IssuerCN: "Lab Test CA",
				SubjectDN: mustDN(t, "/C=DE/O=Lab Test/CN=client.lab.test"), IssuerDN: mustDN(t, "/C=DE/O=Lab Test/CN=Lab Test CA"),
				FingerprintsKnown: true},
			verify: "OK",
			fpProb: "only an MD5 fingerprint",
		},
		{
			name: "sendmail self-signed: FAIL, names reported anyway, sha256 cert_fp",
			mta:  policy.Sendmail,
			get: bag("{tls_version}", "TLSv1.3", "{cipher_bits}", "256", "{verify}", "FAIL",
				"{cert_subject}", "/C=DE/O=Lab+20Test/CN=selfsigned.lab.test", "{cert_issuer}", "/C=DE/O=Lab+20Test/CN=selfsigned.lab.test",
				"{cn_subject}", "selfsigned.lab.test", "{cn_issuer}", "selfsigned.lab.test", "{cert_fp}", sha256FP),
			want: policy.Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: policy.VerifyUntrusted,
				SubjectCN: "selfsigned.lab.test", IssuerCN: "selfsigned.lab.test",
				SubjectDN: mustDN(t, "/C=DE/O=Lab Test/CN=selfsigned.lab.test"), IssuerDN: mustDN(t, "/C=DE/O=Lab Test/CN=selfsigned.lab.test"),
				Fingerprints: []certid.Fingerprint{mustFP(t, sha256FP)}, FingerprintsKnown: true},
			verify: "FAIL",
		},
		{
			name:   "sendmail sha1 cert_fp is not comparable",
			mta:    policy.Sendmail,
			get:    bag("{tls_version}", "TLSv1.2", "{verify}", "OK", "{cert_fp}", "01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14"),
			want:   policy.Facts{TLSVersion: "TLSv1.2", Verify: policy.VerifyTrusted, FingerprintsKnown: true},
			verify: "OK",
			fpProb: "SHA-1",
		},
		{
			name:   "sendmail cert but no fingerprint macro",
			mta:    policy.Sendmail,
			get:    bag("{tls_version}", "TLSv1.3", "{verify}", "OK"),
			want:   policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyTrusted, FingerprintsKnown: true},
			verify: "OK",
			fpProb: "no fingerprint macro",
		},
		{
			name:   "sendmail verify NOT (not requested)",
			mta:    policy.Sendmail,
			get:    bag("{tls_version}", "TLSv1.3", "{verify}", "NOT", "{cert_md5}", ""),
			want:   policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyNone, FingerprintsKnown: true},
			verify: "NOT",
		},
		{
			name:   "sendmail verify absent in a TLS session",
			mta:    policy.Sendmail,
			get:    bag("{tls_version}", "TLSv1.3", "{cert_md5}", ""),
			want:   policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyUnknown, FingerprintsKnown: true},
			verify: "UNKNOWN",
			fpProb: "no fingerprint macro",
		},
		{
			name: "sendmail IPv6 uncompressed, forged name in brackets",
			mta:  policy.Sendmail,
			get:  bag("{client_addr}", "IPv6:2001:0db8:0000:0000:0000:0000:0000:0010", "{client_name}", "[IPv6:2001:db8::10]"),
			want: policy.Facts{ClientAddr: netip.MustParseAddr("2001:db8::10"), Verify: policy.VerifyNone, FingerprintsKnown: true},
		},
		{
			name: "sendmail BadCertificate stand-ins and hostile xtext",
			mta:  policy.Sendmail,
			get: bag("{tls_version}", "TLSv1.3", "{verify}", "OK", "{cn_subject}", "BadCertificateTooLong", "{cn_issuer}", "Evil+0D+0AX-Injected:+20yes",
				"{cert_subject}", "/CN=a+28b+29+22c+5C", "{cert_fp}", sha256FP),
			want: policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyTrusted, IssuerCN: "Evil\r\nX-Injected: yes",
				SubjectDN: mustDN(t, `/CN=a(b)"c\`), Fingerprints: []certid.Fingerprint{mustFP(t, sha256FP)}, FingerprintsKnown: true},
			verify: "OK",
		},
		{
			name: "sendmail bad xtext is treated as absent",
			mta:  policy.Sendmail,
			get:  bag("{tls_version}", "TLSv1.3", "{verify}", "OK", "{cn_subject}", "bad+ZZ", "{cert_subject}", "/CN=x+2", "{cert_fp}", sha256FP),
			want: policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyTrusted,
				Fingerprints: []certid.Fingerprint{mustFP(t, sha256FP)}, FingerprintsKnown: true},
			verify: "OK",
			notes:  2,
		},
		{
			name: "sendmail cn falls back to DN when cn macros absent",
			mta:  policy.Sendmail,
			get:  bag("{tls_version}", "TLSv1.3", "{verify}", "OK", "{cert_subject}", "/O=X/CN=a.example", "{cert_issuer}", "/CN=Some+20CA", "{cert_fp}", sha256FP),
			want: policy.Facts{TLSVersion: "TLSv1.3", Verify: policy.VerifyTrusted, SubjectCN: "a.example", IssuerCN: "Some CA",
				SubjectDN: mustDN(t, "/O=X/CN=a.example"), IssuerDN: mustDN(t, "/CN=Some CA"),
				Fingerprints: []certid.Fingerprint{mustFP(t, sha256FP)}, FingerprintsKnown: true},
			verify: "OK",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := factsFromMacros(tc.mta, tc.get)
			if !reflect.DeepEqual(o.Facts, tc.want) {
				t.Errorf("facts\n got %+v\nwant %+v", o.Facts, tc.want)
			}
			if o.Verify != tc.verify {
				t.Errorf("verify word %q, want %q", o.Verify, tc.verify)
			}
			if (tc.fpProb == "") != (o.FingerprintProblem == "") || !strings.Contains(o.FingerprintProblem, tc.fpProb) {
				t.Errorf("fingerprint problem %q, want one containing %q", o.FingerprintProblem, tc.fpProb)
			}
			if len(o.Notes) != tc.notes {
				t.Errorf("notes %q, want %d", o.Notes, tc.notes)
			}
		})
	}
}

func TestParseClientAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":                  "127.0.0.1",
		"IPv6:2001:db8::1":           "2001:db8::1",
		"ipv6:2001:db8::1":           "2001:db8::1",
		"[IPv6:2001:db8::1]":         "2001:db8::1",
		"[192.0.2.1]":                "192.0.2.1",
		"::ffff:192.0.2.1":           "192.0.2.1",
		"IPv6:::ffff:192.0.2.1":      "192.0.2.1",
		"IPv6:2001:0db8:0:0:0:0:0:1": "2001:db8::1",
		"":                           "invalid IP",
		"localhost":                  "invalid IP",
	} {
		if got := parseClientAddr(in).String(); got != want {
			t.Errorf("parseClientAddr(%q) = %s, want %s", in, got, want)
		}
	}
}
