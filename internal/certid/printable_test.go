package certid

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx.partner.example", "mx.partner.example"},
		{"Müller GmbH 証明書 Ωmega", "Müller GmbH 証明書 Ωmega"},
		{`CN=a\,b`, `CN=a\,b`},
		{"", ""},
		{"evil\x1b[2J\x1b]0;title\x07.example", `evil\1b[2J\1b]0;title\07.example`},
		{"\x1b]52;c;Y2xpcGJvYXJk\x1b\\", `\1b]52;c;Y2xpcGJvYXJk\1b\`},
		{"line\r\nX-Forged: yes", `line\0d\0aX-Forged: yes`},
		{"tab\there\x00nul\x7fdel", `tab\09here\00nul\7fdel`},
		{"c1 \u009b31m csi \u009d osc \u0085 nel", `c1 \c2\9b31m csi \c2\9d osc \c2\85 nel`},
		{"raw \x9b31m and \xff\xfe", `raw \9b31m and \ff\fe`},
		{"moc.elpmaxe\u202e.example", `moc.elpmaxe\e2\80\ae.example`},
		{"\u2066isolate\u2069 \u202aembed\u202c \u200fRLM", `\e2\81\a6isolate\e2\81\a9 \e2\80\aaembed\e2\80\ac \e2\80\8fRLM`},
		{"zero\u200bwidth\u200djoin\ufeffbom\u00adshy", `zero\e2\80\8bwidth\e2\80\8djoin\ef\bb\bfbom\c2\adshy`},
		{"tag\U000E0041", `tag\f3\a0\81\81`},
		{"line\u2028sep\u2029para", `line\e2\80\a8sep\e2\80\a9para`},
		{"truncated \xe2\x80", `truncated \e2\80`},
	}
	for _, tc := range tests {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestPrintableLeavesNothingUnsafe checks every code point: the result is
// valid UTF-8 without controls, format characters or separators.
func TestPrintableLeavesNothingUnsafe(t *testing.T) {
	var b strings.Builder
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if utf8.ValidRune(r) {
			b.WriteRune(r)
		}
	}
	for c := 0x80; c < 0x100; c++ {
		b.WriteByte(byte(c)) // lone bytes
	}
	out := Printable(b.String())
	if !utf8.ValidString(out) {
		t.Fatal("output is not UTF-8")
	}
	for _, r := range out {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Fatalf("%U left in the output", r)
		}
	}
}

func FuzzPrintable(f *testing.F) {
	f.Add("evil\x1b[2J\u202e\x9b")
	f.Fuzz(func(t *testing.T, s string) {
		out := Printable(s)
		if !utf8.ValidString(out) {
			t.Fatalf("Printable(%q) = %q is not UTF-8", s, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
				t.Fatalf("Printable(%q) = %q keeps %U", s, out, r)
			}
		}
		if unsafeAt(s) < 0 && out != s {
			t.Fatalf("Printable changed the safe %q to %q", s, out)
		}
	})
}
