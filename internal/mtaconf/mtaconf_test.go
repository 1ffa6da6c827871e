package mtaconf

import (
	"os"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// TestDeploySnippets keeps deploy/'s Postfix and Sendmail snippets equal
// to what mta-config generates from the example configurations.
func TestDeploySnippets(t *testing.T) {
	for _, tc := range []struct{ conf, snippet string }{
		{"../../deploy/tlsgate.example.toml", "../../deploy/postfix/main.cf.example"},
		{"../../deploy/tlsgate.sendmail.example.toml", "../../deploy/sendmail/tlsgate.mc.example"},
	} {
		p, err := policy.Load(tc.conf)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if p.MTA == policy.Postfix {
			pf, err := ForPostfix(p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got = pf.Text(p.File)
		} else if got, err = Sendmail(p); err != nil {
			t.Fatal(err)
		}
		got = strings.ReplaceAll(got, "../../deploy/", "deploy/")
		want, err := os.ReadFile(tc.snippet)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s is stale; regenerate with: tlsgate mta-config -c %s > %s\ngot:\n%s", tc.snippet, strings.TrimPrefix(tc.conf, "../../"), strings.TrimPrefix(tc.snippet, "../../"), got)
		}
	}
}

func TestPostfixChoices(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte(`mta = "postfix"
[milter]
listen = "inet:127.0.0.1:10030"
[policyd]
listen = "unix:/srv/pf/spool/tlsgate/policy.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`))
	if err != nil {
		t.Fatal(err)
	}
	pf, err := ForPostfix(p, Options{PostfixQueueDir: "/srv/pf/spool"})
	if err != nil {
		t.Fatal(err)
	}
	text := pf.Text("t.toml")
	for _, want := range []string{"smtpd_milters = inet:127.0.0.1:10030\n", "milter_default_action = tempfail\n",
		"smtp_tls_policy_maps = socketmap:unix:tlsgate/policy.sock:tlspolicy\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	for _, unwanted := range []string{"smtpd_tls_ask_ccert", "check_policy_service"} {
		if strings.Contains(text, unwanted) {
			t.Errorf("%s emitted although no endpoint needs it:\n%s", unwanted, text)
		}
	}
	if _, err := Sendmail(p); err == nil {
		t.Error("Sendmail output for a postfix policy")
	}
}

// TestPolicyServiceOptions: the check_policy_service entry must parse the
// way Postfix's attr_override(3) reads "{ ... }": elements separated by
// commas or blanks, each "name=value" without blanks or "{ name = value }".
// A bare "default_action=451 4.3.5 ..." made every smtpd exit with
// "fatal: malformed option: missing '=' after attribute name" (found by the
// end-to-end tests against a real Postfix).
func TestPolicyServiceOptions(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte(`mta = "postfix"
[policyd]
delegation_listen = "unix:/srv/pf/spool/tlsgate/delegation.sock"
[[endpoint]]
name = "a"
hosts = ["192.0.2.1"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["sha256:3D:95:34:A2:1B:7E:0F:C8:9D:11:5A:6B:E4:72:90:CC:41:0E:BA:58:77:23:9F:D6:8A:C5:13:44:60:B2:E9:0F"]
`))
	if err != nil {
		t.Fatal(err)
	}
	pf, err := ForPostfix(p, Options{PostfixQueueDir: "/srv/pf/spool"})
	if err != nil {
		t.Fatal(err)
	}
	var value string
	for _, kv := range pf.Main {
		if kv[0] == "smtpd_recipient_restrictions" {
			value = kv[1]
		}
	}
	inner, ok := strings.CutPrefix(value, "check_policy_service {")
	if !ok || !strings.HasSuffix(inner, "}") {
		t.Fatalf("smtpd_recipient_restrictions = %q, want check_policy_service { ... }", value)
	}
	elems := postfixAttrList(t, strings.TrimSuffix(inner, "}"))
	want := []string{"unix:tlsgate/delegation.sock", "default_action=" + policyDefaultAction}
	if strings.Join(elems, "|") != strings.Join(want, "|") {
		t.Errorf("Postfix would read %q, want %q", elems, want)
	}
}

// postfixAttrList splits s like attr_override(3): at commas and blanks,
// except inside "{ name = value }", which may hold blanks. Every element
// but the first (the server) must be name=value.
func postfixAttrList(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	for s = strings.TrimLeft(s, ", \t\n"); s != ""; s = strings.TrimLeft(s, ", \t\n") {
		var elem string
		if s[0] == '{' {
			end := strings.IndexByte(s, '}')
			if end < 0 {
				t.Fatalf("unbalanced { in %q", s)
			}
			name, value, ok := strings.Cut(s[1:end], "=")
			if !ok {
				t.Fatalf("{%s}: missing '='", s[1:end])
			}
			elem = strings.TrimSpace(name) + "=" + strings.TrimSpace(value)
			s = s[end+1:]
		} else {
			end := strings.IndexAny(s, ", \t\n")
			if end < 0 {
				end = len(s)
			}
			elem, s = s[:end], s[end:]
			if len(out) > 0 && !strings.Contains(elem, "=") {
				t.Fatalf("malformed option: missing '=' after attribute name: %q", elem)
			}
		}
		out = append(out, elem)
	}
	return out
}
