package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrNotDomain is matched (errors.Is) by the error Lookup, Refresh,
// Show and Purge return for a key that gets no discovery; the error
// itself is a *KeyError saying why.
var ErrNotDomain = errors.New("not a bare domain name")

// KeyError is a lookup key that gets no discovery.
type KeyError struct {
	// Key is the key as given.
	Key string
	// Why says what it is instead.
	Why string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("discovery: key %q: %s: no discovery", e.Key, e.Why)
}

// Is makes errors.Is(err, ErrNotDomain) true.
func (e *KeyError) Is(target error) bool { return target == ErrNotDomain }

// BareDomain returns key normalized (lower case, one trailing dot
// removed) if it is a bare domain name with at least two labels, the
// only keys discovery answers. Postfix also asks smtp_tls_policy_maps for
// ".parent" (parent-domain matching), "[host]" and "[host]:port" (explicit
// next hops), "host:port" and address keys; MTA-STS applies to the
// recipient domain only, never to a parent domain (RFC 8461 §3.4), and
// DANE for an explicit next hop is Postfix's own business, so these get a
// *KeyError (matching ErrNotDomain) and the caller answers NOTFOUND. The
// common case (already lower case, no dot at the end) does not allocate.
func BareDomain(key string) (string, error) {
	bad := func(why string) (string, error) { return "", &KeyError{Key: key, Why: why} }
	s := strings.TrimSuffix(key, ".")
	switch {
	case s == "":
		return bad("empty")
	case s[0] == '.':
		return bad("a parent-domain key (.domain); MTA-STS never applies to a parent domain (RFC 8461 §3.4)")
	case strings.IndexByte(s, '[') >= 0 || strings.IndexByte(s, ']') >= 0:
		return bad("an explicit next hop ([host])")
	case strings.IndexByte(s, ':') >= 0:
		if _, err := netip.ParseAddr(s); err == nil {
			return bad("an IP address")
		}
		return bad("a host:port next hop")
	case len(s) > 253:
		return bad("longer than 253 octets")
	}
	labels, start, upper := 0, 0, false
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			case c >= 'A' && c <= 'Z':
				upper = true
			default:
				return bad(fmt.Sprintf("character %q is not allowed in a domain name", c))
			}
			continue
		}
		n := i - start
		switch {
		case n == 0:
			return bad("empty label")
		case n > 63:
			return bad("label longer than 63 octets")
		case s[start] == '-' || s[i-1] == '-':
			return bad("label starts or ends with '-'")
		}
		labels++
		start = i + 1
	}
	if labels < 2 {
		return bad("a single label, not a mail domain")
	}
	// A numeric last label: an IPv4 address (or something like one); no
	// top-level domain is numeric. Checked without netip.ParseAddr, whose
	// error for every domain name would allocate.
	if last := s[strings.LastIndexByte(s, '.')+1:]; allDigits(last) {
		if _, err := netip.ParseAddr(s); err == nil {
			return bad("an IP address")
		}
		return bad("a numeric top-level label")
	}
	if upper {
		s = strings.ToLower(s)
	}
	return s, nil
}

// allDigits reports whether s is made of decimal digits only (and not
// empty), without the cost of strings.Trim's character set on every
// lookup.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
