package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An endpoint without an [endpoint.inbound] table does not decide who may
// connect to us: a plaintext session from mx1.company-b.example is judged
// by .company-b.example, not by the outbound-only endpoint that lists
// mx1.company-b.example.
func TestInboundNotShadowedByOutboundOnly(t *testing.T) {
	p := mustParse(t, `mta = "postfix"
[[endpoint]]
name = "company-b"
hosts = [".company-b.example"]
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "company-b-mx1"
hosts = ["mx1.company-b.example"]
  [endpoint.outbound]
  validate_cert = true
`)
	v := now(p).Judge(&Facts{ClientAddr: netip.MustParseAddr("192.0.2.1"), ClientName: "mx1.company-b.example", Sender: ""})
	if !v.Refuse || v.Names() != "company-b" || v.Outcome() != OutcomeDefer {
		t.Errorf("verdict %+v (%s), want company-b to defer the plaintext session", v, v.Outcome())
	}
	// And outbound the outbound-only endpoint decides for its host.
	a, err := now(p).PostfixPolicy("mx1.company-b.example")
	if err != nil || !a.Found || a.Endpoint.Name != "company-b-mx1" {
		t.Errorf("outbound %+v %v", a, err)
	}
}

// On Sendmail, the tls_rcpt keys of a subdomain that an inbound-only
// endpoint lists are answered by the outbound endpoint that covers it.
func TestSendmailRcptNotShadowedByInboundOnly(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "company-b"
hosts = [".company-b.example"]
  [endpoint.outbound]
  validate_cert = true
  min_bits = 128
[[endpoint]]
name = "sub-in"
hosts = ["sub.company-b.example"]
  [endpoint.inbound]
  encryption = true
`)
	for _, k := range []string{"tls_rcpt:u@sub.company-b.example", "tls_rcpt:sub.company-b.example", "tls_srv:sub.company-b.example"} {
		a, err := now(p).SendmailAccess(k)
		if err != nil || !a.Found || a.Text != "TEMP+VERIFY:128" || a.Endpoint.Name != "company-b" {
			t.Errorf("%s: %+v %v, want company-b's TEMP+VERIFY:128", k, a, err)
		}
	}
	w := now(p).SendmailRcptWalk("u@sub.company-b.example")
	if s, ok := w.Effective(); !ok || s.Answer.Text != "TEMP+VERIFY:128" {
		t.Errorf("walk %+v", w)
	}
}

// A nested endpoint that demands less than the one it is nested in, in a
// direction both define, is refused at its host's line, with what it
// lacks and both ways out; in a direction only one defines it is not.
func TestNestedWeakerRefused(t *testing.T) {
	const head = `mta = "sendmail"
[[endpoint]]
name = "company-b"
hosts = [".company-b.example", "198.51.100.0/24"]
  [endpoint.inbound]
  validate_cert = true
  [endpoint.outbound]
  validate_cert = true
  min_bits = 128
`
	for _, tc := range []struct {
		name, tail string
		want       []string // "" = loads
	}{
		{"stricter", `[[endpoint]]
name = "mx1"
hosts = ["mx1.company-b.example"]
  [endpoint.outbound]
  min_bits = 256
  cn = "mx1.company-b.example"
`, nil},
		{"other direction only", `[[endpoint]]
name = "mx1"
hosts = ["mx1.company-b.example"]
  [endpoint.outbound]
  validate_cert = true
  min_bits = 128
  [endpoint.inbound]
  validate_cert = true
  issuer_cn = "Partner CA"
`, nil},
		{"weaker outbound", `[[endpoint]]
name = "mx1"
hosts = ["a.example", "mx1.company-b.example"]
  [endpoint.outbound]
  encryption = true
`, []string{`t.toml:12: endpoint "mx1" is nested in endpoint "company-b" (line 2) for outbound: ".company-b.example" there covers its "mx1.company-b.example", so "mx1" decides for those hosts, but it demands less than "company-b": it lacks min_bits = 128 (it has 0), validate_cert = true.`,
			`exception_to = "company-b", reason = "...", expires = 2027-01-31`}},
		{"monitor", `[[endpoint]]
name = "sub"
hosts = [".sub.company-b.example"]
mode = "monitor"
  [endpoint.inbound]
  validate_cert = true
`, []string{`t.toml:12: endpoint "sub" is nested in endpoint "company-b" (line 2) for inbound: ".company-b.example" there covers its ".sub.company-b.example"`, `it lacks mode = "enforce"`}},
		{"range in range", `[[endpoint]]
name = "net"
hosts = ["198.51.100.128/25"]
  [endpoint.inbound]
  encryption = true
`, []string{`t.toml:12: endpoint "net" is nested in endpoint "company-b" (line 2) for inbound: "198.51.100.0/24" there covers its "198.51.100.128/25"`, "it lacks request_cert = true, validate_cert = true"}},
		{"pins are no validation", `[[endpoint]]
name = "pin"
hosts = ["198.51.100.7"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"]
`, []string{`it lacks validate_cert = true`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(head+tc.tail))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// The exception declarations that are refused, each at its line.
func TestExceptionErrors(t *testing.T) {
	const head = `mta = "sendmail"
[[endpoint]]
name = "company-b"
hosts = [".company-b.example"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name = "company-c"
hosts = [".company-c.example"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name = "labs"
hosts = ["labs.company-b.example"]
`
	const weak = "  [endpoint.outbound]\n  encryption = true\n"
	for _, tc := range []struct {
		name, keys, table, want string
	}{
		{"unknown name", "exception_to = \"compnay-b\"\nreason = \"r\"\nexpires = 2027-01-31\n", weak,
			`t.toml:15: endpoint "labs": exception_to = "compnay-b" names no endpoint (did you mean "company-b"?)`},
		{"itself", "exception_to = \"labs\"\nreason = \"r\"\nexpires = 2027-01-31\n", weak,
			`t.toml:15: endpoint "labs": exception_to names the endpoint itself`},
		{"does not cover it", "exception_to = \"company-c\"\nreason = \"r\"\nexpires = 2027-01-31\n", weak,
			`t.toml:15: endpoint "labs" is an exception to "company-c", but "company-c" covers none of its hosts`},
		{"not weaker", "exception_to = \"company-b\"\nreason = \"r\"\nexpires = 2027-01-31\n", "  [endpoint.outbound]\n  validate_cert = true\n  min_bits = 128\n",
			`t.toml:15: endpoint "labs" is an exception to "company-b" but demands at least as much wherever "company-b" covers it: it relaxes nothing`},
		{"no reason", "exception_to = \"company-b\"\nexpires = 2027-01-31\n", weak,
			`t.toml:15: endpoint "labs" is an exception but has no reason`},
		{"empty reason", "exception_to = \"company-b\"\nreason = \" \"\nexpires = 2027-01-31\n", weak,
			`t.toml:16: endpoint "labs": reason is empty`},
		{"no expiry", "exception_to = \"company-b\"\nreason = \"r\"\n", weak,
			`t.toml:15: endpoint "labs" is an exception but has no expiry: add expires = 2027-01-31`},
		{"local date-time", "exception_to = \"company-b\"\nreason = \"r\"\nexpires = 2027-01-31T12:00:00\n", weak,
			`t.toml:17: endpoint "labs": expires = 2027-01-31T12:00:00 has no date or no offset`},
		{"a string", "exception_to = \"company-b\"\nreason = \"r\"\nexpires = \"2027-01-31\"\n", weak,
			`t.toml:17: endpoint.expires: want a date (2027-01-31) or a date and time with its offset (2027-01-31T12:00:00+01:00), got a string (write the date without quotes)`},
		{"reason alone", "reason = \"r\"\n", weak,
			`t.toml:15: endpoint "labs": reason and expires belong to an exception`},
		{"empty name", "exception_to = \"\"\nreason = \"r\"\nexpires = 2027-01-31\n", weak,
			`t.toml:15: endpoint "labs": exception_to is empty`},
		{"host it does not cover", "exception_to = \"company-b\"\nreason = \"r\"\nexpires = 2027-01-31\n", weak,
			`endpoint "labs" relaxes "company-b" for outbound until 2027-01-31; from then on "company-b"'s rules apply to its hosts, but "company-b" does not cover "other.example": put it in an endpoint of its own`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := head + tc.keys + tc.table
			if tc.name == "host it does not cover" {
				src = strings.Replace(src, `hosts = ["labs.company-b.example"]`, `hosts = ["labs.company-b.example", "other.example"]`, 1)
			}
			_, err := Parse("t.toml", []byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant %s", err, tc.want)
			}
		})
	}
	// An exception relaxes only the endpoint it names: weaker than two
	// nested endpoints, it must name... one, and is refused for the other.
	_, err := Parse("t.toml", []byte(`mta = "sendmail"
[[endpoint]]
name = "all"
hosts = [".example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name = "company-b"
hosts = [".company-b.example"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name = "labs"
hosts = ["labs.company-b.example"]
mode = "monitor"
exception_to = "company-b"
reason = "r"
expires = 2027-01-31
  [endpoint.outbound]
  encryption = true
`))
	if err == nil || !strings.Contains(err.Error(), `endpoint "labs" is nested in endpoint "all" (line 2) for outbound`) || !strings.Contains(err.Error(), `(its exception_to names "company-b"; an exception relaxes only the endpoint it names)`) {
		t.Errorf("got %v", err)
	}
}

