package policy

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// Answer is the outcome of an outbound lookup.
type Answer struct {
	// Found is true when the MTA must apply Text.
	Found bool
	// Text is the policy for the MTA: a Postfix TLS policy table entry
	// ("secure match=mx.example.com ciphers=high") or a Sendmail
	// access-map right-hand side ("TEMP+VERIFY:128+CN:mx.example.com").
	Text string
	// Endpoint covers the key, also when it is in monitor mode (then
	// Found is false and the MTA default applies). Nil if not covered.
	Endpoint *Endpoint
}

// Outbound answers a lookup key in the grammar of the configured MTA:
// a Postfix smtp_tls_policy_maps key, or a Sendmail access-map key with
// its tag. A Postfix key that is not a next hop Postfix could send is an
// error (the caller answers TEMP); Sendmail keys with foreign tags are
// simply not found.
func (p *Policy) Outbound(key string) (Answer, error) {
	if p.MTA == Sendmail {
		return p.SendmailAccess(key), nil
	}
	return p.PostfixPolicy(key)
}

// PostfixPolicy answers an smtp_tls_policy_maps key: a domain
// ("example.com"), Postfix's parent-domain key (".example.com"), or a
// next hop with brackets and/or port ("[mx.example.com]:587",
// "[192.0.2.1]", "[IPv6:2001:db8::1]", "host:25"), in any case.
func (p *Policy) PostfixPolicy(key string) (Answer, error) {
	i, ok, err := p.lookupNexthop(key)
	if err != nil || !ok {
		return Answer{}, err
	}
	return p.answer(i, p.Endpoints[i].postfixOut), nil
}

func (p *Policy) answer(i int32, text string) Answer {
	ep := p.Endpoints[i]
	if ep.Mode == Monitor || text == "" {
		return Answer{Endpoint: ep}
	}
	return Answer{Found: true, Text: text, Endpoint: ep}
}

func (p *Policy) lookupNexthop(key string) (int32, bool, error) {
	k := strings.TrimSpace(key)
	if k == "" {
		return 0, false, fmt.Errorf("policy: empty next-hop key")
	}
	if strings.HasPrefix(k, "[") {
		end := strings.IndexByte(k, ']')
		if end < 0 {
			return 0, false, fmt.Errorf("policy: next hop %q: missing ']'", key)
		}
		if rest := k[end+1:]; rest != "" && !validPort(rest) {
			return 0, false, fmt.Errorf("policy: next hop %q: %q after ']' is not :PORT", key, rest)
		}
		return p.lookupHost(k[1:end], key)
	}
	if strings.HasPrefix(k, ".") {
		n, err := NormalizeName(k[1:])
		if err != nil {
			return 0, false, fmt.Errorf("policy: parent-domain key %q: %v", key, err)
		}
		i, ok := p.ix.parent(n)
		return i, ok, nil
	}
	if a, err := netip.ParseAddr(k); err == nil {
		i, ok := p.ix.addr(a)
		return i, ok, nil
	}
	if c := strings.LastIndexByte(k, ':'); c >= 0 {
		if !validPort(k[c:]) {
			return 0, false, fmt.Errorf("policy: next hop %q: %q is not :PORT", key, k[c:])
		}
		k = k[:c]
	}
	return p.lookupHost(k, key)
}

func validPort(s string) bool {
	if len(s) < 2 || s[0] != ':' {
		return false
	}
	n, err := strconv.Atoi(s[1:])
	return err == nil && n > 0 && n < 65536
}

// lookupHost matches a bare host: an address literal (with or without the
// "IPv6:" tag) or a name.
func (p *Policy) lookupHost(h, key string) (int32, bool, error) {
	lit := h
	if len(lit) > 5 && strings.EqualFold(lit[:5], "ipv6:") {
		lit = lit[5:]
	}
	if a, err := netip.ParseAddr(lit); err == nil {
		i, ok := p.ix.addr(a)
		return i, ok, nil
	}
	n, err := NormalizeName(h)
	if err != nil {
		return 0, false, fmt.Errorf("policy: next hop %q: %v", key, err)
	}
	i, ok := p.ix.name(n)
	return i, ok, nil
}

