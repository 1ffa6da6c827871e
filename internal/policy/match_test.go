package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/certid"
)

const matchConf = `mta = "postfix"
[certs]
ca_store = "/etc/tlsgate/ca"
trust_anchor_dir = "/etc/tlsgate/ta"
[[endpoint]]
name = "exact"
hosts = ["example.com", "192.0.2.10"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name = "v6host"
hosts = ["v6.example", "2001:db8::1"]
  [endpoint.outbound]
  cn = "mx.v6.example"
  min_bits = 128
[[endpoint]]
name = "subs"
hosts = [".example.com", "198.51.100.0/24", "2001:db8::/32"]
  [endpoint.outbound]
  validate_cert = true
  min_bits = 128
[[endpoint]]
name = "deeper"
hosts = [".b.example.com", "198.51.100.128/25", "mx.a.example.com", "BÜCHER.example."]
  [endpoint.outbound]
  cn = "mx.deeper.example"
  min_bits = 128
[[endpoint]]
name = "pinned"
hosts = ["pin.example"]
  [endpoint.outbound]
  validate_cert = false
  fingerprints = ["000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                  "sha256:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff"]
[[endpoint]]
name = "issuer"
hosts = ["issuer.example"]
  [endpoint.outbound]
  issuer_cn = "Partner CA"
  cn = "mx.issuer.example"
[[endpoint]]
name = "watch"
hosts = ["watch.example"]
mode = "monitor"
  [endpoint.outbound]
  encryption = true
`

func TestPostfixKeys(t *testing.T) {
	p := mustParse(t, matchConf)
	const (
		exact  = "encrypt"
		subs   = "verify match=hostname ciphers=high"
		deeper = "secure match=mx.deeper.example ciphers=high"
		v6host = "secure match=mx.v6.example ciphers=high"
	)
	tests := []struct {
		key, want string // want "" = not found
	}{
		{"example.com", exact},
		{"EXAMPLE.COM", exact},
		{"example.com.", exact},
		{"a.example.com", subs},
		{".example.com", subs},             // Postfix's parent walk
		{".com", ""},                       // nothing covers all of .com
		{"x.b.example.com", deeper},        // longer suffix wins
		{".b.example.com", deeper},         // parent key for below b.example.com
		{"b.example.com", subs},            // .b.example.com does not cover b.example.com itself
		{"mx.a.example.com", deeper},       // exact name beats suffix
		{"[mx.a.example.com]", deeper},     // bracketed
		{"[mx.a.example.com]:587", deeper}, // bracketed with port
		{"mx.a.example.com:2525", deeper},  // host:port
		{"[Example.COM]:25", exact},        // mixed case
		{"[192.0.2.10]", exact},            // address literal
		{"[192.0.2.10]:10026", exact},      // with port
		{"192.0.2.10:25", exact},           // unbracketed
		{"[192.0.2.11]", ""},               // not covered
		{"[198.51.100.7]", subs},           // CIDR
		{"[198.51.100.200]", deeper},       // longer prefix wins
		{"[IPv6:2001:db8::1]", v6host},     // exact v6 over the range
		{"[ipv6:2001:DB8::2]:25", subs},    // v6 in range, any case
		{"[IPv6:2001:db9::1]", ""},         // outside
		{"[::ffff:192.0.2.10]", exact},     // v4-mapped
		{"xn--bcher-kva.example", deeper},  // IDN stored as A-label
		{"bücher.example", deeper},         // U-label key (SMTPUTF8)
		{"pin.example", "fingerprint match=00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F match=FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF"},
		{"issuer.example", "secure match=mx.issuer.example tafile=/etc/tlsgate/ta/issuer.pem"},
		{"watch.example", ""}, // monitor: MTA default applies
		{"other.example", ""},
		{"localhost:10028", ""},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			a, err := now(p).PostfixPolicy(tc.key)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if a.Found != (tc.want != "") || a.Text != tc.want {
				t.Errorf("PostfixPolicy(%q) = %v %q, want %q", tc.key, a.Found, a.Text, tc.want)
			}
		})
	}
	a, _ := now(p).PostfixPolicy("watch.example")
	if a.Endpoint == nil || a.Endpoint.Name != "watch" {
		t.Errorf("monitor endpoint not reported: %+v", a)
	}
}

