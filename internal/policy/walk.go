package policy

import (
	"net/netip"
	"strings"
)

// Step is one key an MTA asks in a lookup walk, and tlsgate's answer.
type Step struct {
	// Key is the key as the MTA sends it (Sendmail: tag included,
	// lower-cased, cut at SendmailMaxKey bytes).
	Key string
	// Answer is tlsgate's answer when Err is nil.
	Answer Answer
	// Err is set when the answer is TEMP (the key cannot be decided).
	Err error
}

// Decides reports whether the MTA stops at this step: the key was found,
// or the answer is TEMP, which stops the walk and defers the mail.
func (s Step) Decides() bool { return s.Err != nil || s.Answer.Found }

// Walk is the keys an MTA asks for one destination, in the order it asks
// them, up to the first that decides (found or TEMP); the MTA asks no
// further.
type Walk struct {
	Steps []Step
}

// Effective returns the step that decides the walk, or false when every
// key was not found and the MTA's default applies (Postfix's
// smtp_tls_security_level, Sendmail's plain STARTTLS attempt).
func (w Walk) Effective() (Step, bool) {
	if n := len(w.Steps); n > 0 && w.Steps[n-1].Decides() {
		return w.Steps[n-1], true
	}
	return Step{}, false
}

// walk asks keys in order until one decides.
func walk(keys []string, ask func(string) (Answer, error)) Walk {
	var w Walk
	for _, k := range keys {
		a, err := ask(k)
		w.Steps = append(w.Steps, Step{Key: k, Answer: a, Err: err})
		if w.Steps[len(w.Steps)-1].Decides() {
			break
		}
	}
	return w
}

// PostfixWalk returns what Postfix asks smtp_tls_policy_maps for the
// next hop nexthop (a recipient domain, or a transport or relayhost
// destination such as "[mail.isp.example]:submission"), and tlsgate's
// answers: the next hop itself, then, only if it is a plain host name,
// its parent domains with a leading dot (a.b.example, .b.example,
// .example), up to the first key found or TEMP (src/smtp/smtp_tls_policy.c,
// tls_policy_lookup()).
func (v View) PostfixWalk(nexthop string) Walk {
	return walk(PostfixKeys(nexthop), v.PostfixPolicy)
}

// PostfixKeys returns the keys Postfix asks smtp_tls_policy_maps for the
// next hop nexthop, in order, whatever the answers: the walk PostfixWalk
// makes when no key is found. A client of the running daemon (tlsgate
// query --socket) asks them one by one.
func PostfixKeys(nexthop string) []string {
	keys := []string{nexthop}
	if postfixWalksParents(nexthop) {
		for rest := nexthop; ; {
			dot := strings.IndexByte(rest[1:], '.')
			if dot < 0 {
				break
			}
			rest = rest[1+dot:]
			keys = append(keys, rest)
		}
	}
	return keys
}

// SendmailRcptWalk returns the tls_rcpt: keys Sendmail's tls_rcpt
// ruleset asks before sending RCPT TO for rcpt (an address without angle
// brackets, such as "user+ext@sub.example.com"), and tlsgate's answers
// (cf/m4/proto.m4: tls_rcpt, SearchList with <F:user@domain>
// <U:user@> <D:domain> <E:>; rulesets F, U, D, E):
//
//	tls_rcpt:user+ext@sub.example.com, tls_rcpt:user+*@sub.example.com,
//	tls_rcpt:user@sub.example.com       the address (F)
//	tls_rcpt:user+ext@, user+*@, user@  the local part (U)
//	tls_rcpt:sub.example.com, tls_rcpt:example.com, tls_rcpt:com
//	                                    the domain and its parents (D);
//	                                    a literal [192.0.2.1] is shortened
//	                                    to [192.0.2], [192], ...
//	tls_rcpt:                           the default (E)
//
// Each key is lower-cased and cut at SendmailMaxKey bytes, as Sendmail's
// socket map does. The +detail variants appear only for an address with
// a '+' after a non-empty user part.
func (v View) SendmailRcptWalk(rcpt string) Walk {
	return walk(SendmailRcptKeys(rcpt), v.SendmailAccess)
}

// SendmailRcptKeys returns the tls_rcpt: keys Sendmail asks for rcpt, in
// order, whatever the answers (see SendmailRcptWalk).
func SendmailRcptKeys(rcpt string) []string {
	rcpt = strings.Trim(strings.TrimSpace(rcpt), "<>")
	var vals []string
	local, dom, full := rcpt, "", false
	if at := strings.LastIndexByte(rcpt, '@'); at >= 0 {
		local, dom, full = rcpt[:at], strings.TrimSuffix(rcpt[at+1:], "."), true
	}
	user, detail := local, false
	if plus := strings.IndexByte(local, '+'); plus > 0 {
		user, detail = local[:plus], true
	}
	if full {
		vals = append(vals, local+"@"+dom)
		if detail {
			vals = append(vals, user+"+*@"+dom, user+"@"+dom)
		}
	}
	vals = append(vals, local+"@")
	if detail {
		vals = append(vals, user+"+*@", user+"@")
	}
	if full {
		vals = append(vals, domainWalk(dom)...)
	}
	vals = append(vals, "")
	return sendmailKeys("tls_rcpt", vals)
}

