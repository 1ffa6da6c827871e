package policy

import (
	"net/netip"
	"testing"
)

// Sendmail's srv_features ruleset walks srv_features:{client_name} and its
// parent domains, srv_features:{client_addr} and its shorter nets, then
// the bare tag, stopping at the first key found; a lower-case "v" sets
// SRV_VRFY_CLT (request a client certificate), "V" clears it (srvrsmtp.c
// srvfeatures()). Sendmail asks every client unless told "V".
const srvFeaturesConf = `mta = "sendmail"
[[endpoint]]
name = "ask"
hosts = ["ask.example", "192.0.2.1"]
  [endpoint.inbound]
  request_cert = true
[[endpoint]]
name = "valid"
hosts = [".valid.example"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "cn"
hosts = ["cn.example"]
  [endpoint.inbound]
  cn = "mx.cn.example"
[[endpoint]]
name = "dn"
hosts = ["dn.example"]
  [endpoint.inbound]
  subject_dn = "CN=mx.dn.example, O=DN, C=DE"
[[endpoint]]
name = "issuer"
hosts = ["issuer.example"]
  [endpoint.inbound]
  issuer_cn = "Partner CA"
[[endpoint]]
name = "pin"
hosts = ["2001:db8::7"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"]
[[endpoint]]
name = "watch"
hosts = ["watch.example"]
mode = "monitor"
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "enc-in"
hosts = ["enc.example", "198.51.100.0/24"]
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "out-only"
hosts = ["out.example"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name = "net-ask"
hosts = ["203.0.113.0/24"]
  [endpoint.inbound]
  request_cert = true
`

func TestSrvFeatures(t *testing.T) {
	p := mustParse(t, srvFeaturesConf)
	tests := []struct {
		key, want, endpoint string // want "" = NOTFOUND
	}{
		{"srv_features:ask.example", "v", "ask"},
		{"srv_features:192.0.2.1", "v", "ask"},
		{"srv_features:[192.0.2.1]", "v", "ask"},
		{"srv_features:mx.valid.example", "v", "valid"}, // validate_cert asks
		{"srv_features:cn.example", "v", "cn"},          // cn implies validate_cert
		{"srv_features:dn.example", "v", "dn"},          // subject_dn too
		{"srv_features:issuer.example", "v", "issuer"},  // issuer_cn too
		{"srv_features:2001:db8::7", "v", "pin"},        // fingerprints ask
		{"srv_features:[ipv6:2001:db8::7]", "v", "pin"}, // Sendmail's literal form
		{"srv_features:watch.example", "v", "watch"},    // monitor mode still asks
		{"srv_features:203.0.113.9", "v", "net-ask"},    // range
		{"srv_features:enc.example", "", ""},            // covered, asks for no certificate
		{"srv_features:198.51.100.4", "", ""},           // same by address
		{"srv_features:out.example", "", ""},            // outbound requirements only
		{"srv_features:valid.example", "", ""},          // .valid.example is below only
		{"srv_features:other.example", "", ""},          // uncovered: the walk goes on
		{"srv_features:203.0.113", "", ""},              // Sendmail's shortened net
		{"srv_features:", "", ""},                       // exact names may be sender domains: Sendmail asks everyone
		{"SRV_FEATURES:", "", ""},                       // tag in any case
		{"tls_clt:", "", ""},                            // not ours
		{"srv_features:not a name", "", ""},             // garbage is not found
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			a, err := now(p).SendmailAccess(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if a.Found != (tc.want != "") || a.Text != tc.want {
				t.Fatalf("SendmailAccess(%q) = %v %q, want %q", tc.key, a.Found, a.Text, tc.want)
			}
			name := ""
			if a.Endpoint != nil {
				name = a.Endpoint.Name
			}
			if name != tc.endpoint {
				t.Errorf("SendmailAccess(%q) endpoint %q, want %q", tc.key, name, tc.endpoint)
			}
		})
	}
}

