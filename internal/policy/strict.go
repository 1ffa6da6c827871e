package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Rule is what one endpoint demands in one direction: its requirements,
// and whether it refuses (Enforce) or only reports (Monitor) a peer that
// misses them.
type Rule struct {
	// Mode is Enforce or Monitor.
	Mode Mode
	// Req are the requirements.
	Req Requirements
}

// AtLeastAsStrict reports whether r demands at least what o demands, so
// that every peer r lets through o would let through too. It is a partial
// order (reflexive, antisymmetric up to equal values, transitive); r is at
// least as strict as o exactly when each of these holds:
//
//   - mode: if o enforces, r enforces (enforce is stricter than monitor);
//   - encryption: if o requires TLS, r does;
//   - min_bits: r's is at least o's;
//   - request_cert, validate_cert: if o asks for or validates the
//     certificate, r does;
//   - names: if o checks the subject CN (match_cn, cn), r checks the same
//     name (both the peer's host name, or the same cn); if o has a
//     subject_dn, issuer_dn or issuer_cn, r has the same value (names
//     compare as tlsgate compares them with certificates: case and spacing
//     aside, DNs in any attribute order);
//   - fingerprints: if o pins, r pins a non-empty subset of o's pins. A pin
//     set accepts a certificate whose digest is in it, so a smaller
//     non-empty set accepts fewer; no pins accept any certificate, and
//     pins are no substitute for validate_cert (they may accept a
//     certificate no CA signed).
//
// The inbound action (defer or reject) is not part of the order: both
// refuse the mail.
func (r Rule) AtLeastAsStrict(o Rule) bool { return len(r.Shortfalls(o)) == 0 }

// Shortfalls lists, in the words of the file, each demand of o that r
// lacks (mode = "enforce", validate_cert = true, min_bits = 128 (it has
// 0), ...); none when r is at least as strict as o.
func (r Rule) Shortfalls(o Rule) []string {
	var out []string
	if o.Mode == Enforce && r.Mode != Enforce {
		out = append(out, `mode = "enforce"`)
	}
	a, b := &r.Req, &o.Req
	if b.Encryption && !a.Encryption {
		out = append(out, "encryption = true")
	}
	if a.MinBits < b.MinBits {
		out = append(out, "min_bits = "+strconv.Itoa(b.MinBits)+" (it has "+strconv.Itoa(a.MinBits)+")")
	}
	if b.RequestCert && !a.RequestCert {
		out = append(out, "request_cert = true")
	}
	if b.ValidateCert && !a.ValidateCert {
		out = append(out, "validate_cert = true")
	}
	if b.MatchCN && (!a.MatchCN || !sameCNRequirement(a.CN, b.CN)) {
		if b.CN == "" {
			out = append(out, "match_cn = true (the certificate names the peer's host)")
		} else {
			out = append(out, "cn = "+strconv.Quote(b.CN))
		}
	}
	if b.SubjectDN != nil && (a.SubjectDN == nil || !a.SubjectDN.Equal(b.SubjectDN)) {
		out = append(out, "subject_dn = "+strconv.Quote(b.SubjectDN.String()))
	}
	if b.IssuerDN != nil && (a.IssuerDN == nil || !a.IssuerDN.Equal(b.IssuerDN)) {
		out = append(out, "issuer_dn = "+strconv.Quote(b.IssuerDN.String()))
	}
	if b.IssuerCN != "" && certid.FoldValue(a.IssuerCN) != certid.FoldValue(b.IssuerCN) {
		out = append(out, "issuer_cn = "+strconv.Quote(b.IssuerCN))
	}
	if len(b.Fingerprints) > 0 && !pinSubset(a.Fingerprints, b.Fingerprints) {
		out = append(out, fmt.Sprintf("fingerprints: one or more of its %d pins and no others", len(b.Fingerprints)))
	}
	return out
}

// sameCNRequirement reports whether two cn values ask for the same name:
// both the peer's host name (empty), or the same name in the form the
// MTAs compare (A-labels, case aside).
func sameCNRequirement(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	return strings.EqualFold(certHostName(a), certHostName(b))
}

// pinSubset reports whether a is a non-empty subset of b.
func pinSubset(a, b []Fingerprint) bool {
	if len(a) == 0 {
		return false
	}
	for _, f := range a {
		if !slices.Contains(b, f) {
			return false
		}
	}
	return true
}