func TestPostfixBadKeys(t *testing.T) {
	p := mustParse(t, matchConf)
	// Only keys Postfix could not have parsed as a next hop ("port" in
	// example.com:port is a service name: see TestPostfixNexthopForms).
	for _, k := range []string{"", "[example.com", "[example.com]x", "example.com:0", "exa mple.com", "[192.0.2.10]:99999", "..", "[]", ":25", "[IPv6:example.com]", "example.com:25x"} {
		if _, err := now(p).PostfixPolicy(k); err == nil {
			t.Errorf("PostfixPolicy(%q): no error", k)
		}
	}
}

const sendmailConf = `mta = "sendmail"
[[endpoint]]
name = "b"
hosts = ["company-b.example", ".company-b.example", "127.0.0.1", "10.1.0.0/16"]
  [endpoint.inbound]
  request_cert = true
  encryption = true
  [endpoint.outbound]
  min_bits = 128
  cn = "sink.partner.test"
  subject_dn = "C=DE, O=Lab Test, CN=sink.partner.test"
  issuer_dn = "CN=Lab Test CA, O=Lab Test, C=DE"
[[endpoint]]
name = "enc"
hosts = ["enc.example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name = "bits"
hosts = ["bits.example"]
  [endpoint.outbound]
  encryption = true
  min_bits = 256
  validate_cert = true
  match_cn = true
`

func TestSendmailKeys(t *testing.T) {
	p := mustParse(t, sendmailConf)
	const b = "TEMP+VERIFY:128+CN:sink.partner.test++CS:/C=DE/O=Lab+20Test/CN=sink.partner.test++CI:/C=DE/O=Lab+20Test/CN=Lab+20Test+20CA"
	tests := []struct{ key, want string }{
		{"tls_rcpt:user@company-b.example", b},
		{"tls_rcpt:user@mx.company-b.example", b},
		{"tls_rcpt:user@", ""},
		{"tls_rcpt:company-b.example", ""}, // decided on the full address
		{"tls_rcpt:user@other.example", ""},
		{"tls_rcpt:u@enc.example", "TEMP+ENCR:40"},
		{"tls_rcpt:u@bits.example", "TEMP+VERIFY:256+CN"},
		{"tls_srv:[127.0.0.1]", b},
		{"tls_srv:127.0.0.1", b},
		{"tls_srv:[127.0.0]", ""},
		{"tls_srv:10.1.2.3", b},
		{"tls_srv:mx.company-b.example", b},
		{"tls_srv:", ""},
		{"srv_features:127.0.0.1", "v"},
		{"srv_features:localhost", ""},
		{"srv_features:enc.example", ""}, // no inbound cert request
		{"srv_features:", ""},            // b lists company-b.example, maybe a sender domain: Sendmail asks everyone
		{"tls_clt:127.0.0.1", ""},        // the milter enforces inbound
		{"connect:127.0.0.1", ""},
		{"from:a@company-b.example", ""},
		{"company-b.example", ""},
		{"", ""},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			a, err := now(p).Outbound(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if a.Found != (tc.want != "") || a.Text != tc.want {
				t.Errorf("Outbound(%q) = %v %q, want %q", tc.key, a.Found, a.Text, tc.want)
			}
		})
	}
}