// A client whose name is covered by an endpoint that asks for no
// certificate but whose address is covered by one that does is asked:
// Sendmail tries the address after the name was not found. A client that
// only the bare key matches is not asked, unless an endpoint that needs a
// certificate lists an exact name (possibly a sender domain).
func TestSrvFeaturesWalk(t *testing.T) {
	p := mustParse(t, srvFeaturesConf)
	walk := func(p *Policy, keys ...string) string {
		for _, k := range keys {
			if a, _ := now(p).SendmailAccess(k); a.Found {
				return a.Text
			}
		}
		return "(Sendmail default: ask)"
	}
	tests := []struct {
		name string
		keys []string
		want string
	}{
		{"name asks", []string{"srv_features:ask.example", "srv_features:example", "srv_features:192.0.2.1", "srv_features:192.0.2", "srv_features:"}, "v"},
		{"name does not ask, address does", []string{"srv_features:enc.example", "srv_features:example", "srv_features:203.0.113.5", "srv_features:203.0.113", "srv_features:203.0", "srv_features:203", "srv_features:"}, "v"},
		// ask.example, cn.example, ... may be sender domains, known only
		// after STARTTLS: every client is asked, as Sendmail does by default.
		{"covered without certificate", []string{"srv_features:enc.example", "srv_features:example", "srv_features:198.51.100.4", "srv_features:198.51.100", "srv_features:198.51", "srv_features:198", "srv_features:"}, "(Sendmail default: ask)"},
		{"uncovered", []string{"srv_features:localhost", "srv_features:127.0.0.1", "srv_features:127.0.0", "srv_features:127.0", "srv_features:127", "srv_features:"}, "(Sendmail default: ask)"},
	}
	for _, tc := range tests {
		if got := walk(p, tc.keys...); got != tc.want {
			t.Errorf("%s: Sendmail gets %q, want %q", tc.name, got, tc.want)
		}
	}

	// Endpoints that need a certificate and list only addresses and
	// ranges: only their clients are asked. (A .domain pattern, like an
	// exact name, may match only the sender's domain: see
	// TestSrvFeaturesSubdomainSender.)
	q := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "valid"
hosts = ["198.51.100.0/24", "192.0.2.0/24"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "enc-in"
hosts = ["enc.example"]
  [endpoint.inbound]
  encryption = true
`)
	for _, tc := range []struct {
		name string
		keys []string
		want string
	}{
		{"by name", []string{"srv_features:mx.valid.example", "srv_features:valid.example", "srv_features:example", "srv_features:198.51.100.4", "srv_features:"}, "v"}, // by its address
		{"by address", []string{"srv_features:[192.0.2.9]", "srv_features:192.0.2.9", "srv_features:"}, "v"},
		{"covered without certificate", []string{"srv_features:enc.example", "srv_features:example", "srv_features:203.0.113.1", "srv_features:"}, "V"},
		{"uncovered", []string{"srv_features:localhost", "srv_features:127.0.0.1", "srv_features:127.0.0", "srv_features:127.0", "srv_features:127", "srv_features:"}, "V"},
	} {
		if got := walk(q, tc.keys...); got != tc.want {
			t.Errorf("addresses only, %s: Sendmail gets %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestSrvFeaturesSubdomainSender: an endpoint that needs a certificate and
// covers sender domains through a .domain pattern makes Sendmail ask
// every client, since any client may send as user@x.valid.example and
// the sender is known only after STARTTLS.
func TestSrvFeaturesSubdomainSender(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "valid"
hosts = [".valid.example"]
  [endpoint.inbound]
  validate_cert = true
`)
	if !p.AsksEveryClient() {
		t.Error("AsksEveryClient() = false")
	}
	a, err := now(p).SendmailAccess("srv_features:")
	if err != nil || a.Found {
		t.Errorf("srv_features: = %+v, %v; want not found (Sendmail asks every client)", a, err)
	}
	w := now(p).SrvFeaturesWalk("mx.other.example", netip.MustParseAddr("203.0.113.9"))
	if _, ok := w.Effective(); ok {
		t.Errorf("a client from anywhere gets %+v; want Sendmail's default (ask)", w)
	}
}
