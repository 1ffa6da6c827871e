package policy

import (
	"strings"
	"testing"
)

// TestMergeDiscovered: each merge rule on a real policy, decided on the
// exact key (parent patterns included).
func TestMergeDiscovered(t *testing.T) {
	p := mustParse(t, `mta = "postfix"
[[endpoint]]
name = "enc"
hosts = ["sts.test", "dane.test"]
[endpoint.outbound]
encryption = true
min_bits = 128

[[endpoint]]
name = "pinned"
hosts = ["pinned.test"]
[endpoint.outbound]
validate_cert = true
cn = "mx.pinned.test"

[[endpoint]]
name = "watch"
hosts = ["watch.test"]
mode = "monitor"
[endpoint.outbound]
validate_cert = true

[[endpoint]]
name = "parent"
hosts = [".parent.test"]
[endpoint.outbound]
encryption = true
`)
	sts := func(d string) Discovered {
		return Discovered{Source: SourceMTASTS, Text: "secure match=mx." + d + " servername=hostname"}
	}
	// dane: usable TLSA records on some MX hosts, not all; daneAll: on
	// every MX host.
	dane := Discovered{Source: SourceDANE, Text: "dane"}
	daneAll := Discovered{Source: SourceDANE, Text: "dane", AllMX: true}
	temp := Discovered{Temp: true, Reason: "DANE state unknown"}
	for _, tc := range []struct {
		key       string
		d         Discovered
		text      string // "" = not found; "TEMP" = TempError
		source    Source
		endpoint  string
		overrides Source
	}{
		// Nothing discovered: the endpoint answer unchanged.
		{"sts.test", Discovered{}, "encrypt ciphers=high", SourceEndpoint, "enc", SourceNone},
		{"open.test", Discovered{}, "", SourceNone, "", SourceNone},
		// Below authenticated: the discovered level, ciphers kept.
		{"sts.test", sts("sts.test"), "secure match=mx.sts.test servername=hostname ciphers=high", SourceMTASTS, "enc", SourceNone},
		{"dane.test", daneAll, "dane ciphers=high", SourceDANE, "enc", SourceNone},
		// "dane" with MX hosts that Postfix would give "may" (no usable
		// TLSA records) is weaker than the endpoint's "encrypt" there:
		// dane-only, only DANE-authenticated MX hosts.
		{"dane.test", dane, "dane-only ciphers=high", SourceDANE, "enc", SourceNone},
		// Both authenticate: the endpoint wins and says what it overrides.
		{"pinned.test", sts("pinned.test"), "secure match=mx.pinned.test", SourceEndpoint, "pinned", SourceMTASTS},
		{"pinned.test", dane, "secure match=mx.pinned.test", SourceEndpoint, "pinned", SourceDANE},
		{"pinned.test", daneAll, "secure match=mx.pinned.test", SourceEndpoint, "pinned", SourceDANE},
		// Monitor mode, or no endpoint: the discovered policy, "dane" also
		// where not every MX host has usable TLSA records (the domain's
		// own policy: no endpoint asks for more).
		{"watch.test", dane, "dane", SourceDANE, "watch", SourceNone},
		{"watch.test", daneAll, "dane", SourceDANE, "watch", SourceNone},
		{"open.test", dane, "dane", SourceDANE, "", SourceNone},
		{"open.test", daneAll, "dane", SourceDANE, "", SourceNone},
		{"open.test", sts("open.test"), "secure match=mx.open.test servername=hostname", SourceMTASTS, "", SourceNone},
		// A parent pattern decides the exact key: merged there.
		{"mx.parent.test", sts("mx.parent.test"), "secure match=mx.mx.parent.test servername=hostname", SourceMTASTS, "parent", SourceNone},
		{"mx.parent.test", dane, "dane-only", SourceDANE, "parent", SourceNone},
		{"mx.parent.test", daneAll, "dane", SourceDANE, "parent", SourceNone},
		// TEMP unless an endpoint authenticates.
		{"sts.test", temp, "TEMP", SourceNone, "enc", SourceNone},
		{"watch.test", temp, "TEMP", SourceNone, "watch", SourceNone},
		{"open.test", temp, "TEMP", SourceNone, "", SourceNone},
		{"pinned.test", temp, "secure match=mx.pinned.test", SourceEndpoint, "pinned", SourceNone},
	} {
		a, err := now(p).PostfixDiscovered(tc.key, tc.d)
		got := a.Text
		if err != nil {
			if !IsTemp(err) {
				t.Errorf("%s %+v: %v", tc.key, tc.d, err)
				continue
			}
			got = "TEMP"
		} else if !a.Found {
			got = ""
		}
		name := ""
		if a.Endpoint != nil {
			name = a.Endpoint.Name
		}
		if got != tc.text || (err == nil && a.Source != tc.source) || name != tc.endpoint || a.Overrides != tc.overrides {
			t.Errorf("%s %+v:\n got %q source %v endpoint %q overrides %v\nwant %q source %v endpoint %q overrides %v",
				tc.key, tc.d, got, a.Source, name, a.Overrides, tc.text, tc.source, tc.endpoint, tc.overrides)
		}
	}
	// Postfix asks nothing after the exact key once it is found.
	w := now(p).PostfixWalkDiscovered("mx.open.test", func(k string) Discovered {
		if k == "mx.open.test" {
			return dane
		}
		return Discovered{}
	})
	if len(w.Steps) != 1 || !w.Steps[0].Answer.Found || w.Steps[0].Answer.Text != "dane" {
		t.Errorf("walk %s", walkString(w))
	}
	// The endpoint's protocols= and exclude= are kept with dane-only too.
	enc := Answer{Found: true, Text: "encrypt protocols=>=TLSv1.2 ciphers=high exclude=aNULL", Source: SourceEndpoint}
	if a, err := MergeDiscovered(enc, dane); err != nil || a.Text != "dane-only protocols=>=TLSv1.2 ciphers=high exclude=aNULL" || a.Source != SourceDANE {
		t.Errorf("merge of %q with partial dane: %+v %v", enc.Text, a, err)
	}
	// DANEOnly: an enforcing "encrypt" and "dane" without usable TLSA
	// records on every MX host, nothing else.
	for _, tc := range []struct {
		a    Answer
		d    Discovered
		want bool
	}{
		{enc, dane, true},
		{Answer{Found: true, Text: "encrypt"}, dane, true},
		{enc, daneAll, false},
		{enc, sts("x.test"), false},
		{enc, Discovered{Source: SourceMTASTS, Text: "secure match=x", AllMX: false}, false},
		{enc, temp, false},
		{Answer{}, dane, false},
		{Answer{Found: true, Text: "may"}, dane, false},
		{Answer{Found: true, Text: "verify"}, dane, false},
		{Answer{Found: true, Text: "dane-only"}, dane, false},
	} {
		if got := DANEOnly(tc.a, tc.d); got != tc.want {
			t.Errorf("DANEOnly(%q, %+v) = %v, want %v", tc.a.Text, tc.d, got, tc.want)
		}
	}
	// A discovered text that does not authenticate is refused (TEMP for
	// the caller), never passed on.
	if _, err := MergeDiscovered(Answer{}, Discovered{Source: SourceMTASTS, Text: "may"}); err == nil || IsTemp(err) || !strings.Contains(err.Error(), "not an authenticated level") {
		t.Errorf("merge of \"may\": %v", err)
	}
	for s, want := range map[Source]string{SourceNone: "none", SourceEndpoint: "endpoint", SourceDANE: "dane", SourceMTASTS: "mta-sts"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q", s, s.String())
		}
	}
}
