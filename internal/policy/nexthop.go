package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The kinds of smtp_tls_policy_maps key.
const (
	hopName   = iota // a host or domain name, bare or in brackets, with or without a port
	hopParent        // Postfix's parent-domain key ".example.com"
	hopAddr          // an address literal
	hopPath          // an LMTP unix-domain socket path: never covered
)

// nexthop is a parsed smtp_tls_policy_maps key.
type nexthop struct {
	kind int
	name string // normalised (hopName, hopParent)
	addr netip.Addr
}

// parseNexthop reads a key the way Postfix reads the next hop it looks up
// (src/smtp/smtp_connect.c, smtp_parse_destination(); src/util/host_port.c)
// and the parent-domain keys it derives (src/smtp/smtp_tls_policy.c,
// tls_policy_lookup()):
//
//	example.com, bücher.example    a domain (MX lookup), in any case
//	.example.com                   a parent-domain key, from Postfix's walk
//	[mx.example.com]               a host (no MX lookup)
//	[mx.example.com]:587           ... with a port
//	[mail.isp.example]:submission  ... with a service name (/etc/services)
//	[mx.example.com]:              ... with an empty port (the default)
//	mx.example.com:2525, host:smtp a domain with a port or service
//	[192.0.2.1], 192.0.2.1:25      an IPv4 address
//	[IPv6:2001:db8::1]:25          an IPv6 address ("IPv6:" in any case, or
//	                               none: [2001:db8::1])
//	/var/run/lmtp                  an LMTP unix socket (the path is the key)
//
// Only a key that is none of these is an error: a missing "]", text after
// "]" that is not ":PORT", a numeric port outside 1-65535 or followed by
// letters, no host, or a host that is neither a valid name nor an
// address. The port or service does not matter for the decision.
func parseNexthop(key string) (nexthop, error) {
	k := strings.TrimSpace(key)
	switch {
	case k == "":
		return nexthop{}, fmt.Errorf("policy: empty next-hop key")
	case k[0] == '/':
		return nexthop{kind: hopPath}, nil
	case k[0] == '.':
		n, err := NormalizeName(k[1:])
		if err != nil {
			return nexthop{}, fmt.Errorf("policy: parent-domain key %q: %v", key, err)
		}
		return nexthop{kind: hopParent, name: n}, nil
	case k[0] == '[':
		end := strings.IndexByte(k, ']')
		if end < 0 {
			return nexthop{}, fmt.Errorf("policy: next hop %q: missing ']'", key)
		}
		if rest := k[end+1:]; rest != "" {
			if rest[0] != ':' {
				return nexthop{}, fmt.Errorf("policy: next hop %q: %q after ']' is not :PORT or :SERVICE", key, rest)
			}
			if err := checkService(rest[1:]); err != nil {
				return nexthop{}, fmt.Errorf("policy: next hop %q: %v", key, err)
			}
		}
		host := k[1:end]
		if len(host) >= 5 && strings.EqualFold(host[:5], "ipv6:") {
			a, err := netip.ParseAddr(host[5:])
			if err != nil || !a.Is6() {
				return nexthop{}, fmt.Errorf("policy: next hop %q: %q is not an IPv6 address", key, host[5:])
			}
			return nexthop{kind: hopAddr, addr: a}, nil
		}
		return hostNexthop(host, key)
	}
	c := strings.LastIndexByte(k, ':')
	if c >= 0 && looksLikeAddr(k) {
		if a, err := netip.ParseAddr(k); err == nil {
			return nexthop{kind: hopAddr, addr: a}, nil // a bare IPv6 address
		}
	}
	if c >= 0 {
		if err := checkService(k[c+1:]); err != nil {
			return nexthop{}, fmt.Errorf("policy: next hop %q: %v", key, err)
		}
		k = k[:c]
	}
	return hostNexthop(k, key)
}

// hostNexthop reads the host of a next hop: an address or a name.
func hostNexthop(host, key string) (nexthop, error) {
	if host == "" {
		return nexthop{}, fmt.Errorf("policy: next hop %q: no host", key)
	}
	if looksLikeAddr(host) {
		if a, err := netip.ParseAddr(host); err == nil {
			return nexthop{kind: hopAddr, addr: a}, nil
		}
	}
	n, err := NormalizeName(host)
	if err != nil {
		return nexthop{}, fmt.Errorf("policy: next hop %q: %v", key, err)
	}
	return nexthop{kind: hopName, name: n}, nil
}

// looksLikeAddr reports whether s could be an IP address (it starts with
// a digit or has a colon), so that names are not parsed as addresses in
// vain: a failed parse costs an allocation, and lookups are hot.
func looksLikeAddr(s string) bool {
	return s != "" && (s[0] >= '0' && s[0] <= '9' || strings.IndexByte(s, ':') >= 0)
}

// checkService accepts what follows the ':' of a next hop as Postfix
// does: nothing (the default port), a port 1-65535 in decimal, or a
// service name, which does not start with a digit (host_port() refuses
// "garbage after numerical service"; getservbyname() knows the names).
func checkService(s string) error {
	if s == "" {
		return nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not 1-65535", s)
		}
		return nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ',' {
			return fmt.Errorf("service %q contains %q", s, s[i:i+1])
		}
	}
	return nil
}

// postfixWalksParents reports whether Postfix goes on with parent-domain
// keys (".b.example", ".example") when key is not found: only for a key
// that is a valid host name as Postfix's valid_utf8_hostname() sees it
// (no brackets, port, trailing dot, empty label or all-numeric name).
func postfixWalksParents(key string) bool {
	if key == "" || len(key) > 255 {
		return false
	}
	if !isASCII(key) {
		if !utf8.ValidString(key) {
			return false
		}
		a, err := idnaProfile.ToASCII(key)
		if err != nil {
			return false
		}
		key = a
	}
	label, numeric := 0, true
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_':
			numeric = false
			label++
		case c >= '0' && c <= '9':
			label++
		case c == '-':
			numeric = false
			if label == 0 || i+1 == len(key) || key[i+1] == '.' {
				return false
			}
			label++
		case c == '.':
			if label == 0 || i+1 == len(key) {
				return false
			}
			label = 0
		default:
			return false
		}
		if label > 63 {
			return false
		}
	}
	return !numeric
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
