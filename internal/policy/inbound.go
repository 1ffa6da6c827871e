package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Verify is what the MTA says about the client certificate.
type Verify int

// Certificate states.
const (
	// VerifyUnknown: the MTA cannot tell "no certificate" from "untrusted
	// certificate" (a Postfix milter sees neither).
	VerifyUnknown Verify = iota
	// VerifyNone: no certificate was presented (Sendmail {verify} NO/NOT,
	// or a plaintext session).
	VerifyNone
	// VerifyUntrusted: a certificate was presented but did not validate
	// (Sendmail {verify} FAIL, Postfix policy fingerprint without subject).
	VerifyUntrusted
	// VerifyTrusted: a certificate validated against the CA store
	// (Sendmail {verify} OK, Postfix {cert_issuer} present).
	VerifyTrusted
)

// String returns none, untrusted, trusted or unknown.
func (v Verify) String() string {
	switch v {
	case VerifyNone:
		return "none"
	case VerifyUntrusted:
		return "untrusted"
	case VerifyTrusted:
		return "trusted"
	}
	return "unknown"
}

// ParseVerify reads none|untrusted|trusted|unknown.
func ParseVerify(s string) (Verify, error) {
	switch strings.ToLower(s) {
	case "none", "no":
		return VerifyNone, nil
	case "untrusted", "fail":
		return VerifyUntrusted, nil
	case "trusted", "ok":
		return VerifyTrusted, nil
	case "unknown", "":
		return VerifyUnknown, nil
	}
	return 0, fmt.Errorf("verify state %q: want none, untrusted, trusted or unknown", s)
}

// Facts are the normalised facts of one inbound SMTP session, as an MTA
// adapter learned them.
type Facts struct {
	// ClientAddr is the client's IP address.
	ClientAddr netip.Addr
	// ClientName is the client's verified host name ("" or "unknown": none).
	ClientName string
	// Sender is the envelope sender address, without angle brackets.
	Sender string
	// TLSVersion is the protocol ("TLSv1.3"), "" for a plaintext session.
	TLSVersion string
	// Cipher is the negotiated cipher name.
	Cipher string
	// Bits is the cipher strength actually used.
	Bits int
	// Verify is the state of the client certificate.
	Verify Verify
	// SubjectCN and IssuerCN are the certificate's common names ("" if
	// not reported).
	SubjectCN, IssuerCN string
	// SubjectDN and IssuerDN are the certificate's names (nil if not
	// reported).
	SubjectDN, IssuerDN DN
	// Fingerprints are the digests the MTA reported (certificate and/or
	// public key); meaningful only if FingerprintsKnown.
	Fingerprints []Fingerprint
	// FingerprintsKnown says whether the reporter can see fingerprints at
	// all. When false, a fingerprint requirement is left to another part
	// (on Postfix: the policy-delegation server) and listed in
	// Verdict.Unchecked.
	FingerprintsKnown bool
}

// Check names one requirement.
type Check string

// The checks a verdict may report.
const (
	CheckEncryption  Check = "encryption"
	CheckMinBits     Check = "min_bits"
	CheckCert        Check = "validate_cert"
	CheckCN          Check = "cn"
	CheckSubjectDN   Check = "subject_dn"
	CheckIssuerDN    Check = "issuer_dn"
	CheckIssuerCN    Check = "issuer_cn"
	CheckFingerprint Check = "fingerprints"
)

// Failure is one requirement an endpoint's peer missed.
type Failure struct {
	// Endpoint whose requirement failed.
	Endpoint *Endpoint
	// Check is the requirement.
	Check Check
	// Want and Got describe the expected and the observed value.
	Want, Got string
}

// String returns "endpoint=NAME check=CHECK want=... got=...".
func (f Failure) String() string {
	return fmt.Sprintf("endpoint=%s check=%s want=%s got=%s", f.Endpoint.Name, f.Check, quoteIfNeeded(f.Want), quoteIfNeeded(f.Got))
}

// Result is the outcome of an inbound judgement.
type Result int

// Results.
const (
	// NotCovered: no endpoint covers the session.
	NotCovered Result = iota
	// Pass: every covering endpoint is satisfied.
	Pass
	// Fail: at least one covering endpoint is not.
	Fail
)

// String returns none, pass or fail (the Authentication-Results words).
func (r Result) String() string {
	switch r {
	case Pass:
		return "pass"
	case Fail:
		return "fail"
	}
	return "none"
}

