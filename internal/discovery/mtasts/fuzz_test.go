package mtasts

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParsePolicy checks that ParsePolicy never panics and that what it
// accepts is sane: a non-empty match list for enforce, patterns that are
// lower-case domain names, and a display form that parses back the same.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(goodPolicy))
	f.Add([]byte("version: STSv1\r\nmode: testing\r\nmx: *.example.net\r\nmax_age: 31557600\r\n"))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0"))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePolicy(body)
		if err != nil {
			if p != nil {
				t.Fatalf("error %v with a policy %+v", err, p)
			}
			return
		}
		if p.MaxAge > MaxMaxAge {
			t.Fatalf("max_age %d above the cap", p.MaxAge)
		}
		if p.Mode != ModeNone && len(p.MX) == 0 {
			t.Fatalf("mode %v accepted with no mx", p.Mode)
		}
		for _, m := range p.MX {
			h := strings.TrimPrefix(m, "*.")
			if h != strings.ToLower(h) || checkHostname(h) != nil || strings.HasSuffix(h, ".") {
				t.Fatalf("bad pattern %q kept", m)
			}
		}
		a := p.Answer()
		if p.Mode == ModeEnforce {
			if !strings.HasPrefix(a, "secure match=") || strings.HasPrefix(a, "secure match= ") ||
				!strings.HasSuffix(a, " servername=hostname") || strings.Count(a, " ") != 2 {
				t.Fatalf("Answer() = %q", a)
			}
		} else if a != "" {
			t.Fatalf("mode %v: Answer() = %q, want \"\"", p.Mode, a)
		}
		back, err := ParsePolicy([]byte(p.String()))
		if err != nil {
			t.Fatalf("String() does not parse: %v\n%s", err, p.String())
		}
		want := *p
		want.Dropped = nil
		if !reflect.DeepEqual(back, &want) {
			t.Fatalf("round trip %+v != %+v", back, want)
		}
	})
}

// FuzzParseRecord checks that ParseRecord and SelectRecord never panic
// and agree, and that an accepted id is 1 to 32 letters and digits.
func FuzzParseRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Add("v=STSv1;id=a;ext=b")
	f.Add("v=STSv1 ; id=a ; ")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err == nil && !validID(r.ID) {
			t.Fatalf("ParseRecord(%q) accepted id %q", s, r.ID)
		}
		r2, err2 := SelectRecord([]string{s, "v=spf1 -all"})
		if err == nil && (err2 != nil || r2 != r) {
			t.Fatalf("SelectRecord disagrees: %+v %v vs %+v", r2, err2, r)
		}
		if err2 == nil && err != nil {
			t.Fatalf("SelectRecord accepted %q, ParseRecord said %v", s, err)
		}
	})
}
