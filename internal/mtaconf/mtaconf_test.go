package mtaconf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
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
	p := mustParse(t, `mta = "postfix"
[milter]
listen = "inet:127.0.0.1:10030"
[policyd]
listen = "unix:/srv/pf/spool/tlsgate/policy.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`)
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
	p := mustParse(t, `mta = "postfix"
[policyd]
delegation_listen = "unix:/srv/pf/spool/tlsgate/delegation.sock"
[[endpoint]]
name = "a"
hosts = ["192.0.2.1"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["sha256:3D:95:34:A2:1B:7E:0F:C8:9D:11:5A:6B:E4:72:90:CC:41:0E:BA:58:77:23:9F:D6:8A:C5:13:44:60:B2:E9:0F"]
`)
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

// TestSendmailAlwaysTriesTLS: with the access map served by tlsgate, the
// .mc lines end with a Local_try_tls ruleset that makes Sendmail try
// STARTTLS whatever the access map says. Without it, a tlsgate that is
// down makes the Try_TLS: lookup tempfail, try_tls answer "no STARTTLS",
// and Sendmail send MAIL FROM in clear to a covered peer before tls_rcpt
// defers the recipients (seen with the real Sendmail 8.17 in
// internal/lab/e2e). The ruleset must follow MAILER(), so it comes after the
// SendmailAfterMailer line and nothing but it does.
func TestSendmailAlwaysTriesTLS(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[milter]
listen = "unix:/run/tlsgate/milter.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`)
	text, err := Sendmail(p)
	if err != nil {
		t.Fatal(err)
	}
	before, after, ok := strings.Cut(text, SendmailAfterMailer+"\n")
	if !ok {
		t.Fatalf("no %q line in\n%s", SendmailAfterMailer, text)
	}
	if !strings.Contains(before, "FEATURE(`access_db', `socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock')dnl\n") ||
		!strings.Contains(before, "INPUT_MAIL_FILTER(`tlsgate'") {
		t.Errorf("FEATURE and INPUT_MAIL_FILTER must come before MAILER():\n%s", before)
	}
	var rules []string
	for _, line := range strings.Split(strings.TrimSuffix(after, "\n"), "\n") {
		if !strings.HasPrefix(line, "dnl ") {
			rules = append(rules, line)
		}
	}
	if want := []string{"LOCAL_TRY_TLS", "R$*\t\t$# OK"}; strings.Join(rules, "\n") != strings.Join(want, "\n") {
		t.Errorf("after MAILER(): %q, want %q", rules, want)
	}

	// Without the access map (milter only) there is no try_tls to fix.
	p, err = policy.Parse("t.toml", []byte(`mta = "sendmail"
[milter]
listen = "unix:/run/tlsgate/milter.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.inbound]
  encryption = true
`))
	if err != nil {
		t.Fatal(err)
	}
	if text, err := Sendmail(p); err != nil || strings.Contains(text, "LOCAL_TRY_TLS") || strings.Contains(text, SendmailAfterMailer) {
		t.Errorf("milter-only output has a try_tls ruleset (%v):\n%s", err, text)
	}
}

// TestSendmailTryTLSCompiles runs m4 on Sendmail's own cf files (from the
// lab cache that internal/lab/mtalab fills; skipped without it) over an .mc
// that places the generated lines as SendmailAfterMailer says: m4 must
// stay silent and the .cf must hold the Local_try_tls ruleset that
// try_tls consults first. Placed before MAILER(), the same lines make m4
// warn, which is why the output splits them off.
func TestSendmailTryTLSCompiles(t *testing.T) {
	cfDir := sendmailCFDir(t)
	p := mustParse(t, `mta = "sendmail"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`)
	text, err := Sendmail(p)
	if err != nil {
		t.Fatal(err)
	}
	before, after, _ := strings.Cut(text, SendmailAfterMailer+"\n")
	m4 := func(mc string) (string, string) { t.Helper(); return runM4(t, cfDir, mc) }
	const head = "divert(-1)\ndivert(0)dnl\nOSTYPE(`linux')dnl\n"
	const mailers = "MAILER(`local')dnl\nMAILER(`smtp')dnl\n"
	cf, warnings := m4(head + before + mailers + after)
	if warnings != "" {
		t.Errorf("m4 warned about the lines placed as documented:\n%s", warnings)
	}
	for _, want := range []string{
		"Stry_tls\nR$*\t\t\t$: $1 $| $>\"Local_try_tls\" $1\nR$* $| $#$*\t\t$#$2\n",
		"\nSLocal_try_tls\nR$*\t\t$# OK\n",
	} {
		if !strings.Contains(cf, want) {
			t.Errorf("the .cf lacks %q", want)
		}
	}
	if _, warnings := m4(head + before + after + mailers); !strings.Contains(warnings, "MAILER() should be before LOCAL_TRY_TLS") {
		t.Errorf("m4 did not warn about LOCAL_TRY_TLS before MAILER(): %q", warnings)
	}
}

