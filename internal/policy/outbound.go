package policy

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Answer is the outcome of an outbound lookup.
type Answer struct {
	// Found is true when the MTA must apply Text.
	Found bool
	// Text is the policy for the MTA: a Postfix TLS policy table entry
	// ("secure match=mx.example.com ciphers=high") or a Sendmail
	// access-map right-hand side ("TEMP+VERIFY:128+CN:mx.example.com").
	// Empty unless Found.
	Text string
	// Rules is the text Endpoint's rules give, also for an endpoint in
	// monitor mode (what the MTA would get under enforce); "" if the key
	// is not covered.
	Rules string
	// Endpoint covers the key, also when it is in monitor mode (then
	// Found is false and the MTA default applies). Nil if not covered.
	Endpoint *Endpoint
	// Exception is Endpoint's exception when Endpoint answers as an
	// unexpired exception in the key's direction (the MTA gets its rules
	// instead of those of Exception.To; logs say exception=NAME).
	Exception *Exception
	// Truncated says that the key may have been cut by Sendmail (it cuts
	// socketmap keys at SendmailMaxKey bytes): Endpoint is then the
	// strictest of the endpoints the whole key could belong to, at least
	// as strict as each of them.
	Truncated bool
	// Source says where Text comes from: SourceEndpoint, or with
	// discovery ([MergeDiscovered]) SourceDANE or SourceMTASTS;
	// SourceNone when not Found.
	Source Source
	// Overrides is the discovered source (SourceDANE, SourceMTASTS) an
	// authenticating endpoint won over ([MergeDiscovered]), for the log
	// line's overrides=; SourceNone otherwise.
	Overrides Source
}

// Monitor reports whether the key is covered by an endpoint in monitor
// mode, whose rules the MTA does not get.
func (a Answer) Monitor() bool { return a.Endpoint != nil && !a.Found && a.Endpoint.Mode == Monitor }

// Outbound answers a lookup key in the grammar of the configured MTA:
// a Postfix smtp_tls_policy_maps key, or a Sendmail access-map key with
// its tag. A key that cannot be read at all, or that Sendmail may have
// cut and that could belong to endpoints none of which is at least as
// strict as the others, is an error: the caller answers TEMP, so that
// the mail waits instead of going out under the MTA's default.
func (v View) Outbound(key string) (Answer, error) {
	if v.p.MTA == Sendmail {
		return v.SendmailAccess(key)
	}
	return v.PostfixPolicy(key)
}

func (p *Policy) answer(ep *Endpoint, text string, d Direction) Answer {
	a := Answer{Endpoint: ep, Exception: exceptionIn(ep, d), Rules: text}
	if ep.Mode == Enforce && text != "" {
		a.Found, a.Text, a.Source = true, text, SourceEndpoint
	}
	return a
}

// PostfixPolicy answers an smtp_tls_policy_maps key: any next hop Postfix
// can send (see parseNexthop): a domain ("example.com"), Postfix's
// parent-domain key (".example.com"), a next hop with brackets and/or a
// port or service name ("[mx.example.com]:587", "[mail.isp.example]:submission",
// "host:smtp", "[192.0.2.1]", "[IPv6:2001:db8::1]:25"), or the path of an
// LMTP unix socket, in any case. A name key is decided by its exact
// pattern or the longest subdomain pattern above it, so that Postfix's
// later parent-domain keys are never needed for a covered name.
func (v View) PostfixPolicy(key string) (Answer, error) {
	nh, err := parseNexthop(key)
	if err != nil {
		return Answer{}, err
	}
	ix, g := v.p.ix[Outbound], v.gone(Outbound)
	var i int32
	var ok bool
	switch nh.kind {
	case hopName:
		i, ok = ix.name(nh.name, g)
	case hopParent:
		i, ok = ix.parent(nh.name, g)
	case hopAddr:
		i, ok = ix.addr(nh.addr, g)
	}
	if !ok {
		return Answer{}, nil
	}
	ep := v.p.byID[i]
	return v.p.answer(ep, v.p.outFor(ep, Postfix), Outbound), nil
}

