package certid

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable returns s safe to print on a terminal: each byte or character
// that could move the cursor, change the terminal's state, ring its bell,
// or hide or reorder the text around it is replaced by a backslash and the
// hex of its bytes, the way RFC 4514 escapes bytes in DNs (\1b, \c2\9b,
// \e2\80\ae). That is:
//
//   - C0 control characters and DEL (ESC starts cursor, colour and OSC
//     sequences such as a window title or OSC 52 clipboard writes; BEL; CR
//     and LF forge lines);
//   - C1 control characters U+0080..U+009F (CSI, OSC and ST in 8-bit form);
//   - bytes that are not UTF-8 (a terminal may read a lone 0x9b as CSI);
//   - invisible format characters (Unicode category Cf): bidirectional
//     embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069),
//     marks, zero-width spaces and joiners, the BOM, tag characters;
//   - the line and paragraph separators U+2028 and U+2029.
//
// Everything else, other scripts included, is kept. A backslash is kept
// too (RFC 4514 escapes use it), so the result is for display, not for
// parsing back. Everything tlsgate prints that comes from a certificate
// (names, DNs, alternative names, e-mail addresses) goes through it.
func Printable(s string) string {
	i := unsafeAt(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, n) {
			for j := range n {
				c := s[i+j]
				b.WriteByte('\\')
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

const hexDigits = "0123456789abcdef"

// unsafeAt returns the index of the first character Printable escapes, or
// -1.
func unsafeAt(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, n) {
			return i
		}
		i += n
	}
	return -1
}

// unsafeRune reports whether the character r, n bytes long in its UTF-8
// input, must be escaped.
func unsafeRune(r rune, n int) bool {
	switch {
	case r == utf8.RuneError && n == 1: // not UTF-8
		return true
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == '\u2028', r == '\u2029':
		return true
	}
	return r >= 0x80 && unicode.Is(unicode.Cf, r)
}
