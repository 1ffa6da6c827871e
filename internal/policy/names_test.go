package policy

import (
	"testing"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Xtext encodes what Sendmail's access map compares, and certid decodes it.
func TestXtext(t *testing.T) {
	for in, want := range map[string]string{
		"Lab Test CA":      "Lab+20Test+20CA",
		"a+b(c)<d>\"e\\":   "a+2Bb+28c+29+3Cd+3E+22e+5C",
		"café":             "caf+C3+A9",
		"/C=DE/O=Lab Test": "/C=DE/O=Lab+20Test",
	} {
		if got := Xtext(in); got != want {
			t.Errorf("Xtext(%q) = %q, want %q", in, got, want)
		}
		if back, err := certid.DecodeXtext(want); err != nil || back != in {
			t.Errorf("certid.DecodeXtext(%q) = %q, %v", want, back, err)
		}
	}
	for _, bad := range []string{"a+", "a+2", "a+ZZ"} {
		if _, err := certid.DecodeXtext(bad); err == nil {
			t.Errorf("certid.DecodeXtext(%q): no error", bad)
		}
	}
}
