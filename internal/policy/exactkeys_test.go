package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestExactKeys: a key or table in another case than documented is an
// error at its line that names the right spelling, also when the right
// spelling is in the file too (the decoder would take either at random).
func TestExactKeys(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"key next to its right spelling", `mta = "postfix"
[[endpoint]]
name = "a"
hosts = ["a.example"]
mode = "enforce"
Mode = "monitor"
  [endpoint.outbound]
  encryption = true
`, []string{`t.toml:6: key "endpoint.Mode" must be written "endpoint.mode"`}},
		{"requirement key", `mta = "postfix"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.inbound]
  validate_cert = true
  Validate_Cert = false
`, []string{`t.toml:7: key "endpoint.inbound.Validate_Cert" must be written "endpoint.inbound.validate_cert"`}},
		{"array of tables", `mta = "postfix"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
[[ENDPOINT]]
name = "b"
hosts = ["b.example"]
  [ENDPOINT.outbound]
  encryption = true
`, []string{`t.toml:7: table [[ENDPOINT]] must be written [[endpoint]]`}},
		{"sub-table", `mta = "postfix"
[[endpoint]]
name = "a"
hosts = ["a.example"]
[Endpoint.Inbound]
encryption = true
`, []string{`t.toml:5: table [Endpoint.Inbound] must be written [endpoint.inbound]`}},
		{"top-level key and table", `MTA = "postfix"
[Milter]
listen = "unix:/x"
`, []string{`t.toml:1: key "MTA" must be written "mta"`, `t.toml:2: table [Milter] must be written [milter]`}},
		{"twice", `mta = "postfix"
[[endpoint]]
name = "a"
Hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name = "b"
Hosts = ["b.example"]
  [endpoint.outbound]
  encryption = true
`, []string{`t.toml:4: key "endpoint.Hosts" must be written "endpoint.hosts"`, `t.toml:9: key "endpoint.Hosts" must be written "endpoint.hosts"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%v", n, len(tc.want), err)
			}
		})
	}
}

// TestEmptyValues: an empty string is an error at its line, never a
// requirement silently dropped.
func TestEmptyValues(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`cn = ""`, `t.toml:6: endpoint "a" inbound: cn = "" is empty`},
		{`issuer_cn = "  "`, `t.toml:6: endpoint "a" inbound: issuer_cn = "  " is empty`},
		{`subject_dn = ""`, `t.toml:6: endpoint "a" inbound: subject_dn = "" is empty`},
		{`issuer_dn = " "`, `t.toml:6: endpoint "a" inbound: issuer_dn = " " is empty`},
		{`fingerprints = [""]`, `t.toml:6: endpoint "a" inbound: empty fingerprint`},
	} {
		src := "mta = \"sendmail\"\n[[endpoint]]\nname = \"a\"\nhosts = [\"a.example\"]\n  [endpoint.inbound]\n  " + tc.line + "\n  encryption = true\n"
		if _, err := Parse("t.toml", []byte(src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.line, err, tc.want)
		}
	}
	for _, tc := range []struct{ line, want string }{
		{`mode = ""`, `t.toml:4: mode = "": want "enforce" or "monitor"`},
		{`action = ""`, `t.toml:4: action = "": want "defer"`},
		{`name = ""`, `t.toml:4: name = "": use letters`},
	} {
		src := "mta = \"sendmail\"\n[[endpoint]]\nname = \"a\"\n" + tc.line + "\nhosts = [\"a.example\"]\n  [endpoint.inbound]\n  encryption = true\n"
		if strings.HasPrefix(tc.line, "name") {
			src = strings.Replace(src, "name = \"a\"\n", "", 1)
			src = strings.Replace(src, "[[endpoint]]\n", "[[endpoint]]\n\n", 1)
		}
		if _, err := Parse("t.toml", []byte(src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.line, err, tc.want)
		}
	}
}

// TestLoadIsDeterministic: loading one file 1,000 times yields the same
// compiled policy, and a file with problems the same problems in the same
// order.
func TestLoadIsDeterministic(t *testing.T) {
	good := filepath.Join("testdata", "good", "precedence.toml")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	first := dumpPolicy(mustParse(t, string(data)))
	bad := `mta = "sendmail"
[certs]
ca_store = "rel/a"
ca_bundle = "rel/b"
server_cert = "rel/c"
[[endpoint]]
name = "a"
hosts = ["a.example"]
mode = "enforce"
Mode = "monitor"
  [endpoint.outbound]
  subject_dn = "CN=` + strings.Repeat("x", 300) + `"
  issuer_dn = "CN=` + strings.Repeat("y", 300) + `"
`
	_, err = Parse("t.toml", []byte(bad))
	if err == nil {
		t.Fatal("bad file loaded")
	}
	firstErr := err.Error()
	for i := range 1000 {
		if got := dumpPolicy(mustParse(t, string(data))); got != first {
			t.Fatalf("load %d differs:\n%s\n--- first\n%s", i, got, first)
		}
		if _, err := Parse("t.toml", []byte(bad)); err == nil || err.Error() != firstErr {
			t.Fatalf("load %d of the bad file: %v\n--- first\n%s", i, err, firstErr)
		}
	}
	// The case problem alone is reported; without it the file's other
	// problems come in file order.
	if !strings.Contains(firstErr, `key "endpoint.Mode" must be written "endpoint.mode"`) {
		t.Errorf("bad file: %v", firstErr)
	}
	_, err = Parse("t.toml", []byte(strings.Replace(bad, "Mode = \"monitor\"\n", "", 1)))
	if err == nil || !strings.Contains(err.Error(), "ca_store") || strings.Index(err.Error(), "ca_store") > strings.Index(err.Error(), "server_cert") {
		t.Errorf("problems out of order: %v", err)
	}
}

// dumpPolicy writes everything a compiled policy decides with, in a
// canonical order.
func dumpPolicy(p *Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mta=%s version=%s settings=%+v ask=%v relaxes=%v\n", p.MTA, p.PostfixVersion, p.Settings, p.askEveryClient, p.relaxes)
	for _, ep := range p.Endpoints {
		fmt.Fprintf(&b, "endpoint %s line=%d mode=%s action=%s defines=%v file=%s\n  in=%+v\n  out=%+v\n  postfix=%q sendmail=%q\n",
			ep.Name, ep.Line, ep.Mode, ep.Action, ep.defines(), ep.File, *ep.Inbound, *ep.Outbound, ep.out, "")
		for _, h := range ep.Hosts {
			fmt.Fprintf(&b, "  host %+v\n", h)
		}
		if x := ep.Exception; x != nil {
			fmt.Fprintf(&b, "  exception to=%s reason=%q expires=%s relaxes=%v line=%d\n", x.To.Name, x.Reason, x.Expires(), x.relaxes, x.Line)
		}
	}
	for _, w := range p.warnings {
		fmt.Fprintf(&b, "warning %s\n", w.problem())
	}
	for d, ix := range p.ix {
		var lines []string
		for k, v := range ix.names {
			lines = append(lines, fmt.Sprintf("name %s=%d", k, v))
		}
		for k, v := range ix.suffixes {
			lines = append(lines, fmt.Sprintf("suffix %s=%d", k, v))
		}
		for k, v := range ix.addrs {
			lines = append(lines, fmt.Sprintf("addr %s=%d", k, v))
		}
		for k, v := range ix.prefixes {
			lines = append(lines, fmt.Sprintf("prefix %s=%d", k, v))
		}
		slices.Sort(lines)
		fmt.Fprintf(&b, "index %d bits4=%v bits6=%v\n  %s\n", d, ix.bits4, ix.bits6, strings.Join(lines, "\n  "))
	}
	return b.String()
}

// TestZonedClientAddress: a client address with a zone (fe80::1%eth0)
// is covered by a pattern for the address.
func TestZonedClientAddress(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "link"
hosts = ["fe80::1", "fe80::100/120"]
  [endpoint.inbound]
  encryption = true
`)
	for _, a := range []string{"fe80::1%eth0", "fe80::1", "fe80::142%2"} {
		v := now(p).Judge(&Facts{ClientAddr: netip.MustParseAddr(a)})
		if !v.Refuse || v.Names() != "link" {
			t.Errorf("%s: %+v, want link to refuse the plaintext session", a, v)
		}
	}
}