// The Srv_Features lines say what tlsgate answers; check them against the
// policy's own answers so that the comment stays true.
func TestSendmailSrvFeaturesText(t *testing.T) {
	for _, tc := range []struct {
		name, hosts string
		bare        string // the bare key's answer, "" = not found
		says        string
	}{
		{"exact name", `["a.example", "192.0.2.1"]`, "", "leaves the bare Srv_Features: default to Sendmail, which asks every client"},
		{"subdomains", `[".a.example", "192.0.2.1"]`, "", "leaves the bare Srv_Features: default to Sendmail, which asks every client"},
		{"addresses only", `["192.0.2.1", "198.51.100.0/24"]`, "V", "with V for the bare Srv_Features: default, so no other client is asked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustParse(t, `mta = "sendmail"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[[endpoint]]
name = "a"
hosts = `+tc.hosts+`
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  encryption = true
`)
			text, err := Sendmail(p)
			if err != nil {
				t.Fatal(err)
			}
			v := p.At(time.Now())
			if a, _ := v.SendmailAccess("srv_features:"); a.Found != (tc.bare != "") || a.Text != tc.bare {
				t.Errorf("srv_features: answers %v %q, want %q", a.Found, a.Text, tc.bare)
			}
			if a, _ := v.SendmailAccess("srv_features:192.0.2.1"); !a.Found || a.Text != "v" {
				t.Errorf("srv_features:192.0.2.1 answers %v %q, the .mc comment says v", a.Found, a.Text)
			}
			for _, says := range []string{tc.says, "with v (ask) for a client name or address"} {
				if !strings.Contains(text, says) {
					t.Errorf("the .mc lines do not say %q:\n%s", says, text)
				}
			}
			if a, _ := v.SendmailAccess("srv_features:b.example"); a.Found {
				t.Errorf("srv_features:b.example answers %q; b asks for no client certificate", a.Text)
			}
		})
	}
}

// mustParse compiles a test configuration or fails the test.
func mustParse(t *testing.T, conf string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("t.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDiscoveryLines: with [discovery], Postfix asks the socketmap even
// without outbound endpoints and gets what DANE needs; Sendmail gets
// FEATURE(`sts') on tlsgate's socket, and m4 turns it into the sts map.
func TestDiscoveryLines(t *testing.T) {
	p := mustParse(t, `mta = "postfix"
[policyd]
listen = "unix:/var/spool/postfix/tlsgate/policy.sock"
[discovery]
mta_sts = true
dane = true
`)
	pf, err := ForPostfix(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	text := pf.Text("t.toml")
	for _, want := range []string{
		"smtp_tls_policy_maps = socketmap:unix:tlsgate/policy.sock:tlspolicy\n",
		"smtp_dns_support_level = dnssec\n", "smtp_host_lookup = dns\n", "smtp_tls_dane_insecure_mx_policy = dane\n",
		"#   apt install unbound\n", "#   echo 'nameserver 127.0.0.1' >/etc/resolv.conf\n", `#   resolver = "127.0.0.1:53" in tlsgate's [discovery]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Postfix lines lack %q:\n%s", want, text)
		}
	}
	p = mustParse(t, `mta = "postfix"
[policyd]
listen = "unix:/var/spool/postfix/tlsgate/policy.sock"
[discovery]
mta_sts = true
`)
	pf, _ = ForPostfix(p, Options{})
	if text := pf.Text("t.toml"); strings.Contains(text, "dnssec") || !strings.Contains(text, "smtp_tls_policy_maps") {
		t.Errorf("MTA-STS alone:\n%s", text)
	}

	cfDir := sendmailCFDir(t)
	p = mustParse(t, `mta = "sendmail"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[discovery]
mta_sts = true
`)
	mc, err := Sendmail(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mc, "FEATURE(`sts', `socket -d5 -T<TMPF> unix:/run/tlsgate/policy.sock')dnl\n") {
		t.Fatalf("no FEATURE(`sts'):\n%s", mc)
	}
	cf, warnings := runM4(t, cfDir, "divert(-1)\ndivert(0)dnl\nOSTYPE(`linux')dnl\n"+mc+"MAILER(`local')dnl\nMAILER(`smtp')dnl\n")
	if warnings != "" {
		t.Fatalf("m4 warned:\n%s", warnings)
	}
	for _, want := range []string{"\nKsts socket -d5 -T<TMPF> unix:/run/tlsgate/policy.sock\n", "\nO StrictTransportSecurity=true\n", "\nO SetCertAltnames=true\n", "\nSSTS_Check\n"} {
		if !strings.Contains(cf, want) {
			t.Errorf("the .cf lacks %q", want)
		}
	}
}

// sendmailCFDir returns the directory of Sendmail's cf files in the lab
// cache (internal/lab/mtalab fills it), or skips the test without them or
// without m4.
func sendmailCFDir(t *testing.T) string {
	t.Helper()
	cfDir := filepath.Join(mtalab.CacheDir(), "sendmail-root/usr/share/sendmail/cf") + "/"
	if _, err := os.Stat(filepath.Join(cfDir, "m4/cf.m4")); err != nil {
		t.Skipf("Sendmail's cf files are not in the lab cache (%v); scripts/install-test-deps.sh puts them there", err)
	}
	if _, err := exec.LookPath("m4"); err != nil {
		t.Skip("m4 is not installed")
	}
	return cfDir
}

// runM4 turns .mc text into a .cf with Sendmail's cf files in cfDir and
// returns it and what m4 said on standard error.
func runM4(t *testing.T, cfDir, mc string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.mc")
	if err := os.WriteFile(path, []byte(mc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("m4", "-D_CF_DIR_="+cfDir, filepath.Join(cfDir, "m4/cf.m4"), path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("m4: %v\n%s", err, stderr.String())
	}
	return string(out), stderr.String()
}
