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