// The worked example: company-b-labs relaxes company-b until 2027-01-31.
// Before that day its own rules apply and the decisions say so; from
// that day on (00:00 in the caller's zone) company-b's rules apply, with
// the same loaded policy.
func TestExceptionExpires(t *testing.T) {
	p, err := Load(filepath.Join("testdata", "good", "precedence.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Exceptions()) != 1 {
		t.Fatalf("exceptions %v", p.Exceptions())
	}
	x := p.Exceptions()[0]
	if x.Endpoint.Name != "company-b-labs" || x.To.Name != "company-b" || x.Expires() != "2027-01-31" || !x.Relaxes(Inbound) || !x.Relaxes(Outbound) || x.Line != 35 {
		t.Fatalf("exception %+v", x)
	}
	berlin := time.FixedZone("CET", 3600)
	before := time.Date(2027, 1, 30, 23, 59, 59, 0, berlin)
	after := time.Date(2027, 1, 31, 0, 0, 0, 0, berlin)
	if x.Expired(before) || !x.Expired(after) {
		t.Errorf("expired at %v: %v, at %v: %v", before, x.Expired(before), after, x.Expired(after))
	}
	// A local date ends at midnight where the caller is: 23:30 UTC on
	// the 30th is already the 31st in Berlin, not in New York.
	utc := time.Date(2027, 1, 30, 23, 30, 0, 0, time.UTC)
	if !x.Expired(utc.In(berlin)) || x.Expired(utc.In(time.FixedZone("EST", -5*3600))) {
		t.Error("a local date does not end at local midnight")
	}
	if got := x.ExpiresAt(berlin); !got.Equal(after) {
		t.Errorf("ExpiresAt = %v", got)
	}

	for _, tc := range []struct {
		at      time.Time
		outText string
		outEP   string
		outcome Outcome
		exc     bool
	}{
		{before, "encrypt", "company-b-labs", OutcomeException, true},
		{after, "verify match=hostname ciphers=high", "company-b", OutcomeDefer, false},
	} {
		v := p.At(tc.at)
		for _, key := range []string{"labs.company-b.example", "mx.labs.company-b.example", "[198.51.100.70]"} {
			a, err := v.PostfixPolicy(key)
			if err != nil || a.Text != tc.outText || a.Endpoint.Name != tc.outEP || (a.Exception != nil) != tc.exc {
				t.Errorf("%v %s: %+v %v, want %q from %s", tc.at, key, a, err, tc.outText, tc.outEP)
			}
		}
		// A client of the subsidiary with TLS but without a certificate.
		f := &Facts{ClientAddr: netip.MustParseAddr("198.51.100.70"), TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyNone}
		vd := v.Judge(f)
		if vd.Outcome() != tc.outcome || (vd.ExceptionNames() == "company-b-labs") != tc.exc {
			t.Errorf("%v: verdict %+v outcome %s, want %s", tc.at, vd, vd.Outcome(), tc.outcome)
		}
		// The subsidiary's client that meets company-b's rules passes
		// either way; the decision names the exception while it runs.
		f.Verify, f.SubjectCN, f.IssuerCN = VerifyTrusted, "mx.labs.company-b.example", "Partner CA"
		vd = v.Judge(f)
		if vd.Outcome() != OutcomePass || (vd.ExceptionNames() != "") != tc.exc {
			t.Errorf("%v: good client: %+v", tc.at, vd)
		}
	}
	// company-b's own hosts never see the exception.
	a, _ := p.At(before).PostfixPolicy("company-b.example")
	if a.Endpoint.Name != "company-b" || a.Exception != nil {
		t.Errorf("company-b.example: %+v", a)
	}
}

// An exception written as a date and time with an offset ends at that
// instant wherever the caller is; one that relaxes only outbound keeps
// its inbound rules after it ends.
func TestExceptionInstantAndOneDirection(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "company-b"
hosts = [".company-b.example"]
  [endpoint.inbound]
  encryption = true
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name = "labs"
hosts = ["labs.company-b.example"]
exception_to = "company-b"
reason = "new MX"
expires = 2027-01-31T12:00:00+01:00
  [endpoint.inbound]
  validate_cert = true
  [endpoint.outbound]
  encryption = true
`)
	x := p.Exceptions()[0]
	if x.Relaxes(Inbound) || !x.Relaxes(Outbound) || x.Expires() != "2027-01-31T12:00:00+01:00" {
		t.Fatalf("%+v", x)
	}
	end := time.Date(2027, 1, 31, 11, 0, 0, 0, time.UTC)
	for _, loc := range []*time.Location{time.UTC, time.FixedZone("X", -9*3600)} {
		if x.Expired(end.Add(-time.Second).In(loc)) || !x.Expired(end.In(loc)) {
			t.Errorf("instant expiry in %v", loc)
		}
	}
	v := p.At(end)
	a, _ := v.SendmailAccess("tls_rcpt:u@labs.company-b.example")
	if a.Text != "TEMP+VERIFY" || a.Endpoint.Name != "company-b" {
		t.Errorf("outbound after the end: %+v", a)
	}
	vd := v.Judge(&Facts{ClientName: "labs.company-b.example", TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyNone})
	if vd.Names() != "labs" || !vd.Refuse || vd.ExceptionNames() != "" {
		t.Errorf("inbound after the end: labs still applies there: %+v", vd)
	}
}

// Warnings: what load found, exceptions ending within 14 days, and ended
// ones, each at its line.
func TestWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.toml")
	data, err := os.ReadFile(filepath.Join("testdata", "good", "precedence.toml"))
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, []byte(`
[[endpoint]]
name  = "mixed"
hosts = ["mixed.example", "192.0.2.25", "192.0.2.128/25"]
  [endpoint.outbound]
  encryption = true
`)...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// The ranges of the example's endpoints and those of "mixed" match
	// only [address] next hops on Postfix.
	static := []string{
		path + `:11: warning: endpoint "company-b" outbound: Postfix looks up its TLS policy with the next-hop domain, never with the MX host's address, so for outbound mail its addresses and ranges ("198.51.100.0/24") match only next hops written as an address`,
		path + `:32: warning: endpoint "company-b-labs" outbound:`,
		path + `:51: warning: endpoint "mixed" outbound: Postfix looks up its TLS policy with the next-hop domain, never with the MX host's address, so for outbound mail its addresses and ranges ("192.0.2.25", "192.0.2.128/25") match only next hops written as an address ([203.0.113.25] in transport or relayhost); for mail routed by MX the names in hosts decide`,
	}
	for _, tc := range []struct {
		at   time.Time
		want []string
	}{
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), static},
		{time.Date(2027, 1, 16, 23, 0, 0, 0, time.UTC), static},
		{time.Date(2027, 1, 20, 0, 0, 0, 0, time.UTC), append(static, path+`:35: warning: the exception of endpoint "company-b-labs" to "company-b" ends on 2027-01-31 (in 11 days): from then on, inbound and outbound, "company-b"'s rules apply to its hosts (CHG-4711: their new MX gets a certificate by January)`)},
		{time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), append(static, path+`:35: warning: the exception of endpoint "company-b-labs" to "company-b" ended on 2027-01-31: inbound and outbound, "company-b"'s rules apply to its hosts again`)},
	} {
		ws := p.Warnings(tc.at)
		if len(ws) != len(tc.want) {
			t.Errorf("%v: %d warnings, want %d: %v", tc.at, len(ws), len(tc.want), ws)
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(ws[i].Error(), w) {
				t.Errorf("%v: warning %d\n got %s\nwant %s", tc.at, i, ws[i], w)
			}
		}
	}
}

// A host may belong to one endpoint per direction: two endpoints may
// share it if they define different directions; one that takes it in
// both directions is reported once.
func TestHostPerDirection(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "b-in"
hosts = ["b.example"]
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "b-out"
hosts = ["b.example"]
  [endpoint.outbound]
  validate_cert = true
`)
	a, _ := now(p).SendmailAccess("tls_rcpt:u@b.example")
	v := now(p).Judge(&Facts{Sender: "u@b.example"})
	if a.Endpoint.Name != "b-out" || v.Names() != "b-in" {
		t.Errorf("outbound %+v, inbound %+v", a, v)
	}
	_, err := Parse("t.toml", []byte(`mta = "sendmail"
[[endpoint]]
name = "a"
hosts = ["b.example"]
  [endpoint.inbound]
  encryption = true
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name = "b"
hosts = ["b.example"]
  [endpoint.inbound]
  encryption = true
  [endpoint.outbound]
  encryption = true
`))
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), `t.toml:11: host "b.example" of endpoint "b" is already listed by endpoint "a" for inbound and outbound`) {
		t.Errorf("%v", err)
	}
}
