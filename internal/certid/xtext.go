package certid

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadXtext reports a malformed xtext string; DecodeXtext wraps it with the offset.
var ErrBadXtext = errors.New("xtext: malformed")

// DecodeXtext decodes Postfix xtext (RFC 3461 section 4; Postfix src/global/xtext.c), the
// encoding of the ccert_subject and ccert_issuer policy-delegation attributes: "+XX" with
// two hexadecimal digits stands for the byte 0xXX, every other byte stands for itself.
// Postfix encodes '+', bytes below 33 and above 126 with upper-case digits; like Postfix's
// own decoder, DecodeXtext also accepts lower-case ones.
//
// It fails with ErrBadXtext on a '+' not followed by two hex digits, and on a NUL byte,
// raw or encoded as "+00": a NUL has no place in a certificate name (Postfix refuses such
// names) and would let "good.example\0.evil.example" compare as something it is not.
func DecodeXtext(s string) (string, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return "", fmt.Errorf("%w: NUL byte at offset %d", ErrBadXtext, i)
	}
	i := strings.IndexByte(s, '+')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c != '+' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%w: truncated \"+XX\" at offset %d", ErrBadXtext, i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("%w: %q at offset %d is not \"+\" and two hex digits", ErrBadXtext, s[i:i+3], i)
		}
		v := hi<<4 | lo
		if v == 0 {
			return "", fmt.Errorf("%w: encoded NUL at offset %d", ErrBadXtext, i)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

// EncodeXtext encodes s as xtext the way Postfix's xtext_quote does: '+', bytes below 33
// and above 126, and the bytes in special become "+XX" with upper-case hex digits.
func EncodeXtext(s, special string) string {
	const hexDigits = "0123456789ABCDEF"
	quote := func(c byte) bool {
		return c == '+' || c < 33 || c > 126 || strings.IndexByte(special, c) >= 0
	}
	i := 0
	for i < len(s) && !quote(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if quote(c) {
			b.WriteByte('+')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