// SendmailServerWalk returns the tls_srv: keys Sendmail's tls_server
// ruleset asks after STARTTLS with a server (its {server_name}, such as
// mx1.example.com or [192.0.2.1], and {server_addr}), and tlsgate's
// answers: the name and its parent domains (ruleset D), the address and
// its shorter networks (ruleset A: 192.0.2.1, 192.0.2, 192.0, 192; IPv6
// in Sendmail's "IPv6:" uncompressed form, shortened a group at a time),
// then the bare tls_srv: key.
func (v View) SendmailServerWalk(serverName string, serverAddr netip.Addr) Walk {
	return walk(SendmailServerKeys(serverName, serverAddr), v.SendmailAccess)
}

// SendmailServerKeys returns the tls_srv: keys Sendmail asks for a server,
// in order, whatever the answers (see SendmailServerWalk).
func SendmailServerKeys(serverName string, serverAddr netip.Addr) []string {
	return sendmailKeys("tls_srv", hostWalk(serverName, serverAddr))
}

// hostWalk lists the values Sendmail looks up for a peer by name and
// address: ruleset D on the name, ruleset A on the address, then the
// bare tag.
func hostWalk(name string, addr netip.Addr) []string {
	var vals []string
	if name != "" {
		vals = append(vals, domainWalk(strings.TrimSuffix(name, "."))...)
	}
	if addr.IsValid() {
		vals = append(vals, addrWalk(SendmailAddr(addr))...)
	}
	return append(vals, "")
}

// SrvFeaturesWalk returns the srv_features: keys Sendmail's srv_features
// ruleset asks when a client connects ({client_name}, its parent domains,
// {client_addr} and its shorter networks, the bare key), and tlsgate's
// answers: whether Sendmail asks the client for a certificate ("v") or
// not ("V"); when no key is found Sendmail asks, its default.
func (v View) SrvFeaturesWalk(clientName string, clientAddr netip.Addr) Walk {
	return walk(SrvFeaturesKeys(clientName, clientAddr), v.SendmailAccess)
}

// SrvFeaturesKeys returns the srv_features: keys Sendmail asks for a
// client, in order, whatever the answers (see SrvFeaturesWalk).
func SrvFeaturesKeys(clientName string, clientAddr netip.Addr) []string {
	return sendmailKeys("srv_features", hostWalk(clientName, clientAddr))
}

// SendmailAddr writes an address as Sendmail's {client_addr} and
// {server_addr} macros do: IPv4 dotted, IPv6 as "IPv6:" and eight
// uncompressed groups (sm_inet6_ntop() without UseCompressedIPv6Addresses).
func SendmailAddr(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	b := a.As16()
	var s strings.Builder
	s.WriteString("IPv6:")
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			s.WriteByte(':')
		}
		s.WriteString(strings.TrimLeft(hexByte(b[i])+hexByte(b[i+1]), "0"))
		if b[i] == 0 && b[i+1] == 0 {
			s.WriteByte('0')
		}
	}
	return s.String()
}

func hexByte(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&15]})
}

// domainWalk lists the values ruleset D looks up for a name or a domain
// literal: the name, then without its first label, ...; a literal
// [1.2.3.4] as [1.2.3], [1.2], [1]; [IPv6:a:b::c] as [IPv6:a:b], ....
func domainWalk(d string) []string {
	var out []string
	for d != "" {
		out = append(out, d)
		if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
			in := d[1 : len(d)-1]
			i := strings.LastIndexByte(in, '.')
			if i < 0 {
				i = strings.LastIndexByte(in, ':')
				if i > 0 && in[i-1] == ':' {
					i-- // [$+::$-]
				}
			}
			if i <= 0 {
				break
			}
			d = "[" + in[:i] + "]"
			continue
		}
		dot := strings.IndexByte(d, '.')
		if dot < 0 || dot == len(d)-1 {
			break
		}
		d = d[dot+1:]
	}
	return out
}

// addrWalk lists the values ruleset A looks up for an address: the
// address, then without its last group (":" for IPv6, "." for IPv4).
func addrWalk(a string) []string {
	var out []string
	for a != "" {
		out = append(out, a)
		i := strings.LastIndexByte(a, ':')
		if i > 0 && a[i-1] == ':' {
			i--
		}
		if i <= 0 {
			i = strings.LastIndexByte(a, '.')
		}
		if i <= 0 {
			break
		}
		a = a[:i]
	}
	return out
}

// sendmailKeys builds the keys Sendmail sends for values under tag:
// "tag:value", lower-cased (ASCII) and cut at SendmailMaxKey bytes.
func sendmailKeys(tag string, vals []string) []string {
	keys := make([]string, len(vals))
	for i, val := range vals {
		k := lowerASCII(tag + ":" + val)
		if len(k) > SendmailMaxKey {
			k = k[:SendmailMaxKey]
		}
		keys[i] = k
	}
	return keys
}

// lowerASCII lower-cases the ASCII letters of s; s itself if it has none
// in upper case.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
