package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const walkConf = `mta = "sendmail"
[[endpoint]]
name = "company-b"
hosts = ["company-b.example", ".company-b.example", "198.51.100.0/24"]
  [endpoint.outbound]
  validate_cert = true
  min_bits = 128
[[endpoint]]
name = "exact"
hosts = ["exact.example", "[2001:db8::5]"]
  [endpoint.outbound]
  encryption = true
`

func stepKeys(w Walk) []string {
	var keys []string
	for _, s := range w.Steps {
		keys = append(keys, s.Key)
	}
	return keys
}

func effective(w Walk) string {
	s, ok := w.Effective()
	switch {
	case !ok:
		return ""
	case s.Err != nil:
		return "TEMP"
	}
	return s.Answer.Text
}

// TestSendmailRcptWalk: the keys of Sendmail's tls_rcpt ruleset, in
// order (proto.m4: F, U, D, E), and the first that decides.
func TestSendmailRcptWalk(t *testing.T) {
	p := mustParse(t, walkConf)
	for _, tc := range []struct {
		rcpt string
		keys []string
		want string
	}{
		{"Joe+Lists@Sub.Company-B.Example", []string{"tls_rcpt:joe+lists@sub.company-b.example"}, "TEMP+VERIFY:128"},
		{"<joe@company-b.example.>", []string{"tls_rcpt:joe@company-b.example"}, "TEMP+VERIFY:128"},
		{"joe+x@other.example", []string{
			"tls_rcpt:joe+x@other.example", "tls_rcpt:joe+*@other.example", "tls_rcpt:joe@other.example",
			"tls_rcpt:joe+x@", "tls_rcpt:joe+*@", "tls_rcpt:joe@",
			"tls_rcpt:other.example", "tls_rcpt:example", "tls_rcpt:"}, ""},
		// An uncovered subdomain of a name listed exactly: Sendmail asks
		// tls_rcpt:exact.example while walking up, which an exact name
		// does not answer (it covers exact.example alone).
		{"u@mx.exact.example", []string{"tls_rcpt:u@mx.exact.example", "tls_rcpt:u@", "tls_rcpt:mx.exact.example", "tls_rcpt:exact.example", "tls_rcpt:example", "tls_rcpt:"}, ""},
		{"u@[198.51.100.7]", []string{"tls_rcpt:u@[198.51.100.7]"}, "TEMP+VERIFY:128"},
		{"u@[192.0.2.7]", []string{"tls_rcpt:u@[192.0.2.7]", "tls_rcpt:u@", "tls_rcpt:[192.0.2.7]", "tls_rcpt:[192.0.2]", "tls_rcpt:[192.0]", "tls_rcpt:[192]", "tls_rcpt:"}, ""},
		{"localuser", []string{"tls_rcpt:localuser@", "tls_rcpt:"}, ""},
	} {
		w := now(p).SendmailRcptWalk(tc.rcpt)
		if got := stepKeys(w); strings.Join(got, " ") != strings.Join(tc.keys, " ") {
			t.Errorf("%s: keys\n got %q\nwant %q", tc.rcpt, got, tc.keys)
		}
		if got := effective(w); got != tc.want {
			t.Errorf("%s: in effect %q, want %q", tc.rcpt, got, tc.want)
		}
	}
	// Every key the walk of a covered recipient would ask answers the
	// same, whichever one Sendmail reaches.
	for _, k := range []string{"tls_rcpt:joe@sub.company-b.example", "tls_rcpt:joe+*@sub.company-b.example", "tls_rcpt:sub.company-b.example", "tls_rcpt:.company-b.example", "tls_rcpt:[198.51.100.7]"} {
		if a, err := now(p).SendmailAccess(k); err != nil || a.Text != "TEMP+VERIFY:128" {
			t.Errorf("%s: %+v %v", k, a, err)
		}
	}
	for _, k := range []string{"tls_rcpt:joe@", "tls_rcpt:", "tls_rcpt:[198.51.100]", "tls_rcpt:example"} {
		if a, err := now(p).SendmailAccess(k); err != nil || a.Found {
			t.Errorf("%s: %+v %v, want not found", k, a, err)
		}
	}
}