func TestCoveringAndJudge(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "by-addr"
hosts = ["192.0.2.0/24"]
action = "reject"
  [endpoint.inbound]
  encryption = true
  min_bits = 256
[[endpoint]]
name = "by-name"
hosts = [".partner.example"]
  [endpoint.inbound]
  cn = "mx.partner.example"
  issuer_dn = "C=DE, O=Lab, CN=Lab CA"
  subject_dn = "CN=mx.partner.example, O=Partner, C=DE"
[[endpoint]]
name = "by-sender"
hosts = ["sender.example"]
mode = "monitor"
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "host-cn"
hosts = ["peer.example"]
  [endpoint.inbound]
  match_cn = true
[[endpoint]]
name = "pin"
hosts = ["pin.example"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"]
`)
	subj, _ := certid.ParseDN("/C=DE/O=Partner/CN=mx.partner.example")
	iss, _ := certid.ParseDN("/C=DE/O=Lab/CN=Lab CA")
	otherIss, _ := certid.ParseDN("/C=DE/O=Other/CN=Other CA")
	pin, _ := certid.ParseFingerprint("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	good := Facts{TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: VerifyTrusted,
		SubjectCN: "mx.partner.example", IssuerCN: "Lab CA", SubjectDN: subj, IssuerDN: iss}
	addr := netip.MustParseAddr
	tests := []struct {
		name      string
		f         Facts
		result    Result
		endpoints string
		checks    []Check
		refuse    bool
		action    Action
	}{
		{"uncovered", Facts{ClientAddr: addr("203.0.113.1"), ClientName: "x.other.example", Sender: "a@other.example"}, NotCovered, "", nil, false, ""},
		{"addr plaintext", Facts{ClientAddr: addr("192.0.2.5")}, Fail, "by-addr", []Check{CheckEncryption}, true, Reject},
		{"addr weak", Facts{ClientAddr: addr("192.0.2.5"), TLSVersion: "TLSv1.2", Bits: 128}, Fail, "by-addr", []Check{CheckMinBits}, true, Reject},
		{"addr ok", Facts{ClientAddr: addr("192.0.2.5"), TLSVersion: "TLSv1.3", Bits: 256}, Pass, "by-addr", nil, false, ""},
		{"name good", withName(good, "mx.partner.example"), Pass, "by-name", nil, false, ""},
		{"name unknown is not covered", withName(Facts{}, "unknown"), NotCovered, "", nil, false, ""},
		{"name no cert", withName(Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyNone}, "mx.partner.example"), Fail, "by-name", []Check{CheckCert}, true, Defer},
		{"name untrusted", withName(Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyUntrusted, SubjectCN: "mx.partner.example"}, "a.partner.example"), Fail, "by-name", []Check{CheckCert}, true, Defer},
		{"name wrong issuer", withIssuer(withName(good, "mx.partner.example"), otherIss), Fail, "by-name", []Check{CheckIssuerDN}, true, Defer},
		{"name wrong cn", withCN(withName(good, "mx.partner.example"), "evil.example"), Fail, "by-name", []Check{CheckCN}, true, Defer},
		{"addr and name both judged", withAddr(withName(good, "mx.partner.example"), "192.0.2.9"), Pass, "by-addr,by-name", nil, false, ""},
		{"strictest wins", withAddr(withName(Facts{TLSVersion: "TLSv1.2", Bits: 128}, "mx.partner.example"), "192.0.2.9"), Fail, "by-addr,by-name", []Check{CheckMinBits, CheckCert}, true, Reject},
		{"sender monitor", Facts{Sender: "someone@Sender.Example"}, Fail, "by-sender", []Check{CheckEncryption}, false, ""},
		{"host cn ok", withCN(withName(Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyTrusted}, "peer.example"), "PEER.example"), Pass, "host-cn", nil, false, ""},
		{"host cn mismatch", withCN(withName(Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyTrusted}, "peer.example"), "other.example"), Fail, "host-cn", []Check{CheckCN}, true, Defer},
		{"postfix unknown verify", withName(Facts{TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyUnknown}, "peer.example"), Fail, "host-cn", []Check{CheckCert}, true, Defer},
		{"pin ok", Facts{Sender: "x@pin.example", TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyUntrusted, Fingerprints: []Fingerprint{{9}, pin}, FingerprintsKnown: true}, Pass, "pin", nil, false, ""},
		{"pin wrong", Facts{Sender: "x@pin.example", TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyUntrusted, Fingerprints: []Fingerprint{{9}}, FingerprintsKnown: true}, Fail, "pin", []Check{CheckFingerprint}, true, Defer},
		{"pin unseen", Facts{Sender: "x@pin.example", TLSVersion: "TLSv1.3", Bits: 256}, Pass, "pin", nil, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := now(p).Judge(&tc.f)
			if v.Result != tc.result || v.Names() != tc.endpoints || v.Refuse != tc.refuse || (tc.refuse && v.Action != tc.action) {
				t.Fatalf("Judge = %v endpoints=%q refuse=%v action=%v (%s)", v.Result, v.Names(), v.Refuse, v.Action, v.Reason())
			}
			if len(v.Failures) != len(tc.checks) {
				t.Fatalf("failures %s, want %v", v.Reason(), tc.checks)
			}
			for i, c := range tc.checks {
				if v.Failures[i].Check != c {
					t.Errorf("failure %d = %s, want %s", i, v.Failures[i].Check, c)
				}
			}
		})
	}
	v := now(p).Judge(&Facts{Sender: "x@pin.example", TLSVersion: "TLSv1.3", Bits: 256})
	if len(v.Unchecked) != 1 || v.Unchecked[0].Check != CheckFingerprint {
		t.Errorf("unseen fingerprints should be listed as unchecked: %+v", v.Unchecked)
	}
}

func withName(f Facts, n string) Facts { f.ClientName = n; return f }
func withCN(f Facts, n string) Facts   { f.SubjectCN = n; return f }
func withIssuer(f Facts, d DN) Facts   { f.IssuerDN = d; return f }
func withAddr(f Facts, a string) Facts { f.ClientAddr = netip.MustParseAddr(a); return f }

func TestFullLengthPrefixIsAddress(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10/32":         "192.0.2.10",
		"2001:DB8::1/128":       "2001:db8::1",
		"::ffff:192.0.2.10/128": "192.0.2.10",
		"192.0.2.0/31":          "192.0.2.0/31",
		"2001:db8::/127":        "2001:db8::/127",
		"::ffff:192.0.2.10":     "192.0.2.10",
		"[2001:db8::1]":         "2001:db8::1",
		"::ffff:192.0.2.0/120":  "192.0.2.0/24",
		"0.0.0.0/32":            "0.0.0.0",
		"::/128":                "::",
		"255.255.255.255/32":    "255.255.255.255",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		p, err := ParsePattern(in)
		if err != nil {
			t.Errorf("ParsePattern(%q): %v", in, err)
			continue
		}
		if got := p.Canonical(); got != want {
			t.Errorf("ParsePattern(%q).Canonical() = %q, want %q", in, got, want)
		}
		if single := !strings.Contains(want, "/"); single != (p.Kind == PatternAddr) {
			t.Errorf("ParsePattern(%q).Kind = %v", in, p.Kind)
		}
	}
	// A /32 still matches its address when no bare address is listed.
	// (A name is listed too: on Postfix an outbound endpoint of addresses
	// only is refused, see TestPostfixOutboundAddresses.)
	p := mustParse(t, `mta = "postfix"
[[endpoint]]
name = "a"
hosts = ["a.example", "192.0.2.10/32", "2001:db8::1/128"]
  [endpoint.outbound]
  encryption = true
`)
	for _, key := range []string{"[192.0.2.10]", "[IPv6:2001:db8::1]", "192.0.2.10"} {
		if a, err := now(p).Outbound(key); err != nil || !a.Found {
			t.Errorf("Outbound(%q) = %+v, %v", key, a, err)
		}
	}
	if a, _ := now(p).Outbound("[192.0.2.11]"); a.Found {
		t.Errorf("192.0.2.11 matched a /32 of another address")
	}
}

// A cn is compared with the certificate's names, which carry
// internationalised host names as A-labels: both MTAs get the A-label
// form, as host patterns do. Sendmail's CN: compares the subject CN as a
// string, so a cn that is not a host name stays as written there;
// Postfix's match= takes host names only, so the compiler refuses it.
func TestCNAsALabels(t *testing.T) {
	for _, tc := range []struct {
		mta, cn, want string
	}{
		{"postfix", "MX.Bücher.example", "secure match=mx.xn--bcher-kva.example"},
		{"postfix", "mx.xn--bcher-kva.example", "secure match=mx.xn--bcher-kva.example"},
		{"postfix", "MX.Example.COM.", "secure match=mx.example.com"},
		{"postfix", "ＭＸ.example", "secure match=mx.example"}, // full-width, mapped as for lookups
		{"sendmail", "MX.Bücher.example", "TEMP+VERIFY+CN:mx.xn--bcher-kva.example"},
		{"sendmail", "mx.company-b.example", "TEMP+VERIFY+CN:mx.company-b.example"},
		{"sendmail", "Company B Gateway", "TEMP+VERIFY+CN:Company+20B+20Gateway"},
		{"sendmail", "Bücher Gateway", "TEMP+VERIFY+CN:B+C3+BCcher+20Gateway"},
	} {
		t.Run(tc.mta+"/"+tc.cn, func(t *testing.T) {
			p := mustParse(t, `mta = "`+tc.mta+`"
[[endpoint]]
name = "idn"
hosts = ["bücher.example"]
  [endpoint.outbound]
  cn = "`+tc.cn+`"
`)
			a, err := now(p).Outbound("xn--bcher-kva.example")
			if tc.mta == "sendmail" {
				a, err = now(p).Outbound("tls_rcpt:u@xn--bcher-kva.example")
			}
			if err != nil || !a.Found || a.Text != tc.want {
				t.Errorf("answer %v %q (%v), want %q", a.Found, a.Text, err, tc.want)
			}
		})
	}
	for _, cn := range []string{"Company B Gateway", "Bücher Gateway", "mx..example"} {
		_, err := Parse("t.toml", []byte(`mta = "postfix"
[[endpoint]]
name = "idn"
hosts = ["bücher.example"]
  [endpoint.outbound]
  cn = "`+cn+`"
`))
		if err == nil || !strings.Contains(err.Error(), "outbound.cn") && !strings.Contains(err.Error(), "is not one") {
			t.Errorf("postfix cn = %q: error %v, want a refusal of the cn", cn, err)
		}
	}
}

// ParseFingerprint is the one parser for pins in the policy file, for
// `tlsgate certs` and for the fingerprints the MTAs report: every form an
// administrator copies is accepted, and every refusal lists the forms.
func TestParseFingerprintForms(t *testing.T) {
	const (
		colons = "00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F"
		plain  = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
		b64    = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // the same 32 bytes
	)
	tests := []struct {
		name, in string
		kind     PinKind
		err      string // substring; "" = accepted
	}{
		{"postfix log", colons, PinCertOrKey, ""},
		{"lower case colons", strings.ToLower(colons), PinCertOrKey, ""},
		{"plain hex", plain, PinCertOrKey, ""},
		{"plain upper", strings.ToUpper(plain), PinCertOrKey, ""},
		{"sha256: prefix", "sha256:" + colons, PinCertOrKey, ""},
		{"SHA256: prefix", "SHA256:" + plain, PinCertOrKey, ""},
		{"sha256= prefix", "sha256=" + plain, PinCertOrKey, ""},
		{"openssl 3", "sha256 Fingerprint=" + colons, PinCertOrKey, ""},
		{"openssl 1.1", "SHA256 Fingerprint=" + colons, PinCertOrKey, ""},
		{"openssl with spaces", "  SHA256 Fingerprint= " + colons + "\r\n", PinCertOrKey, ""},
		{"public-key pin", "sha256//" + b64, PinPublicKey, ""},
		{"public-key pin unpadded", "SHA256//" + strings.TrimSuffix(b64, "="), PinPublicKey, ""},
		{"empty", "  ", 0, "empty fingerprint; accepted forms:"},
		{"prefix only", "sha256:", 0, "empty fingerprint after \"sha256\"; accepted forms:"},
		{"openssl sha1", "SHA1 Fingerprint=" + colons[:59], 0, `only sha256 is supported (Postfix uses sha256 from compatibility_level 3.6), not "SHA1"; accepted forms:`},
		{"md5 prefix", "md5:" + colons[:47], 0, `not "md5"; accepted forms:`},
		{"sha1 prefix", "sha1:00", 0, "only sha256 is supported"},
		{"pin with hex", "sha256//" + plain, 0, `a "sha256//" pin is the base64 of the public key's 32-byte SHA-256 digest`},
		{"pin too short", "sha256//AAEC", 0, "accepted forms:"},
		{"bare base64", b64, 0, `is base64, which does not say what was digested; if it is the SHA-256 of the public key, write it as "sha256//` + b64 + `"`},
		{"misplaced colon", plain[:3] + ":" + plain[3:], 0, "colons must separate pairs of hex digits (AB:CD:...); accepted forms:"},
		{"trailing colon", colons + ":", 0, "colons must separate pairs"},
		{"not hex", strings.Repeat("zz", 32), 0, "is not hexadecimal; accepted forms:"},
		{"odd length", plain[:63], 0, "not hexadecimal"},
		{"md5 length", plain[:32], 0, "has 16 bytes, an MD5 digest; tlsgate compares SHA-256 digests"},
		{"sha1 length", colons[:59], 0, "has 20 bytes, a SHA-1 digest"},
		{"too long", plain + "00", 0, "has 33 bytes, want 32 (SHA-256)"},
		{"huge input is clipped", strings.Repeat("ZZ:", 10000), 0, `:ZZ:...": colons must separate pairs`},
		{"huge hex is clipped", strings.Repeat("ZZ", 10000), 0, `ZZZZ..." is not hexadecimal`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, kind, err := certid.ParseFingerprintKind(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("certid.ParseFingerprintKind(%.40q) error %v, want one containing %q", tc.in, err, tc.err)
				}
				if len(err.Error()) > 1000 {
					t.Errorf("error of %d bytes", len(err.Error()))
				}
				return
			}
			if err != nil || f.String() != colons || kind != tc.kind {
				t.Fatalf("certid.ParseFingerprintKind(%q) = %s %v, %v; want %s %v", tc.in, f, kind, err, colons, tc.kind)
			}
			if g, err := certid.ParseFingerprint(tc.in); err != nil || g != f {
				t.Errorf("certid.ParseFingerprint(%q) = %s, %v", tc.in, g, err)
			}
		})
	}
}

// A pasted OpenSSL line or public-key pin works in the policy file and
// is rendered in Postfix's form.
func TestPastedFingerprintsInPolicy(t *testing.T) {
	p := mustParse(t, `mta = "postfix"
[[endpoint]]
name = "pinned"
hosts = ["pin.example"]
  [endpoint.outbound]
  validate_cert = false
  fingerprints = ["SHA256 Fingerprint=00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F",
                  "sha256////////////////////////////////////////////8="]
`)
	a, err := now(p).Outbound("pin.example")
	want := "fingerprint match=00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F match=FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF:FF"
	if err != nil || a.Text != want {
		t.Errorf("answer %q (%v), want %q", a.Text, err, want)
	}
	_, err = Parse("t.toml", []byte(`mta = "postfix"
[[endpoint]]
name = "pinned"
hosts = ["pin.example"]
  [endpoint.outbound]
  validate_cert = false
  fingerprints = ["SHA1 Fingerprint=00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13"]
`))
	if err == nil || !strings.Contains(err.Error(), `t.toml:7: endpoint "pinned" outbound: fingerprint`) || !strings.Contains(err.Error(), "accepted forms:") {
		t.Errorf("error %v", err)
	}
}
