package mtasts

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseRecord(t *testing.T) {
	tests := []struct {
		in     string
		wantID string
		errHas string
	}{
		{in: "v=STSv1; id=20160831085700Z", wantID: "20160831085700Z"},
		{in: "v=STSv1;id=abc", wantID: "abc"},
		{in: "v=STSv1; id=abc;", wantID: "abc"},
		{in: "v=STSv1 ;\tid=abc ; ", wantID: "abc"},
		{in: "v=STSv1; id=abc; ext=val.ue", wantID: "abc"},
		{in: "v=STSv1; ext=1; id=Z9", wantID: "Z9"},
		{in: "v=STSv1; id=" + strings.Repeat("a", 32), wantID: strings.Repeat("a", 32)},
		{in: "v=STSv1; id=" + strings.Repeat("a", 33), errHas: "1 to 32"},
		{in: "v=STSv1; id=", errHas: "1 to 32"},
		{in: "v=STSv1; id=ab-c", errHas: "1 to 32"},
		{in: "v=STSv1", errHas: "no id"},
		{in: "v=STSv1;", errHas: "no id"},
		{in: "v=STSv1; id=a; id=b", errHas: "twice"},
		{in: "v=STSv1; id=a;; x=y", errHas: "empty field"},
		{in: "v=STSv1; id", errHas: "not name=value"},
		{in: "v=STSv1; _x=1; id=a", errHas: "bad field name"},
		{in: "v=STSv1; x=a b; id=a", errHas: "bad value"},
		{in: "v=STSv1; x=; id=a", errHas: "bad value"},
		{in: "v=STSv2; id=a", errHas: "must start with v=STSv1"},
		{in: "V=STSv1; id=a", errHas: "must start with v=STSv1"},
		{in: " v=STSv1; id=a", errHas: "must start with v=STSv1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRecord(tt.in)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("ParseRecord(%q) = %+v, %v; want error containing %q", tt.in, r, err, tt.errHas)
				}
				return
			}
			if err != nil || r.ID != tt.wantID {
				t.Fatalf("ParseRecord(%q) = %+v, %v; want id %q", tt.in, r, err, tt.wantID)
			}
		})
	}
}

