package mtasts

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Mode is a policy's "mode" field.
type Mode uint8

const (
	// ModeNone ("none"): the domain withdrew its policy; senders treat it
	// as having none (but cache that for max_age).
	ModeNone Mode = iota + 1
	// ModeTesting ("testing"): report failures, deliver anyway.
	ModeTesting
	// ModeEnforce ("enforce"): deliver only to a matching MX with a valid
	// certificate.
	ModeEnforce
)

// String returns "none", "testing" or "enforce".
func (m Mode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeTesting:
		return "testing"
	case ModeEnforce:
		return "enforce"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses "none", "testing" or "enforce" (case-sensitive, as
// RFC 8461 §3.2 writes them).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "none":
		return ModeNone, nil
	case "testing":
		return ModeTesting, nil
	case "enforce":
		return ModeEnforce, nil
	}
	return 0, fmt.Errorf("mode %q: want testing, enforce or none", clip(s))
}

// MaxMaxAge is the largest max_age RFC 8461 §3.2 allows (one year);
// larger values are capped to it.
const MaxMaxAge = 31557600

// MaxPolicySize is the largest policy body RFC 8461 §3.3 lets senders
// accept (64 KiB).
const MaxPolicySize = 64 << 10

// Policy is a parsed MTA-STS policy (RFC 8461 §3.2).
type Policy struct {
	// Mode is the mode field.
	Mode Mode
	// MaxAge is max_age in seconds, capped at MaxMaxAge.
	MaxAge uint32
	// MX are the valid "mx" patterns, normalized: lower case, no trailing
	// dot, a leading "*." kept as written; duplicates removed, order kept.
	MX []string
	// Dropped are the "mx" values left out of MX, each with the reason
	// ("192.0.2.1: an IP address"), for a log line.
	Dropped []string
}

// ParsePolicy parses a policy body:
//
//	version: STSv1
//	mode: enforce
//	mx: mail.example.com
//	mx: *.example.net
//	max_age: 604800
//
// Lines end in LF or CRLF; whitespace may follow the colon and end a line.
// Empty lines are skipped. version, mode and max_age are required exactly
// once; mx at least once unless the mode is none (entries that are IP
// addresses or not domain names are dropped, see [Policy.Dropped]; a
// testing or enforce policy whose mx entries are all dropped is an
// error). Other "name: value" fields are checked for syntax and ignored.
func ParsePolicy(body []byte) (*Policy, error) {
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("mta-sts policy: %d bytes, more than %d", len(body), MaxPolicySize)
	}
	var (
		p                              Policy
		seenVersion, seenMode, seenAge bool
		mxSeen                         int
		seen                           = map[string]bool{}
	)
	lineNo := 0
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		lineNo++
		line = bytes.TrimSuffix(line, []byte("\r"))
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, fmt.Errorf("mta-sts policy line %d: stray CR", lineNo)
		}
		line = bytes.TrimRight(line, " \t")
		if len(line) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, fmt.Errorf("mta-sts policy line %d: %q is not \"name: value\"", lineNo, clip(string(line)))
		}
		key := string(k)
		val := string(bytes.TrimLeft(v, " \t"))
		switch key {
		case "version":
			if seenVersion {
				return nil, fmt.Errorf("mta-sts policy line %d: version given twice", lineNo)
			}
			seenVersion = true
			if val != "STSv1" {
				return nil, fmt.Errorf("mta-sts policy line %d: version %q, want STSv1", lineNo, clip(val))
			}
		case "mode":
			if seenMode {
				return nil, fmt.Errorf("mta-sts policy line %d: mode given twice", lineNo)
			}
			seenMode = true
			m, err := ParseMode(val)
			if err != nil {
				return nil, fmt.Errorf("mta-sts policy line %d: %w", lineNo, err)
			}
			p.Mode = m
		case "max_age":
			if seenAge {
				return nil, fmt.Errorf("mta-sts policy line %d: max_age given twice", lineNo)
			}
			seenAge = true
			age, err := parseMaxAge(val)
			if err != nil {
				return nil, fmt.Errorf("mta-sts policy line %d: %w", lineNo, err)
			}
			p.MaxAge = age
		case "mx":
			mxSeen++
			pat, why := normalizeMX(val)
			if why != "" {
				p.Dropped = append(p.Dropped, clip(val)+": "+why)
				continue
			}
			if !seen[pat] {
				seen[pat] = true
				p.MX = append(p.MX, pat)
			}
		default:
			if !validExtName(key) {
				return nil, fmt.Errorf("mta-sts policy line %d: bad field name %q", lineNo, clip(key))
			}
			if !validPolicyExtValue(val) {
				return nil, fmt.Errorf("mta-sts policy line %d: bad value for field %s", lineNo, key)
			}
		}
	}
	switch {
	case !seenVersion:
		return nil, fmt.Errorf("mta-sts policy: no version field")
	case !seenMode:
		return nil, fmt.Errorf("mta-sts policy: no mode field")
	case !seenAge:
		return nil, fmt.Errorf("mta-sts policy: no max_age field")
	}
	if p.Mode != ModeNone {
		if mxSeen == 0 {
			return nil, fmt.Errorf("mta-sts policy: mode %s needs at least one mx field", p.Mode)
		}
		if len(p.MX) == 0 {
			return nil, fmt.Errorf("mta-sts policy: no usable mx field (%s)", strings.Join(p.Dropped, "; "))
		}
	}
	return &p, nil
}

