package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// SendmailMaxKey is the longest key Sendmail sends to a socket map: it
// copies the key (tag included) into a buffer of MAXNAME+1 bytes to
// lower-case it, cutting it at MAXNAME = 256 bytes (sendmail/map.c,
// socket_map_lookup(); sendmail/conf.h). A key of exactly this length may
// have been cut.
const SendmailMaxKey = 256

// SendmailAccess answers a Sendmail access-map key (with its tag; the tag
// in any case). It answers every key of the walks Sendmail's rulesets
// make (cf/m4/proto.m4), each for the destinations it can stand for:
//
//   - tls_rcpt:USER@DOMAIN (and USER+*@DOMAIN, USER@DOMAIN without the
//     +detail): the recipient's domain, by its exact pattern or the
//     longest subdomain pattern above it. Sendmail asks it first.
//   - tls_rcpt:USER@ is no destination: not found.
//   - tls_rcpt:DOMAIN and its parent domains: Sendmail asks them only
//     after the address was not found, walking up from the recipient's
//     domain; the key stands for DOMAIN or a name below it. It is
//     answered by the subdomain patterns above DOMAIN only (which cover
//     the recipient either way); an exact pattern for DOMAIN covers only
//     DOMAIN, whose address key was asked first.
//   - tls_rcpt:.DOMAIN (FEATURE(lookupdotdomain)): names below DOMAIN.
//   - tls_srv:NAME, tls_srv:[ADDR], tls_srv:ADDR: the server by name or
//     address; Sendmail asks the name (and its parent domains) first and
//     the address only when no name key was found.
//   - srv_features: see srvFeatures.
//
// A key of SendmailMaxKey bytes may have been cut. It is answered with
// the strictest of the endpoints the whole key could belong to when one
// of them is at least as strict as all the others (Answer.Truncated), not
// found when it can belong to none, and otherwise it is an error, so that
// the caller answers TEMP: never NOTFOUND for a key that could belong to
// a covered destination. Every other tag (connect:, from:, to:, tls_clt:,
// ...) is not found, so Sendmail's own defaults apply; the milter
// enforces inbound requirements.
func (v View) SendmailAccess(key string) (Answer, error) {
	tag, val, ok := strings.Cut(key, ":")
	if !ok {
		return Answer{}, nil
	}
	tag = strings.ToLower(tag)
	cut := len(key) >= SendmailMaxKey
	switch tag {
	case "tls_rcpt":
		if cut {
			return v.cutKey(key, rcptDomainPrefix(val))
		}
		return v.tlsRcpt(val), nil
	case "tls_srv":
		if cut {
			return v.cutKey(key, val)
		}
		i, ok := v.p.sendmailHost(val, Outbound, v.gone(Outbound))
		if !ok {
			return Answer{}, nil
		}
		ep := v.p.byID[i]
		return v.p.answer(ep, v.p.outFor(ep, Sendmail), Outbound), nil
	case "srv_features":
		if cut {
			// Asking for a certificate refuses nobody.
			return Answer{Found: true, Text: srvAskCert, Truncated: true}, nil
		}
		return v.srvFeatures(val), nil
	}
	return Answer{}, nil
}

// tlsRcpt answers the value of a tls_rcpt: key that was not cut.
func (v View) tlsRcpt(val string) Answer {
	ix, g := v.p.ix[Outbound], v.gone(Outbound)
	var i int32
	var ok bool
	if at := strings.LastIndexByte(val, '@'); at >= 0 {
		// The address (F) keys decide by the domain; user@ (U) keys
		// name no destination.
		dom := val[at+1:]
		if dom == "" {
			return Answer{}
		}
		i, ok = domainLookup(ix, dom, true, g)
	} else if strings.HasPrefix(val, ".") {
		n, nok := sendmailName(val[1:])
		if !nok {
			return Answer{}
		}
		i, ok = ix.parent(n, g)
	} else if val != "" {
		i, ok = domainLookup(ix, val, false, g)
	}
	if !ok {
		return Answer{}
	}
	ep := v.p.byID[i]
	return v.p.answer(ep, v.p.outFor(ep, Sendmail), Outbound)
}

