package policy

import (
	"net/netip"
	"testing"
)

func TestSameHostCN(t *testing.T) {
	for _, tc := range []struct {
		cn, want string
		same     bool
	}{
		{"mx.example.com", "mx.example.com", true},
		{"MX.Example.COM", "mx.example.com.", true},
		{"mx.xn--bcher-kva.example", "MX.Bücher.example", true},
		{"mx.bücher.example", "mx.xn--bcher-kva.example", false},        // the peer's side is never mapped
		{"ｍｘ１.company-b.example", "mx1.company-b.example", false},       // full-width look-alike
		{"mx\u200b1.company-b.example", "mx1.company-b.example", false}, // zero-width space
		{"mx1.company-b.example\u00ad", "mx1.company-b.example", false}, // soft hyphen
		{"mx.xn--bcher-kva.example", "mx.bucher.example", false},
		{"other.example", "mx.example.com", false},
		{"", "mx.example.com", false},
		{"Bücher Root CA", "mx.xn--bcher-kva.example", false},
	} {
		if got := sameHostCN(tc.cn, tc.want); got != tc.same {
			t.Errorf("sameHostCN(%q, %q) = %v, want %v", tc.cn, tc.want, got, tc.same)
		}
	}
}

// TestJudgeIDNCN: an inbound cn written with Unicode labels matches the
// A-label CN of the client's certificate.
func TestJudgeIDNCN(t *testing.T) {
	p, err := Parse("t.toml", []byte(`mta = "postfix"
[[endpoint]]
name = "idn"
hosts = ["192.0.2.7"]
  [endpoint.inbound]
  validate_cert = true
  cn = "MX.Bücher.example"
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cn   string
		pass bool
	}{
		{"mx.xn--bcher-kva.example", true},
		{"mx.bucher.example", false},
	} {
		f := &Facts{ClientAddr: netip.MustParseAddr("192.0.2.7"), TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256,
			Verify: VerifyTrusted, SubjectCN: tc.cn, IssuerCN: "Lab CA"}
		v := now(p).Judge(f)
		if v.Refuse == tc.pass {
			t.Errorf("cn %q: verdict %+v, want pass=%v", tc.cn, v, tc.pass)
		}
	}
}
