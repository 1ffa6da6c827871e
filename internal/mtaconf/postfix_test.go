package mtaconf

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const postfixConf = `mta = "postfix"
[milter]
listen = "unix:/var/spool/postfix/tlsgate/milter.sock"
[policyd]
listen            = "unix:/var/spool/postfix/tlsgate/policy.sock"
delegation_listen = "unix:/var/spool/postfix/tlsgate/delegation.sock"
[certs]
ca_store  = "/etc/tlsgate/ca"
ca_bundle = "/var/lib/tlsgate/ca-bundle.pem"
[[endpoint]]
name = "a"
hosts = ["a.example", "192.0.2.1"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["sha256:3D:95:34:A2:1B:7E:0F:C8:9D:11:5A:6B:E4:72:90:CC:41:0E:BA:58:77:23:9F:D6:8A:C5:13:44:60:B2:E9:0F"]
  [endpoint.outbound]
  encryption = true
`

const (
	ourMilter = "{ unix:tlsgate/milter.sock, default_action=tempfail }"
	ourMap    = "socketmap:unix:tlsgate/policy.sock:tlspolicy"
	ourPolicy = "check_policy_service { unix:tlsgate/delegation.sock, { default_action = 451 4.3.5 TLS policy service unavailable } }"
)

// TestPostfixMerge: what tlsgate needs, merged into what main.cf has.
func TestPostfixMerge(t *testing.T) {
	pf, err := ForPostfix(mustParse(t, postfixConf), Options{})
	if err != nil {
		t.Fatal(err)
	}
	debianRelay := "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
	for _, tc := range []struct {
		name string
		main map[string]string // set in main.cf
		// want are the parameters that change and their new values;
		// same those left alone.
		want map[string]string
		same []string
		err  error
	}{
		{
			name: "Debian's main.cf",
			main: map[string]string{"smtpd_relay_restrictions": debianRelay, "smtpd_tls_security_level": "may", "smtp_tls_security_level": "may"},
			want: map[string]string{
				"smtpd_milters":                ourMilter,
				"smtp_tls_policy_maps":         ourMap,
				"smtpd_recipient_restrictions": ourPolicy,
				"smtpd_tls_CAfile":             "/var/lib/tlsgate/ca-bundle.pem",
			},
			same: []string{"smtpd_tls_security_level", "smtp_tls_security_level"},
		},
		{
			name: "OpenDKIM and a table of one's own",
			main: map[string]string{"smtpd_milters": "inet:localhost:8891", "milter_default_action": "accept",
				"smtp_tls_policy_maps": "hash:/etc/postfix/tls_policy", "smtpd_relay_restrictions": debianRelay},
			want: map[string]string{
				"smtpd_milters":        ourMilter + ", inet:localhost:8891",
				"smtp_tls_policy_maps": ourMap + ", hash:/etc/postfix/tls_policy",
			},
		},
		{
			name: "an earlier tlsgate's milter is replaced where it stands",
			main: map[string]string{"smtpd_milters": "inet:localhost:8891, unix:tlsgate/milter.sock", "smtpd_relay_restrictions": debianRelay},
			want: map[string]string{"smtpd_milters": "inet:localhost:8891, " + ourMilter},
		},
		{
			name: "permits before it in smtpd_recipient_restrictions, relay check in smtpd_relay_restrictions",
			main: map[string]string{"smtpd_relay_restrictions": debianRelay, "smtpd_recipient_restrictions": "permit_mynetworks, reject_unknown_recipient_domain"},
			want: map[string]string{"smtpd_recipient_restrictions": ourPolicy + ", permit_mynetworks, reject_unknown_recipient_domain"},
			same: []string{"smtpd_relay_restrictions"},
		},
		{
			name: "relay check in smtpd_recipient_restrictions",
			main: map[string]string{"smtpd_relay_restrictions": "",
				"smtpd_recipient_restrictions": "permit_mynetworks,\n    reject_unauth_destination,\n    check_policy_service inet:127.0.0.1:10023, reject_rbl_client zen.spamhaus.org"},
			want: map[string]string{"smtpd_recipient_restrictions": "permit_mynetworks,\n    reject_unauth_destination, " + ourPolicy + ",\n    check_policy_service inet:127.0.0.1:10023, reject_rbl_client zen.spamhaus.org"},
			same: []string{"smtpd_relay_restrictions"},
		},
		{
			name: "stronger levels are kept, none is raised",
			main: map[string]string{"smtpd_tls_security_level": "encrypt", "smtp_tls_security_level": "none", "smtpd_relay_restrictions": debianRelay},
			want: map[string]string{"smtp_tls_security_level": "may"},
			same: []string{"smtpd_tls_security_level"},
		},
		{
			name: "dane is kept",
			main: map[string]string{"smtp_tls_security_level": "dane", "smtpd_relay_restrictions": debianRelay},
			same: []string{"smtp_tls_security_level"},
		},
		{
			name: "no relay check to put the policy service behind",
			main: map[string]string{"smtpd_relay_restrictions": "", "smtpd_recipient_restrictions": "permit_mynetworks, reject"},
			err:  errNoRelayCheck,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Values{}
			for _, n := range pf.Names() {
				v[n] = Current{}
			}
			for n, val := range tc.main {
				v[n] = Current{Value: val, Set: true}
			}
			changes, err := pf.Merge(v)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Merge: %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Change{}
			for _, c := range changes {
				if _, dup := got[c.Name]; dup && c.Changed {
					t.Errorf("%s is changed twice", c.Name)
				}
				if c.Changed || got[c.Name].Name == "" {
					got[c.Name] = c
				}
				if c.Name == "milter_default_action" || c.Name == "milter_protocol" {
					t.Errorf("the global %s is touched: %+v", c.Name, c)
				}
			}
			for n, want := range tc.want {
				if c := got[n]; !c.Changed || c.New != want {
					t.Errorf("%s: changed %v to %q, want %q", n, c.Changed, c.New, want)
				}
			}
			for _, n := range tc.same {
				if c, ok := got[n]; ok && c.Changed {
					t.Errorf("%s changed to %q, want it left alone (%q)", n, c.New, tc.main[n])
				}
			}
			// Merging the result again changes nothing.
			for _, c := range changes {
				if c.Changed {
					v[c.Name] = Current{Value: c.New, Set: true}
				}
			}
			again, err := pf.Merge(v)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range again {
				if c.Changed {
					t.Errorf("a second merge changes %s from %q to %q", c.Name, c.Old, c.New)
				}
			}
		})
	}
}

