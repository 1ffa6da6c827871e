package policy

import (
	"strings"
	"testing"
)

const nexthopConf = `mta = "postfix"
[[endpoint]]
name = "isp"
hosts = ["mail.isp.example", "192.0.2.25", "2001:db8::25"]
  [endpoint.outbound]
  cn = "mail.isp.example"
[[endpoint]]
name = "company-b"
hosts = ["company-b.example", ".company-b.example"]
  [endpoint.outbound]
  validate_cert = true
`

// TestPostfixNexthopForms: every next-hop form Postfix can send is read
// (src/util/host_port.c, src/smtp/smtp_connect.c), service names included,
// as in Postfix's own SASL_README (relayhost = [mail.isp.example]:submission).
func TestPostfixNexthopForms(t *testing.T) {
	p := mustParse(t, nexthopConf)
	const isp, b = "secure match=mail.isp.example", "verify match=hostname"
	for _, tc := range []struct{ key, want string }{
		{"[mail.isp.example]:submission", isp},
		{"[mail.isp.example]:Submission", isp},
		{"[mail.isp.example]:submissions", isp},
		{"[mail.isp.example]:587", isp},
		{"[mail.isp.example]:", isp},
		{"[MAIL.ISP.EXAMPLE]", isp},
		{"mail.isp.example:smtp", isp},
		{"mail.isp.example:", isp},
		{"mail.isp.example:25", isp},
		{"[192.0.2.25]:smtp", isp},
		{"192.0.2.25:submission", isp},
		{"192.0.2.25", isp},
		{"[IPv6:2001:db8::25]:587", isp},
		{"[ipv6:2001:DB8:0:0:0:0:0:25]:lmtp", isp},
		{"[2001:db8::25]", isp},
		{"company-b.example", b},
		{"sub.company-b.example:2525", b},
		{"[mx.sub.company-b.example]:x-my-service", b},
		{".company-b.example", b},
		{"/var/spool/postfix/private/dovecot-lmtp", ""}, // LMTP over a unix socket: the path is the key
		{"[other.example]:submission", ""},
	} {
		a, err := now(p).PostfixPolicy(tc.key)
		if err != nil || a.Text != tc.want {
			t.Errorf("PostfixPolicy(%q) = %q, %v; want %q", tc.key, a.Text, err, tc.want)
		}
	}
}

// TestPostfixWalk: the keys Postfix asks, in order, and where it stops.
func TestPostfixWalk(t *testing.T) {
	p := mustParse(t, nexthopConf+`[[endpoint]]
name = "deep"
hosts = [".x.y.example"]
  [endpoint.outbound]
  encryption = true
`)
	for _, tc := range []struct {
		nexthop string
		keys    []string
		want    string // the effective answer, "" = the MTA default
	}{
		{"a.b.x.y.example", []string{"a.b.x.y.example"}, "encrypt"},
		{"mx.other.example", []string{"mx.other.example", ".other.example", ".example"}, ""},
		{"[mx.other.example]:587", []string{"[mx.other.example]:587"}, ""},
		{"other.example.", []string{"other.example."}, ""},             // not a valid host name for Postfix: no parents
		{"192.0.2.99", []string{"192.0.2.99"}, ""},                     // numeric: no parents
		{"bücher.example", []string{"bücher.example", ".example"}, ""}, // SMTPUTF8
		{"[mail.isp.example]:submission", []string{"[mail.isp.example]:submission"}, "secure match=mail.isp.example"},
		{"[broken", []string{"[broken"}, "TEMP"},
	} {
		w := now(p).PostfixWalk(tc.nexthop)
		var keys []string
		for _, s := range w.Steps {
			keys = append(keys, s.Key)
		}
		if strings.Join(keys, " ") != strings.Join(tc.keys, " ") {
			t.Errorf("%s: keys %q, want %q", tc.nexthop, keys, tc.keys)
		}
		got := ""
		if s, ok := w.Effective(); ok {
			got = s.Answer.Text
			if s.Err != nil {
				got = "TEMP"
			}
		}
		if got != tc.want {
			t.Errorf("%s: in effect %q, want %q", tc.nexthop, got, tc.want)
		}
	}
}