// SendmailAccess answers a Sendmail access-map key (lower-cased, with its
// tag). tls_rcpt: is decided on the full recipient address (Sendmail asks
// it first, so the later user@ and parent-domain keys are not found);
// tls_srv: on the server's name or address; srv_features: as
// SrvFeatures does. Every other tag (connect:, from:, to:, tls_clt:, ...)
// is not found, so Sendmail's own defaults apply; inbound requirements are
// enforced by the milter.
func (p *Policy) SendmailAccess(key string) Answer {
	tag, val, ok := strings.Cut(key, ":")
	if !ok {
		return Answer{}
	}
	switch strings.ToLower(tag) {
	case "tls_rcpt":
		at := strings.LastIndexByte(val, '@')
		if at < 0 || at == len(val)-1 {
			return Answer{}
		}
		n, err := NormalizeName(val[at+1:])
		if err != nil {
			return Answer{}
		}
		if i, ok := p.ix.name(n); ok {
			return p.answer(i, p.Endpoints[i].sendmailOut)
		}
	case "tls_srv":
		if i, ok := p.sendmailHost(val); ok {
			return p.answer(i, p.Endpoints[i].sendmailOut)
		}
	case "srv_features":
		return p.srvFeatures(val)
	}
	return Answer{}
}

// Srv_Features letters (Sendmail's srvrsmtp.c srvfeatures(): a lower-case
// letter turns a feature on, its upper-case form turns it off).
const (
	// srvAskCert makes Sendmail request a client certificate in
	// the TLS handshake (sets SRV_VRFY_CLT).
	srvAskCert = "v"
	// srvNoCert makes Sendmail not request one (clears it).
	srvNoCert = "V"
)

// srvFeatures answers Sendmail's srv_features ruleset, which runs when a
// client connects and walks srv_features:{client_name} (then its parent
// domains), srv_features:{client_addr} (then its shorter nets) and the
// bare srv_features: tag, stopping at the first key found. Sendmail
// requests a certificate from every client unless told "V", so:
//
//   - a name or address covered by an endpoint whose inbound side needs
//     the client's certificate (request_cert, validate_cert, cn, DNs,
//     issuer or fingerprints; compile sets RequestCert for all of them)
//     answers "v", also in monitor mode: asking enforces nothing, and
//     monitor mode must see the certificate it reports on;
//   - any other name or address is not found, so that the walk goes on
//     (an address covered by an endpoint that asks still gets its "v"
//     after a name covered by one that does not);
//   - the bare srv_features: key answers "V", so no other client is
//     asked, unless an endpoint that needs a certificate lists an exact
//     name: that may be a sender domain, which is not known at connect
//     time, so the bare key is then not found and Sendmail asks every
//     client, as it does by default (the endpoint's clients would
//     otherwise come without a certificate and be refused). Listing only
//     subdomain patterns (.example.com), addresses and ranges for such
//     endpoints lets Sendmail ask them alone.
func (p *Policy) srvFeatures(val string) Answer {
	if val == "" {
		if p.askEveryClient {
			return Answer{}
		}
		return Answer{Found: true, Text: srvNoCert}
	}
	i, ok := p.sendmailHost(val)
	if !ok || !p.Endpoints[i].Inbound.RequestCert {
		return Answer{}
	}
	return Answer{Found: true, Text: srvAskCert, Endpoint: p.Endpoints[i]}
}

func (p *Policy) sendmailHost(v string) (int32, bool) {
	v = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
	if v == "" {
		return 0, false
	}
	if len(v) > 5 && strings.EqualFold(v[:5], "ipv6:") {
		v = v[5:]
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return p.ix.addr(a)
	}
	n, err := NormalizeName(v)
	if err != nil {
		return 0, false
	}
	return p.ix.name(n)
}

// compileAnswers renders the outbound policy text once at load time.
func (ep *Endpoint) compileAnswers(p *Policy) {
	o := &ep.Outbound
	if !o.Active() {
		return
	}
	if o.IssuerDN != nil || o.IssuerCN != "" {
		if p.Settings.TrustAnchorDir != "" {
			o.TrustAnchorFile = filepath.Join(p.Settings.TrustAnchorDir, ep.Name+".pem")
		}
	}
	ep.postfixOut = postfixEntry(o)
	ep.sendmailOut = sendmailRHS(o)
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
func Xtext(s string) string { return EncodeXtext(s, `\()<>"`) }