// TestPostfixText: only changes are lines; the rest are comments.
func TestPostfixText(t *testing.T) {
	pf, err := ForPostfix(mustParse(t, postfixConf), Options{})
	if err != nil {
		t.Fatal(err)
	}
	changes, err := pf.Merge(Values{"smtpd_relay_restrictions": {Value: "permit_mynetworks, defer_unauth_destination"},
		"smtpd_milters": {Value: "inet:localhost:8891", Set: true}, "smtpd_tls_received_header": {Value: "yes", Set: true}})
	if err != nil {
		t.Fatal(err)
	}
	text := pf.Text("t.toml", "main.cf", changes)
	for _, want := range []string{
		"\n# was: smtpd_milters = inet:localhost:8891\nsmtpd_milters = " + ourMilter + ", inet:localhost:8891\n",
		"\nsmtpd_recipient_restrictions = " + ourPolicy + "\n",
		"\n#   smtpd_tls_received_header = yes\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") && !strings.Contains(l, " = ") {
			t.Errorf("a line is neither a comment nor name = value: %q", l)
		}
	}
}

// TestPolicyServiceOptions: the check_policy_service entry must parse the
// way Postfix's attr_override(3) reads "{ ... }": elements separated by
// commas or blanks, each "name=value" without blanks or "{ name = value }".
// A bare "default_action=451 4.3.5 ..." made every smtpd exit with
// "fatal: malformed option: missing '=' after attribute name" (found by the
// end-to-end tests against a real Postfix). The same holds for the
// per-milter settings.
func TestPolicyServiceOptions(t *testing.T) {
	inner, ok := strings.CutPrefix(ourPolicy, "check_policy_service {")
	if !ok {
		t.Fatal(ourPolicy)
	}
	elems := postfixAttrList(t, strings.TrimSuffix(inner, "}"))
	want := []string{"unix:tlsgate/delegation.sock", "default_action=" + policyDefaultAction}
	if strings.Join(elems, "|") != strings.Join(want, "|") {
		t.Errorf("Postfix would read %q, want %q", elems, want)
	}
	elems = postfixAttrList(t, strings.TrimSuffix(strings.TrimPrefix(ourMilter, "{"), "}"))
	if want := []string{"unix:tlsgate/milter.sock", "default_action=tempfail"}; strings.Join(elems, "|") != strings.Join(want, "|") {
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

// TestPostconf reads a main.cf through the real postconf: what main.cf
// sets stays unexpanded, the defaults of the others are expanded.
func TestPostconf(t *testing.T) {
	if _, err := exec.LookPath("postconf"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("postconf not found")
		}
		t.Skip("postconf not found")
	}
	dir := t.TempDir()
	main := "compatibility_level = 3.6\nmy_milter = inet:localhost:8891\nsmtpd_milters = $my_milter,\n  unix:other.sock\n"
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := Postconf(dir, []string{"smtpd_milters", "smtpd_relay_restrictions", "smtp_tls_policy_maps"})
	if err != nil {
		t.Fatal(err)
	}
	want := Values{
		"smtpd_milters":            {Value: "$my_milter, unix:other.sock", Set: true},
		"smtpd_relay_restrictions": {Value: "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"},
		"smtp_tls_policy_maps":     {},
	}
	for n, w := range want {
		if v[n] != w {
			t.Errorf("%s = %+v, want %+v", n, v[n], w)
		}
	}
	// The same from the file, without postconf.
	f, err := ReadMainCF(filepath.Join(dir, "main.cf"), []string{"smtpd_milters", "smtpd_relay_restrictions", "smtp_tls_policy_maps"})
	if err != nil {
		t.Fatal(err)
	}
	for n, w := range want {
		if f[n] != w {
			t.Errorf("ReadMainCF: %s = %+v, want %+v", n, f[n], w)
		}
	}
	if _, err := Postconf(filepath.Join(dir, "none"), []string{"smtpd_milters"}); err == nil {
		t.Error("Postconf of a directory without main.cf did not fail")
	}
}

func TestParseMainCF(t *testing.T) {
	// A line whose first non-blank character is # is a comment, also
	// inside a continued value (postconf(5)).
	got := parseMainCF([]byte("# comment\na = 1\nb = x,\n\ty\n  # comment\n  z\nc=\na = 2\n"))
	want := map[string]string{"a": "2", "b": "x, y z", "c": ""}
	if len(got) != len(want) {
		t.Errorf("got %q", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}
