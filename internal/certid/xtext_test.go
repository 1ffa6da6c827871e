package certid

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeXtext(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "plain", in: "client.lab.test", want: "client.lab.test"},
		{name: "empty", in: "", want: ""},
		{name: "space", in: "Lab+20Test+20CA", want: "Lab Test CA"},
		{name: "plus", in: "a+2Bb", want: "a+b"},
		{name: "lower-case hex as Postfix accepts", in: "a+2bb", want: "a+b"},
		{name: "equals stays raw", in: "CN=x", want: "CN=x"},
		{name: "UTF-8 bytes", in: "M+C3+BCller", want: "Müller"},
		{name: "invalid UTF-8 byte", in: "+FF", want: "\xff"},
		{name: "CR LF", in: "evil+0D+0Aline", want: "evil\r\nline"},
		{name: "at end", in: "x+41", want: "xA"},
		{name: "truncated one digit", in: "x+4", wantErr: true},
		{name: "truncated no digit", in: "x+", wantErr: true},
		{name: "non-hex", in: "x+GG", wantErr: true},
		{name: "half hex", in: "x+4G", wantErr: true},
		{name: "raw NUL", in: "good.example\x00.evil.example", wantErr: true},
		{name: "encoded NUL", in: "good.example+00.evil.example", wantErr: true},
		{name: "4 KB subject", in: strings.Repeat("+41", 1400), want: strings.Repeat("A", 1400)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeXtext(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrBadXtext) || !strings.HasPrefix(err.Error(), "xtext: ") {
					t.Fatalf("DecodeXtext(%q) = %q, %v; want ErrBadXtext", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecodeXtext(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestEncodeXtext(t *testing.T) {
	tests := []struct{ in, special, want string }{
		{"client.lab.test", "", "client.lab.test"},
		{"Lab Test CA", "", "Lab+20Test+20CA"},
		{"a+b", "", "a+2Bb"},
		{"Müller", "", "M+C3+BCller"},
		{"(x)", "()", "+28x+29"},
		{"\x7f~!", "", "+7F~!"},
	}
	for _, tc := range tests {
		if got := EncodeXtext(tc.in, tc.special); got != tc.want {
			t.Errorf("EncodeXtext(%q, %q) = %q, want %q", tc.in, tc.special, got, tc.want)
		}
	}
}

func FuzzDecodeXtext(f *testing.F) {
	for _, s := range []string{"", "client.lab.test", "Lab+20Test+20CA", "a+2Bb", "a+2bb", "x+", "x+4", "+00", "+FF+fe", "M+C3+BCller"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dec, err := DecodeXtext(s)
		if err != nil {
			if !errors.Is(err, ErrBadXtext) {
				t.Fatalf("unexpected error kind %v", err)
			}
		} else {
			if strings.IndexByte(dec, 0) >= 0 {
				t.Fatalf("DecodeXtext(%q) = %q contains NUL", s, dec)
			}
			if len(dec) > len(s) {
				t.Fatalf("decoded %q longer than input %q", dec, s)
			}
			// Re-encoding gives a canonical form that decodes to the same value.
			if again, err := DecodeXtext(EncodeXtext(dec, "")); err != nil || again != dec {
				t.Fatalf("round trip of %q: %q, %v", dec, again, err)
			}
		}
		// Encoding any NUL-free string round-trips.
		if strings.IndexByte(s, 0) < 0 {
			enc := EncodeXtext(s, "")
			for i := 0; i < len(enc); i++ {
				if enc[i] < 33 || enc[i] > 126 {
					t.Fatalf("EncodeXtext(%q) = %q has raw byte 0x%02x", s, enc, enc[i])
				}
			}
			if back, err := DecodeXtext(enc); err != nil || back != s {
				t.Fatalf("DecodeXtext(EncodeXtext(%q)) = %q, %v", s, back, err)
			}
		}
	})
}