// TestSendmailServerWalk: tls_srv keys, the name first, then the address.
func TestSendmailServerWalk(t *testing.T) {
	p := mustParse(t, walkConf)
	for _, tc := range []struct {
		name string
		addr string
		keys []string
		want string
	}{
		{"mx1.company-b.example", "192.0.2.1", []string{"tls_srv:mx1.company-b.example"}, "TEMP+VERIFY:128"},
		{"mx.other.example", "198.51.100.9", []string{"tls_srv:mx.other.example", "tls_srv:other.example", "tls_srv:example", "tls_srv:198.51.100.9"}, "TEMP+VERIFY:128"},
		{"mx.other.example", "2001:db8::5", []string{"tls_srv:mx.other.example", "tls_srv:other.example", "tls_srv:example", "tls_srv:ipv6:2001:db8:0:0:0:0:0:5"}, "TEMP+ENCR:40"},
		{"[192.0.2.9]", "192.0.2.9", []string{"tls_srv:[192.0.2.9]", "tls_srv:[192.0.2]", "tls_srv:[192.0]", "tls_srv:[192]", "tls_srv:192.0.2.9", "tls_srv:192.0.2", "tls_srv:192.0", "tls_srv:192", "tls_srv:"}, ""},
	} {
		w := now(p).SendmailServerWalk(tc.name, netip.MustParseAddr(tc.addr))
		if got := stepKeys(w); strings.Join(got, " ") != strings.Join(tc.keys, " ") {
			t.Errorf("%s %s: keys\n got %q\nwant %q", tc.name, tc.addr, got, tc.keys)
		}
		if got := effective(w); got != tc.want {
			t.Errorf("%s %s: in effect %q, want %q", tc.name, tc.addr, got, tc.want)
		}
	}
	if got := SendmailAddr(netip.MustParseAddr("2001:db8::5")); got != "IPv6:2001:db8:0:0:0:0:0:5" {
		t.Errorf("SendmailAddr = %q", got)
	}
	if got := SendmailAddr(netip.MustParseAddr("::ffff:192.0.2.1")); got != "192.0.2.1" {
		t.Errorf("SendmailAddr = %q", got)
	}
}

// TestSendmailCutKeys: Sendmail cuts socketmap keys at 256 bytes. A key
// of that length that could belong to covered destinations gets the
// strictest of them when one is at least as strict as all the others, or
// TEMP; never NOTFOUND. One that can belong to none is not found.
func TestSendmailCutKeys(t *testing.T) {
	p := mustParse(t, walkConf+`[[endpoint]]
name = "company-c"
hosts = [".company-c.example"]
  [endpoint.outbound]
  cn = "mx.company-c.example"
`)
	cut := func(s string) string { return s[:SendmailMaxKey] }
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		name, key, want, ep string // want "TEMP", "" (not found) or the text
	}{
		// The domain is cut after "compan": it may be company-b.example,
		// or a name below .company-b.example or .company-c.example, whose
		// rules are incomparable (min_bits = 128 against a cn): TEMP.
		{"cut in the domain", cut("tls_rcpt:" + long + "@compan" + strings.Repeat("y", 60)), "TEMP", ""},
		// The local part is cut: the domain is unknown.
		{"cut in the local part", cut("tls_rcpt:" + strings.Repeat("a", 300) + "@company-b.example"), "TEMP", ""},
		{"cut after the @", "tls_rcpt:" + strings.Repeat("a", 246) + "@", "TEMP", ""},
		{"server name", cut("tls_srv:" + strings.Repeat("b", 230) + ".company-b.example"), "TEMP", ""},
		{"srv_features asks", cut("srv_features:" + strings.Repeat("a.", 130)), "v", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.key) != SendmailMaxKey {
				t.Fatalf("key of %d bytes", len(tc.key))
			}
			a, err := now(p).SendmailAccess(tc.key)
			switch {
			case tc.want == "TEMP":
				if err == nil || !strings.Contains(err.Error(), "may have been cut by Sendmail (it cuts socketmap keys at 256 bytes)") {
					t.Errorf("%+v %v, want TEMP", a, err)
				}
			case tc.want == "":
				if err != nil || a.Found {
					t.Errorf("%+v %v, want not found", a, err)
				}
			case err != nil || a.Text != tc.want || !a.Truncated || tc.ep != "" && a.Endpoint.Name != tc.ep:
				t.Errorf("%+v %v, want %q from %q", a, err, tc.want, tc.ep)
			}
		})
	}
	// Without outbound endpoints whose names could fit, a cut key is
	// simply not found.
	q := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "z"
hosts = ["zzz.example"]
  [endpoint.outbound]
  encryption = true
`)
	a, err := now(q).SendmailAccess(cut("tls_rcpt:" + strings.Repeat("a", 200) + "@compan" + strings.Repeat("y", 60)))
	if err != nil || a.Found {
		t.Errorf("uncoverable cut key: %+v %v", a, err)
	}
	// A long recipient's walk stops at the first cut key that could be
	// covered.
	w := now(p).SendmailRcptWalk(strings.Repeat("a", 300) + "@company-b.example")
	if len(w.Steps) != 1 || effective(w) != "TEMP" {
		t.Errorf("walk %+v", w)
	}
}

// TestSendmailCutKeyStrictest: when one candidate is at least as strict
// as every other, a cut key gets its rules instead of TEMP.
func TestSendmailCutKeyStrictest(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "all"
hosts = [".example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name = "company-b"
hosts = ["company-b.example", ".company-b.example"]
  [endpoint.outbound]
  validate_cert = true
  min_bits = 128
[[endpoint]]
name = "monitored"
hosts = ["compact.test"]
mode = "monitor"
  [endpoint.outbound]
  encryption = true
`)
	key := ("tls_rcpt:" + strings.Repeat("a", 200) + "@compan" + strings.Repeat("y", 60))[:SendmailMaxKey]
	a, err := now(p).SendmailAccess(key)
	if err != nil || !a.Found || !a.Truncated || a.Text != "TEMP+VERIFY:128" || a.Endpoint.Name != "company-b" {
		t.Errorf("%+v %v", a, err)
	}
}