// TestPostfixOutboundAddresses: on Postfix an outbound endpoint of
// addresses and ranges only is refused with the reason and the
// alternative; one that mixes them with names loads with a warning that
// names them. Inbound, and on Sendmail, addresses are fine.
func TestPostfixOutboundAddresses(t *testing.T) {
	conf := func(mta, hosts, table string) string {
		return "mta = \"" + mta + "\"\n[[endpoint]]\nname = \"b\"\nhosts = " + hosts + "\n  [endpoint." + table + "]\n  encryption = true\n"
	}
	_, err := Parse("t.toml", []byte(conf("postfix", `["203.0.113.25", "203.0.113.0/28"]`, "outbound")))
	if err == nil || !strings.Contains(err.Error(), `t.toml:4: endpoint "b" outbound: Postfix looks up its TLS policy with the next-hop domain (example.com, [mx.example.com]), never with the MX host's address, so hosts that are only addresses and ranges ("203.0.113.25", "203.0.113.0/28") would apply to no mail routed by MX`) ||
		!strings.Contains(err.Error(), "list the partner's domain (and .domain) or its MX host names in hosts") {
		t.Errorf("addresses only: %v", err)
	}
	p := mustParse(t, conf("postfix", `["b.example", "203.0.113.25"]`, "outbound"))
	if ws := p.Warnings(testNow); len(ws) != 1 || !strings.Contains(ws[0].Error(), `t.toml:4: warning: endpoint "b" outbound:`) || !strings.Contains(ws[0].Error(), `("203.0.113.25")`) {
		t.Errorf("mixed: warnings %v", ws)
	}
	for _, c := range []string{conf("postfix", `["203.0.113.25"]`, "inbound"), conf("sendmail", `["203.0.113.25"]`, "outbound")} {
		if p := mustParse(t, c); len(p.Warnings(testNow)) != 0 {
			t.Errorf("%s: warnings %v", c, p.Warnings(testNow))
		}
	}
}

// TestPostfixSingleLabelCN: match= reads hostname, nexthop and
// dot-nexthop as keywords; no single label is a certificate name there.
func TestPostfixSingleLabelCN(t *testing.T) {
	for _, cn := range []string{"hostname", "nexthop", "dot-nexthop", "mailhost"} {
		_, err := Parse("t.toml", []byte("mta = \"postfix\"\n[[endpoint]]\nname = \"b\"\nhosts = [\"b.example\"]\n  [endpoint.outbound]\n  cn = \""+cn+"\"\n"))
		if err == nil || !strings.Contains(err.Error(), `t.toml:6: endpoint "b" outbound: cn = "`+cn+`" is a single label, which Postfix's match= does not read as a name: hostname, nexthop and dot-nexthop are keywords there`) {
			t.Errorf("cn = %q: %v", cn, err)
		}
	}
	// Sendmail compares the CN as a string, and inbound is the milter's.
	mustParse(t, "mta = \"sendmail\"\n[[endpoint]]\nname = \"b\"\nhosts = [\"b.example\"]\n  [endpoint.outbound]\n  cn = \"mailhost\"\n")
	mustParse(t, "mta = \"postfix\"\n[[endpoint]]\nname = \"b\"\nhosts = [\"b.example\"]\n  [endpoint.inbound]\n  cn = \"mailhost\"\n")
}

// TestNumericNames: a name of digits and dots is no host name (it would
// match Sendmail's shortened networks).
func TestNumericNames(t *testing.T) {
	for _, h := range []string{"192.0.2", ".192.0", "10"} {
		if _, err := ParsePattern(h); err == nil || !strings.Contains(err.Error(), "range") {
			t.Errorf("ParsePattern(%q): %v", h, err)
		}
	}
	if _, err := ParsePattern("1.example"); err != nil {
		t.Error(err)
	}
}