func TestSelectRecord(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		wantID  string
		wantErr error
	}{
		{name: "one", in: []string{"v=STSv1; id=1"}, wantID: "1"},
		{name: "others discarded", in: []string{"v=spf1 -all", "v=STSv1; id=2", "hello"}, wantID: "2"},
		{name: "none", in: []string{"v=spf1 -all"}, wantErr: ErrNoRecord},
		{name: "empty", in: nil, wantErr: ErrNoRecord},
		{name: "prefix only", in: []string{"v=STSv10; id=1"}, wantErr: ErrNoRecord},
		{name: "two", in: []string{"v=STSv1; id=1", "v=STSv1; id=2"}, wantErr: ErrMultipleRecords},
		{name: "one invalid", in: []string{"v=STSv1; id=!"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := SelectRecord(tt.in)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("SelectRecord = %+v, %v; want %v", r, err, tt.wantErr)
				}
			case tt.wantID == "":
				if err == nil {
					t.Fatalf("SelectRecord = %+v; want a parse error", r)
				}
			default:
				if err != nil || r.ID != tt.wantID {
					t.Fatalf("SelectRecord = %+v, %v; want id %q", r, err, tt.wantID)
				}
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Policy
		errHas  string
		answer  string
		display string
	}{
		{
			name: "rfc example",
			in:   "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
			want: &Policy{Mode: ModeEnforce, MaxAge: 604800,
				MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}},
			answer: "secure match=mail.example.com:.example.net:backupmx.example.com servername=hostname",
		},
		{
			name:   "CRLF, no final newline, whitespace, case folding, trailing dot, dup",
			in:     "version: STSv1\r\nmode:enforce  \r\nmx:   MX1.Example.COM.\r\nmx: mx1.example.com\r\n\r\nmax_age:\t86400",
			want:   &Policy{Mode: ModeEnforce, MaxAge: 86400, MX: []string{"mx1.example.com"}},
			answer: "secure match=mx1.example.com servername=hostname",
		},
		{
			name: "IP and invalid entries dropped",
			in:   "version: STSv1\nmode: enforce\nmx: 192.0.2.25\nmx: [2001:db8::1]\nmx: mx_1.example\nmx: *.*.example\nmx: -a.example\nmx: good.example\nmax_age: 1\n",
			want: &Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"good.example"},
				Dropped: []string{
					"192.0.2.25: an IP address",
					"[2001:db8::1]: an IP address",
					"mx_1.example: character '_' not allowed in a domain name",
					"*.*.example: character '*' not allowed in a domain name",
					"-a.example: label starts or ends with '-'",
				}},
			answer: "secure match=good.example servername=hostname",
		},
		{
			name:   "max_age capped",
			in:     "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 9999999999\n",
			want:   &Policy{Mode: ModeTesting, MaxAge: MaxMaxAge, MX: []string{"a.example"}},
			answer: "",
		},
		{
			name:   "mode none needs no mx",
			in:     "version: STSv1\nmode: none\nmax_age: 0\n",
			want:   &Policy{Mode: ModeNone, MaxAge: 0},
			answer: "",
		},
		{
			name: "extension ignored, any order",
			in:   "max_age: 5\nfoo.bar-1: some value ü\nmx: a.example\nmode: enforce\nversion: STSv1\n",
			want: &Policy{Mode: ModeEnforce, MaxAge: 5, MX: []string{"a.example"}},
		},
		{name: "all mx dropped", in: "version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmax_age: 5\n", errHas: "no usable mx"},
		{name: "no mx", in: "version: STSv1\nmode: enforce\nmax_age: 5\n", errHas: "needs at least one mx"},
		{name: "no version", in: "mode: enforce\nmx: a.example\nmax_age: 5\n", errHas: "no version"},
		{name: "no mode", in: "version: STSv1\nmx: a.example\nmax_age: 5\n", errHas: "no mode"},
		{name: "no max_age", in: "version: STSv1\nmode: enforce\nmx: a.example\n", errHas: "no max_age"},
		{name: "bad version", in: "version: STSv2\nmode: enforce\nmx: a\nmax_age: 5\n", errHas: "want STSv1"},
		{name: "bad mode", in: "version: STSv1\nmode: Enforce\nmx: a\nmax_age: 5\n", errHas: "want testing, enforce or none"},
		{name: "twice", in: "version: STSv1\nmode: enforce\nmode: testing\nmx: a\nmax_age: 5\n", errHas: "mode given twice"},
		{name: "max_age sign", in: "version: STSv1\nmode: enforce\nmx: a\nmax_age: -5\n", errHas: "digits"},
		{name: "max_age 11 digits", in: "version: STSv1\nmode: enforce\nmx: a\nmax_age: 12345678901\n", errHas: "digits"},
		{name: "no colon", in: "version STSv1\nmode: enforce\nmx: a\nmax_age: 5\n", errHas: "not \"name: value\""},
		{name: "space before colon", in: "version : STSv1\nmode: enforce\nmx: a\nmax_age: 5\n", errHas: "bad field name"},
		{name: "stray CR", in: "version: STSv1\rmode: enforce\nmx: a\nmax_age: 5\n", errHas: "stray CR"},
		{name: "control char in extension", in: "version: STSv1\nmode: enforce\nmx: a\nmax_age: 5\nx: a\x01b\n", errHas: "bad value"},
		{name: "html", in: "<html><body>404</body></html>\n", errHas: "is not \"name: value\""},
		{name: "html colon", in: "<a href=\"x:y\">\n", errHas: "bad field name"},
		{name: "too large", in: strings.Repeat("x: y\n", MaxPolicySize/5+1), errHas: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tt.in))
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("ParsePolicy = %+v, %v; want error containing %q", p, err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !reflect.DeepEqual(p, tt.want) {
				t.Fatalf("ParsePolicy =\n%#v\nwant\n%#v", p, tt.want)
			}
			if tt.answer != "" || p.Mode != ModeEnforce {
				if got := p.Answer(); got != tt.answer {
					t.Errorf("Answer() = %q, want %q", got, tt.answer)
				}
			}
			// The display form parses back to the same policy (without the
			// dropped entries).
			back, err := ParsePolicy([]byte(p.String()))
			if err != nil {
				t.Fatalf("ParsePolicy(String()): %v\n%s", err, p.String())
			}
			want := *p
			want.Dropped = nil
			if !reflect.DeepEqual(back, &want) {
				t.Errorf("round trip = %#v, want %#v", back, &want)
			}
		})
	}
}

func TestAnswerNeverEmptyMatch(t *testing.T) {
	p := &Policy{Mode: ModeEnforce, MaxAge: 5}
	if a := p.Answer(); a != "" {
		t.Fatalf("Answer() with no mx = %q, want \"\"", a)
	}
}