// Verdict is the judgement of one inbound session or message.
type Verdict struct {
	// Result is NotCovered, Pass or Fail.
	Result Result
	// Endpoints cover the session, in the order client address, client
	// name, sender domain, without repeats: for each of the three, the
	// most specific endpoint that defines inbound requirements.
	Endpoints []*Endpoint
	// Failures lists every missed requirement.
	Failures []Failure
	// Unchecked lists requirements the reporter could not see (Got empty).
	Unchecked []Failure
	// Refuse is true when an enforced endpoint failed: no mail may be
	// accepted.
	Refuse bool
	// Action is Reject if any failing enforced endpoint says reject, else
	// Defer. Meaningful only when Refuse.
	Action Action
	// Exceptions are the covering endpoints that are unexpired exceptions
	// (exception_to) for inbound: the decision is theirs instead of the
	// endpoint they relax, and logs say so (exception=NAME).
	Exceptions []*Endpoint

	// excused: an exception let the session through where the endpoints
	// it relaxes would have refused it (see Outcome).
	excused bool
}

// Names returns the covering endpoints' names joined with commas.
func (v *Verdict) Names() string { return joinNames(v.Endpoints) }

// ExceptionNames returns the names of v.Exceptions joined with commas, ""
// if none.
func (v *Verdict) ExceptionNames() string { return joinNames(v.Exceptions) }

func joinNames(eps []*Endpoint) string {
	names := make([]string, len(eps))
	for i, ep := range eps {
		names[i] = ep.Name
	}
	return strings.Join(names, ",")
}

// Reason returns the failures as "; "-separated key=value groups, for logs.
func (v *Verdict) Reason() string {
	parts := make([]string, len(v.Failures))
	for i, f := range v.Failures {
		parts[i] = f.String()
	}
	return strings.Join(parts, "; ")
}

// Covering returns the endpoints that cover a session by client address,
// verified client host name and envelope sender domain, without repeats:
// for each, the most specific endpoint that defines inbound requirements
// and is active at the view's instant. A zoned address (fe80::1%eth0)
// matches its address without the zone.
func (v View) Covering(addr netip.Addr, clientName, sender string) []*Endpoint {
	return v.p.covering(addr, clientName, sender, v.gone(Inbound))
}

func (p *Policy) covering(addr netip.Addr, clientName, sender string, g gone) []*Endpoint {
	var out []*Endpoint
	add := func(i int32, ok bool) {
		if !ok {
			return
		}
		ep := p.byID[i]
		for _, e := range out {
			if e == ep {
				return
			}
		}
		out = append(out, ep)
	}
	ix := p.ix[Inbound]
	if addr.IsValid() {
		add(ix.addr(addr, g))
	}
	if clientName != "" && !strings.EqualFold(clientName, "unknown") {
		if n, err := NormalizeName(clientName); err == nil {
			add(ix.name(n, g))
		}
	}
	if d := senderDomain(sender); d != "" {
		if n, err := NormalizeName(d); err == nil {
			add(ix.name(n, g))
		}
	}
	return out
}

func senderDomain(s string) string {
	s = strings.Trim(strings.TrimSpace(s), "<>")
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return ""
	}
	return s[at+1:]
}

// Judge decides whether an inbound session meets the inbound requirements
// of every endpoint that covers it at the view's instant. When an
// unexpired exception covers it, the verdict lists it (Exceptions), and
// if the endpoints it relaxes would have refused the session where the
// exception lets it through, Outcome says OutcomeException.
func (v View) Judge(f *Facts) Verdict {
	vd := v.p.judge(f, v.gone(Inbound))
	for _, ep := range vd.Endpoints {
		if exceptionIn(ep, Inbound) != nil {
			vd.Exceptions = append(vd.Exceptions, ep)
		}
	}
	if len(vd.Exceptions) > 0 && !vd.Refuse {
		without := v.p.judge(f, v.withoutExceptions(Inbound))
		vd.excused = without.Refuse
	}
	return vd
}