// compileAnswers sets the endpoint's trust-anchor file and renders its
// outbound policy texts, once at load time; endpoints whose outbound
// requirements are the same share them (and their answers) through in.
func (ep *Endpoint) compileAnswers(ctx unitCtx, in *interner) {
	o := ep.Outbound
	if !o.Active() {
		return
	}
	if (o.IssuerDN != nil || o.IssuerCN != "") && ctx.trustAnchorDir != "" {
		cp := *o
		cp.TrustAnchorFile = filepath.Join(ctx.trustAnchorDir, ep.Name+".pem")
		o = &cp
	}
	ep.Outbound, ep.out = in.outbound(o, ctx.mta)
}

// postfixEntry renders an smtp_tls_policy_maps entry using only what
// Postfix 3.4 and later accept.
func postfixEntry(o *Requirements) string {
	var b strings.Builder
	switch {
	case len(o.Fingerprints) > 0:
		b.WriteString("fingerprint")
		for _, f := range o.Fingerprints {
			b.WriteString(" match=")
			b.WriteString(f.String())
		}
	case o.ValidateCert && o.CN != "":
		b.WriteString("secure match=")
		b.WriteString(certHostName(o.CN))
	case o.ValidateCert:
		b.WriteString("verify match=hostname")
	default:
		b.WriteString("encrypt")
	}
	if o.TrustAnchorFile != "" && o.ValidateCert && len(o.Fingerprints) == 0 {
		b.WriteString(" tafile=")
		b.WriteString(o.TrustAnchorFile)
	}
	// Postfix's mandatory default grade (medium) already excludes ciphers
	// under 112 bits; HIGH excludes everything under 128 (TLS <= 1.2).
	if o.MinBits > 112 {
		b.WriteString(" ciphers=high")
	}
	return b.String()
}

// sendmailRHS renders a TLS_Srv/TLS_Rcpt right-hand side. TEMP+ keeps a
// failed delivery queued instead of bouncing it.
func sendmailRHS(o *Requirements) string {
	var b strings.Builder
	b.WriteString("TEMP+")
	bits := o.MinBits
	if o.ValidateCert {
		b.WriteString("VERIFY")
		if bits > 0 {
			b.WriteString(":" + strconv.Itoa(bits))
		}
	} else {
		if bits == 0 {
			bits = 40
		}
		b.WriteString("ENCR:" + strconv.Itoa(bits))
	}
	var ext []string
	if o.MatchCN {
		if o.CN != "" {
			ext = append(ext, "CN:"+Xtext(certHostName(o.CN)))
		} else {
			ext = append(ext, "CN")
		}
	}
	if o.SubjectDN != nil {
		ext = append(ext, "CS:"+Xtext(o.SubjectDN.OpenSSL()))
	}
	if o.IssuerDN != nil {
		ext = append(ext, "CI:"+Xtext(o.IssuerDN.OpenSSL()))
	}
	if len(ext) > 0 {
		b.WriteString("+")
		b.WriteString(strings.Join(ext, "++"))
	}
	return b.String()
}

// certHostName returns an expected certificate name (cn) in the form the
// MTAs compare with the certificate: a host name is lower-cased and
// converted to A-labels with NormalizeName, as host patterns are, because
// certificates carry internationalised host names as A-labels (RFC 5280
// 7.2, RFC 6125 6.4.2) and Postfix's match= compares the certificate's
// DNS names. A cn that is not a host name ("Company B Mail Gateway") is
// returned as written: Sendmail's CN: compares it with the certificate's
// subject CN as it is; for Postfix the compiler refuses such a cn
// (capabilities checks it with NormalizeName), so it never gets here.
func certHostName(cn string) string {
	if n, err := NormalizeName(cn); err == nil {
		return n
	}
	return cn
}

// Xtext encodes s the way Sendmail's xtextify does for certificate macros:
// bytes outside '!'..'~' and the characters + \ ( ) < > " become +XX.
func Xtext(s string) string { return certid.EncodeXtext(s, `\()<>"`) }