// parseMaxAge parses 1*10DIGIT and caps it at MaxMaxAge.
func parseMaxAge(s string) (uint32, error) {
	if len(s) < 1 || len(s) > 10 {
		return 0, fmt.Errorf("max_age %q: want 1 to 10 digits", clip(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("max_age %q: want 1 to 10 digits", clip(s))
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("max_age %q: %w", s, err)
	}
	if n > MaxMaxAge {
		n = MaxMaxAge
	}
	return uint32(n), nil
}

// validPolicyExtValue checks sts-policy-ext-value: printable ASCII or
// UTF-8, single spaces allowed inside, no control characters, no
// leading or trailing space.
func validPolicyExtValue(s string) bool {
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// normalizeMX turns an mx value into a pattern ("mx.example.com" or
// "*.example.net", lower case, no trailing dot) or says why it is dropped.
func normalizeMX(v string) (string, string) {
	if v == "" {
		return "", "empty"
	}
	s := strings.TrimSuffix(v, ".")
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return "", "an IP address"
	}
	host := s
	wild := false
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		host, wild = rest, true
	}
	if err := checkHostname(host); err != nil {
		return "", err.Error()
	}
	host = strings.ToLower(host)
	if wild {
		return "*." + host, ""
	}
	return host, ""
}

// checkHostname checks RFC 5321 Domain syntax (LDH labels, none empty,
// at most 63 octets each, 253 in all).
func checkHostname(h string) error {
	if h == "" {
		return fmt.Errorf("not a domain name")
	}
	if len(h) > 253 {
		return fmt.Errorf("longer than 253 octets")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return fmt.Errorf("empty label")
		}
		if len(label) > 63 {
			return fmt.Errorf("label longer than 63 octets")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' {
				return fmt.Errorf("character %q not allowed in a domain name", c)
			}
		}
	}
	return nil
}

// Match returns the policy's mx patterns in the syntax of Postfix's
// "match=" attribute (and of Sendmail's FEATURE(`sts') map): patterns
// joined by ':', "*.example.net" written ".example.net". It is "" when
// there are none.
func (p *Policy) Match() string {
	var b strings.Builder
	for i, m := range p.MX {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strings.TrimPrefix(m, "*"))
	}
	return b.String()
}

// Answer returns the TLS policy an MTA gets for this policy: for mode
// enforce "secure match=<Match> servername=hostname", otherwise "". Both
// Postfix's smtp_tls_policy_maps and Sendmail's FEATURE(`sts') map take
// this string (Sendmail's STS_Check and Set_SNI rules expect match= before
// servername=hostname, as written here).
func (p *Policy) Answer() string {
	if p.Mode != ModeEnforce || len(p.MX) == 0 {
		return ""
	}
	return "secure match=" + p.Match() + " servername=hostname"
}

// String returns the policy in its file syntax (LF line ends, the kept
// mx patterns only), for display.
func (p *Policy) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: STSv1\nmode: %s\n", p.Mode)
	for _, m := range p.MX {
		fmt.Fprintf(&b, "mx: %s\n", m)
	}
	fmt.Fprintf(&b, "max_age: %d\n", p.MaxAge)
	return b.String()
}