// domainLookup finds the endpoint for a recipient domain: a name or a
// domain literal ([192.0.2.1], [IPv6:2001:db8::1]). With exact false only
// the patterns that cover it and more (subdomain patterns above it,
// ranges around it) count, not one naming exactly it.
func domainLookup(ix *index, dom string, exact bool, g gone) (int32, bool) {
	if strings.HasPrefix(dom, "[") {
		if !strings.HasSuffix(dom, "]") {
			return 0, false
		}
		a, ok := parseLiteral(dom[1 : len(dom)-1])
		if !ok {
			return 0, false
		}
		if exact {
			return ix.addr(a, g)
		}
		return ix.ranges(a.Unmap().WithZone(""), 129, g)
	}
	n, ok := sendmailName(dom)
	if !ok {
		return 0, false
	}
	if exact {
		return ix.name(n, g)
	}
	return ix.below(n, g)
}

// sendmailName normalises a name from a Sendmail key. A name that is not
// a valid host name (a label over 63 characters, a stray character) may
// still be routed by Sendmail (mailertable, a smart host), so it is not
// dropped: it is lower-cased as it is, and the subdomain patterns above
// it still match it. Digits and dots alone are a shortened network.
func sendmailName(v string) (string, bool) {
	n, err := NormalizeName(v)
	if err != nil {
		n = lowerASCII(strings.TrimSuffix(v, "."))
	}
	return n, n != "" && !numericName(n)
}

