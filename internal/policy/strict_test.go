package policy

import (
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// TestAtLeastAsStrict checks the partial order one demand at a time, in
// both directions of each pair.
func TestAtLeastAsStrict(t *testing.T) {
	dn := func(s string) DN {
		d, err := certid.ParseDN(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var (
		p1, p2, p3 = Fingerprint{1}, Fingerprint{2}, Fingerprint{3}
		enc        = Requirements{Encryption: true}
		bits128    = Requirements{Encryption: true, MinBits: 128}
		bits256    = Requirements{Encryption: true, MinBits: 256}
		ask        = Requirements{Encryption: true, RequestCert: true}
		valid      = Requirements{Encryption: true, RequestCert: true, ValidateCert: true}
		host       = Requirements{Encryption: true, ValidateCert: true, MatchCN: true}
		cnA        = Requirements{Encryption: true, ValidateCert: true, MatchCN: true, CN: "mx.a.example"}
		cnAUpper   = Requirements{Encryption: true, ValidateCert: true, MatchCN: true, CN: "MX.A.Example."}
		cnB        = Requirements{Encryption: true, ValidateCert: true, MatchCN: true, CN: "mx.b.example"}
		subj       = Requirements{Encryption: true, ValidateCert: true, SubjectDN: dn("CN=mx, O=A, C=DE")}
		subjOrder  = Requirements{Encryption: true, ValidateCert: true, SubjectDN: dn("/C=DE/O=A/CN=mx")}
		issDN      = Requirements{Encryption: true, ValidateCert: true, IssuerDN: dn("CN=CA, O=A")}
		issCN      = Requirements{Encryption: true, ValidateCert: true, IssuerCN: "Partner  CA"}
		issCNfold  = Requirements{Encryption: true, ValidateCert: true, IssuerCN: "partner ca"}
		pins123    = Requirements{Encryption: true, RequestCert: true, Fingerprints: []Fingerprint{p1, p2, p3}}
		pins12     = Requirements{Encryption: true, RequestCert: true, Fingerprints: []Fingerprint{p2, p1}}
		pins4      = Requirements{Encryption: true, RequestCert: true, Fingerprints: []Fingerprint{{4}}}
		pinsValid  = Requirements{Encryption: true, RequestCert: true, ValidateCert: true, Fingerprints: []Fingerprint{p1}}
	)
	e := func(r Requirements) Rule { return Rule{Mode: Enforce, Req: r} }
	m := func(r Requirements) Rule { return Rule{Mode: Monitor, Req: r} }
	for _, tc := range []struct {
		name   string
		a, b   Rule
		ab, ba bool   // a >= b, b >= a
		lacks  string // in a.Shortfalls(b), when !ab
	}{
		{"equal", e(valid), e(valid), true, true, ""},
		{"encryption", e(enc), e(Requirements{}), true, false, ""},
		{"bits", e(bits256), e(bits128), true, false, ""},
		{"bits vs plain", e(bits128), e(enc), true, false, ""},
		{"bits wording", e(bits128), e(bits256), false, true, "min_bits = 256 (it has 128)"},
		{"enforce over monitor", e(enc), m(enc), true, false, ""},
		{"monitor wording", m(valid), e(enc), false, false, `mode = "enforce"`},
		{"monitor with more", m(valid), m(enc), true, false, ""},
		{"request", e(ask), e(enc), true, false, ""},
		{"validate", e(valid), e(ask), true, false, ""},
		{"validate wording", e(ask), e(valid), false, true, "validate_cert = true"},
		{"host name", e(host), e(Requirements{Encryption: true, ValidateCert: true}), true, false, ""},
		{"cn case and dot", e(cnA), e(cnAUpper), true, true, ""},
		{"different cn", e(cnA), e(cnB), false, false, `cn = "mx.b.example"`},
		{"cn is not the host name", e(cnA), e(host), false, false, "match_cn = true (the certificate names the peer's host)"},
		{"subject order", e(subj), e(subjOrder), true, true, ""},
		{"subject", e(subj), e(Requirements{Encryption: true, ValidateCert: true}), true, false, ""},
		{"issuer dn", e(issDN), e(subj), false, false, `subject_dn = "`},
		{"issuer cn fold", e(issCN), e(issCNfold), true, true, ""},
		{"issuer cn wording", e(valid), e(issCN), false, false, `issuer_cn = "Partner  CA"`},
		{"pin subset", e(pins12), e(pins123), true, false, ""},
		{"pin superset wording", e(pins123), e(pins12), false, true, "fingerprints: one or more of its 2 pins and no others"},
		{"disjoint pins", e(pins4), e(pins12), false, false, "fingerprints"},
		{"pins over none", e(pins4), e(ask), true, false, ""},
		{"pins are no validation", e(pins4), e(valid), false, false, "validate_cert = true"},
		{"validation is no pin", e(valid), e(pins4), false, false, "fingerprints"},
		{"pin and validation", e(pinsValid), e(valid), true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.AtLeastAsStrict(tc.b); got != tc.ab {
				t.Errorf("a >= b = %v, want %v (shortfalls %q)", got, tc.ab, tc.a.Shortfalls(tc.b))
			}
			if got := tc.b.AtLeastAsStrict(tc.a); got != tc.ba {
				t.Errorf("b >= a = %v, want %v (shortfalls %q)", got, tc.ba, tc.b.Shortfalls(tc.a))
			}
			if !tc.ab && !strings.Contains(strings.Join(tc.a.Shortfalls(tc.b), "; "), tc.lacks) {
				t.Errorf("shortfalls %q lack %q", tc.a.Shortfalls(tc.b), tc.lacks)
			}
			// Reflexive.
			if !tc.a.AtLeastAsStrict(tc.a) || !tc.b.AtLeastAsStrict(tc.b) {
				t.Error("not reflexive")
			}
		})
	}
}

// TestAtLeastAsStrictTransitive: over every triple of a set of rules.
func TestAtLeastAsStrictTransitive(t *testing.T) {
	var rules []Rule
	for _, mode := range []Mode{Enforce, Monitor} {
		for _, bits := range []int{0, 128} {
			for _, v := range []bool{false, true} {
				for _, cn := range []string{"", "mx.a.example"} {
					for _, pins := range [][]Fingerprint{nil, {{1}}, {{1}, {2}}} {
						r := Requirements{Encryption: true, MinBits: bits, ValidateCert: v || cn != "", MatchCN: cn != "", CN: cn, Fingerprints: pins}
						rules = append(rules, Rule{Mode: mode, Req: r})
					}
				}
			}
		}
	}
	for _, a := range rules {
		for _, b := range rules {
			for _, c := range rules {
				if a.AtLeastAsStrict(b) && b.AtLeastAsStrict(c) && !a.AtLeastAsStrict(c) {
					t.Fatalf("not transitive: %+v >= %+v >= %+v", a, b, c)
				}
			}
		}
	}
}