func (p *Policy) judge(f *Facts, g gone) Verdict {
	v := Verdict{Endpoints: p.covering(f.ClientAddr, f.ClientName, f.Sender, g)}
	for _, ep := range v.Endpoints {
		n := len(v.Failures)
		v.Failures, v.Unchecked = judgeOne(ep, f, v.Failures, v.Unchecked)
		if len(v.Failures) > n && ep.Mode == Enforce {
			if !v.Refuse || ep.Action == Reject {
				v.Action = ep.Action
			}
			v.Refuse = true
		}
	}
	switch {
	case len(v.Endpoints) == 0:
		v.Result = NotCovered
	case len(v.Failures) > 0:
		v.Result = Fail
	default:
		v.Result = Pass
	}
	return v
}

func judgeOne(ep *Endpoint, f *Facts, fails, unchecked []Failure) ([]Failure, []Failure) {
	r := ep.Inbound
	fail := func(c Check, want, got string) {
		fails = append(fails, Failure{Endpoint: ep, Check: c, Want: want, Got: got})
	}
	if !r.Active() {
		return fails, unchecked
	}
	if r.Encryption && f.TLSVersion == "" {
		fail(CheckEncryption, "TLS", "plaintext")
		return fails, unchecked // nothing else can be judged
	}
	if r.MinBits > 0 && f.Bits < r.MinBits {
		fail(CheckMinBits, ">="+strconv.Itoa(r.MinBits), strconv.Itoa(f.Bits))
	}
	if r.ValidateCert && f.Verify != VerifyTrusted {
		got := f.Verify.String()
		if f.Verify == VerifyUnknown {
			got = "none-or-untrusted"
		}
		fail(CheckCert, "trusted", got)
	}
	trusted := f.Verify == VerifyTrusted
	if r.MatchCN && trusted {
		want := r.CN
		if want == "" {
			want = f.ClientName
			if strings.EqualFold(want, "unknown") {
				want = ""
			}
		}
		switch {
		case want == "":
			fail(CheckCN, "the client's verified host name", "client has no verified host name")
		case !sameHostCN(f.SubjectCN, want):
			fail(CheckCN, want, f.SubjectCN)
		}
	}
	if r.SubjectDN != nil && trusted && (f.SubjectDN == nil || !r.SubjectDN.Equal(f.SubjectDN)) {
		fail(CheckSubjectDN, r.SubjectDN.String(), dnOrNone(f.SubjectDN))
	}
	if r.IssuerDN != nil && trusted && (f.IssuerDN == nil || !r.IssuerDN.Equal(f.IssuerDN)) {
		fail(CheckIssuerDN, r.IssuerDN.String(), dnOrNone(f.IssuerDN))
	}
	if r.IssuerCN != "" && trusted && certid.FoldValue(r.IssuerCN) != certid.FoldValue(f.IssuerCN) {
		fail(CheckIssuerCN, r.IssuerCN, f.IssuerCN)
	}
	if len(r.Fingerprints) > 0 {
		switch {
		case !f.FingerprintsKnown:
			unchecked = append(unchecked, Failure{Endpoint: ep, Check: CheckFingerprint, Want: fpList(r.Fingerprints)})
		case !anyFingerprint(r.Fingerprints, f.Fingerprints):
			got := fpList(f.Fingerprints)
			if got == "" {
				got = "no certificate"
			}
			fail(CheckFingerprint, "one of "+fpList(r.Fingerprints), got)
		}
	}
	return fails, unchecked
}

func anyFingerprint(want, got []Fingerprint) bool {
	for _, g := range got {
		for _, w := range want {
			if g == w {
				return true
			}
		}
	}
	return false
}

func fpList(fs []Fingerprint) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = f.String()
	}
	return strings.Join(s, "|")
}

func dnOrNone(d DN) string {
	if d == nil {
		return "none"
	}
	return d.String()
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"=;\\") || !isPrintableASCII(s) {
		return strconv.Quote(s)
	}
	return s
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// sameHostCN reports whether the certificate CN cn names the host want:
// equal ignoring case and a trailing dot. want, the administrator's cn or
// the MTA's verified host name, may be written with Unicode labels
// (bücher.example) and is compared in the A-label form certificates carry
// (xn--bcher-kva.example). cn is compared as the certificate has it: IDNA
// mapping folds look-alikes (full-width letters, invisible characters)
// into plain names, so it is never applied to what the peer presents.
func sameHostCN(cn, want string) bool {
	cn, want = strings.TrimSuffix(cn, "."), strings.TrimSuffix(want, ".")
	return strings.EqualFold(cn, want) || strings.EqualFold(cn, strings.TrimSuffix(certHostName(want), "."))
}