// parseLiteral reads an address as Sendmail writes it: "192.0.2.1",
// "IPv6:2001:db8:0:0:0:0:0:1" (the tag in any case) or without the tag.
func parseLiteral(s string) (netip.Addr, bool) {
	if len(s) >= 5 && strings.EqualFold(s[:5], "ipv6:") {
		s = s[5:]
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// numericName reports whether a name is digits and dots only: one of
// Sendmail's shortened networks (192.0.2), never a host.
func numericName(n string) bool {
	for i := 0; i < len(n); i++ {
		if c := n[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// sendmailHost finds the endpoint for a tls_srv: or srv_features: value:
// a host name (exact, else the longest subdomain pattern above it), a
// parent-domain key .DOMAIN, or an address with or without brackets and
// "IPv6:". Shortened networks and anything else are not found.
func (p *Policy) sendmailHost(val string, d Direction, g gone) (int32, bool) {
	ix := p.ix[d]
	if val == "" {
		return 0, false
	}
	if strings.HasPrefix(val, "[") {
		if !strings.HasSuffix(val, "]") {
			return 0, false
		}
		a, ok := parseLiteral(val[1 : len(val)-1])
		if !ok {
			return 0, false
		}
		return ix.addr(a, g)
	}
	if a, ok := parseLiteral(val); ok {
		return ix.addr(a, g)
	}
	if strings.HasPrefix(val, ".") {
		n, ok := sendmailName(val[1:])
		if !ok {
			return 0, false
		}
		return ix.parent(n, g)
	}
	n, ok := sendmailName(val)
	if !ok {
		return 0, false
	}
	return ix.name(n, g)
}

// rcptDomainPrefix returns what a tls_rcpt: value that may have been cut
// says of the recipient's domain: the text after its only '@', which
// starts the domain (or is all of it). With no '@' or more than one
// (cut in the local part, a domain key, or a quoted local part) nothing
// is known: "\x00" stands for any destination.
func rcptDomainPrefix(val string) string {
	if strings.Count(val, "@") != 1 {
		return anyDestination
	}
	return val[strings.IndexByte(val, '@')+1:]
}

// anyDestination is the prefix of a cut key that says nothing of the
// destination.
const anyDestination = "\x00"

// cutKey answers a tls_rcpt: or tls_srv: key that may have been cut,
// whose destination (domain or server name) starts with prefix, or is
// unknown (anyDestination). The candidates are the outbound endpoints,
// active at the view's instant, with a pattern that a name or literal
// starting with prefix could match. If one of them is at least as strict
// as every other, the MTA gets its rules (stricter than needed if the key
// was not meant for it, never weaker); if there is none, the key is not
// found; otherwise it is an error (TEMP).
func (v View) cutKey(key, prefix string) (Answer, error) {
	var cands []*Endpoint
	for _, ep := range v.p.Endpoints {
		if v.Active(ep, Outbound) && couldMatch(ep.Hosts, prefix) {
			cands = append(cands, ep)
		}
	}
	if len(cands) == 0 {
		return Answer{}, nil
	}
	for _, top := range cands {
		r := top.Rule(Outbound)
		strictest := true
		for _, o := range cands {
			if o != top && !r.AtLeastAsStrict(o.Rule(Outbound)) {
				strictest = false
				break
			}
		}
		if strictest {
			a := v.p.answer(top, v.p.outFor(top, Sendmail), Outbound)
			a.Truncated = true
			return a, nil
		}
	}
	names := make([]string, 0, 4)
	for i, ep := range cands {
		if i == 3 {
			names = append(names, fmt.Sprintf("and %d more", len(cands)-3))
			break
		}
		names = append(names, ep.Name)
	}
	return Answer{}, fmt.Errorf("policy: key of %d bytes may have been cut by Sendmail (it cuts socketmap keys at %d bytes) and could belong to endpoints %s, none of which is at least as strict as the others", len(key), SendmailMaxKey, strings.Join(names, ", "))
}

// couldMatch reports whether some pattern could match a domain, server
// name or domain literal that starts with prefix (anyDestination: any):
// any subdomain pattern, a name that starts with prefix, an address or
// range if prefix could start a literal. It errs on the side of a match:
// a prefix with non-ASCII bytes (a cut U-label) could be any name.
func couldMatch(hosts []Pattern, prefix string) bool {
	if prefix == anyDestination {
		return len(hosts) > 0
	}
	prefix = strings.TrimPrefix(strings.ToLower(prefix), ".")
	literal := prefix == "" || prefix[0] == '[' || prefix[0] >= '0' && prefix[0] <= '9' || strings.HasPrefix(prefix, "ipv6")
	for _, h := range hosts {
		switch h.Kind {
		case PatternAddr, PatternPrefix:
			if literal {
				return true
			}
		case PatternName:
			if !isASCII(prefix) || strings.HasPrefix(h.Name, prefix) {
				return true
			}
		case PatternSubdomains:
			// Any name can go on below the cut and end in .NAME: the
			// 253-character limit of DNS does not bind a recipient
			// domain that Sendmail hands to a smart host.
			return true
		}
	}
	return false
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
//     asked, unless an endpoint that needs a certificate lists a name or
//     a .domain pattern: that may match only the sender's domain, which
//     is not known at connect time, so the bare key is then not found
//     and Sendmail asks every client, as it does by default (the
//     endpoint's senders would otherwise come without a certificate and
//     be refused). Listing only addresses and ranges in such endpoints
//     lets Sendmail ask their clients alone.
func (v View) srvFeatures(val string) Answer {
	if val == "" {
		if v.p.askEveryClient {
			return Answer{}
		}
		return Answer{Found: true, Text: srvNoCert}
	}
	i, ok := v.p.sendmailHost(val, Inbound, v.gone(Inbound))
	if !ok || !v.p.byID[i].Inbound.RequestCert {
		return Answer{}
	}
	ep := v.p.byID[i]
	return Answer{Found: true, Text: srvAskCert, Endpoint: ep, Exception: exceptionIn(ep, Inbound)}
}

// AsksEveryClient reports whether Sendmail must ask every client for a
// certificate (the bare srv_features: key is not found): an endpoint that
// needs the client's certificate lists a name or a .domain pattern, which
// may match only the sender's domain. It does not depend on the time.
func (p *Policy) AsksEveryClient() bool { return p.askEveryClient }
