package mtaconf

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

const sendmailConf = `mta = "sendmail"
[milter]
listen = "unix:/run/tlsgate/milter.sock"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[certs]
ca_store    = "/etc/tlsgate/ca"
ca_bundle   = "/etc/mail/tls/tlsgate-ca.pem"
server_cert = "/etc/mail/tls/sendmail-server.crt"
server_key  = "/etc/mail/tls/sendmail-common.key"
[[endpoint]]
name = "in"
hosts = ["192.0.2.1"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "out"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`

// TestSendmailLines: the access map stays the administrator's; tlsgate's
// map, rulesets and hooks follow MAILER(); the parts only some policies
// need come only with them.
func TestSendmailLines(t *testing.T) {
	sm, err := ForSendmail(mustParse(t, sendmailConf), SendmailFiles{GroupReadableKey: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, after := strings.Join(sm.Before, "\n"), strings.Join(sm.After, "\n")
	for _, want := range []string{
		"define(`confCACERT', `/etc/mail/tls/tlsgate-ca.pem')dnl",
		"define(`confCACERT_PATH', `/etc/mail/tls')dnl",
		"GroupReadableKeyFile",
		"ifdef(`_ACCESS_TABLE_', `', `FEATURE(`access_db', `hash -o -T<TMPF> /etc/mail/access')')dnl",
		"MAIL_FILTER(`tlsgate', `S=unix:/run/tlsgate/milter.sock, F=T, T=C:30s;S:10s;R:10s;E:30s')dnl",
	} {
		if !strings.Contains(before, want) {
			t.Errorf("before MAILER(): no %q in\n%s", want, before)
		}
	}
	for _, want := range []string{
		"Ktlspolicy socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock",
		"Stlsgate_tls_server", "Stlsgate_tls_rcpt", "Stlsgate_srv_features",
		"LOCAL_TLS_SERVER\nR$*\t\t$: $1 $| $>tlsgate_tls_server $1\n",
		"LOCAL_TLS_RCPT\n", "LOCAL_SRV_FEATURES\n",
	} {
		if !strings.Contains(after, want) {
			t.Errorf("after MAILER(): no %q in\n%s", want, after)
		}
	}
	if strings.Contains(before+after, "socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock')") || strings.Contains(after, "LOCAL_TRY_TLS") {
		t.Errorf("the access map is tlsgate's, or STARTTLS is forced:\n%s\n%s", before, after)
	}
	for _, l := range sm.Before {
		if strings.HasPrefix(l, "LOCAL_") {
			t.Errorf("%s before MAILER()", l)
		}
	}

	// Milter only: no map, no rulesets. Outbound only: no srv_features.
	sm, err = ForSendmail(mustParse(t, `mta = "sendmail"
[milter]
listen = "unix:/run/tlsgate/milter.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.inbound]
  encryption = true
`), SendmailFiles{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.After) != 0 || strings.Contains(strings.Join(sm.Before, "\n"), "access_db") || strings.Contains(strings.Join(sm.Before, "\n"), "GroupReadableKeyFile") {
		t.Errorf("milter-only lines:\n%s", sm.Text("t", "x"))
	}
	sm, err = ForSendmail(mustParse(t, strings.Replace(sendmailConf, "validate_cert = true", "encryption = true", 1)), SendmailFiles{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := strings.Join(sm.After, "\n"); strings.Contains(a, "srv_features") || !strings.Contains(a, "tls_server") {
		t.Errorf("outbound without certificate requests:\n%s", a)
	}
}

// debianMC is Debian 12's /etc/mail/sendmail.mc as its sendmail package
// writes it, prepared for m4 with the cf files of the lab cache: cf.m4
// and Debian's autoconf.m4 from there, the two site files it includes
// left out.
func debianMC(t *testing.T, cf string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/debian-sendmail.mc")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "include(`/usr/share/sendmail/cf/m4/cf.m4')dnl",
		"include(`"+cf+"m4/cf.m4')dnl\ninclude(`"+cf+"debian/autoconf.m4')dnl", 1)
	s = regexp.MustCompile("(?m)^include\\(`/etc/mail/m4/[a-z]+\\.m4'\\)dnl\n").ReplaceAllString(s, "")
	if strings.Contains(s, "`/usr/share/sendmail") {
		t.Fatal("testdata/debian-sendmail.mc includes more than cf.m4 from /usr/share/sendmail")
	}
	return s
}

// m4 runs m4 on an .mc text with the cf files in cf and returns the .cf
// and what m4 said on stderr.
func m4(t *testing.T, cf, mc string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.mc")
	if err := os.WriteFile(path, []byte(mc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("m4", "-D_CF_DIR_="+cf, path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("m4: %v\n%s", err, stderr.String())
	}
	return string(out), stderr.String()
}

// TestSendmailDebianMC merges the lines into Debian's own sendmail.mc and
// runs Sendmail's m4 files over the result: no warning; Debian's hash
// access map stays the only one; tlsgate's map, filter and rulesets are
// in; GroupReadableKeyFile is added once, also after Debian's
// starttls.m4 added it; the filters defined before come after tlsgate's.
func TestSendmailDebianMC(t *testing.T) {
	cf := sendmailCF(t)
	p := mustParse(t, sendmailConf)
	for _, tc := range []struct {
		name, extra string
		filters     string
	}{
		{"as Debian ships it", "", "tlsgate"},
		{"with starttls.m4's DontBlameSendmail and OpenDKIM", "define(`confDONT_BLAME_SENDMAIL', defn(`confDONT_BLAME_SENDMAIL')`,GroupReadableKeyFile')dnl\nINPUT_MAIL_FILTER(`opendkim', `S=inet:8891@localhost')dnl\n", "tlsgate, opendkim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(debianMC(t, cf), "MAILER_DEFINITIONS\n", tc.extra+"MAILER_DEFINITIONS\n", 1)
			mc, err := ParseMC("sendmail.mc", []byte(text))
			if err != nil {
				t.Fatal(err)
			}
			sm, err := ForSendmail(p, SendmailFiles{GroupReadableKey: true}, mc)
			if err != nil {
				t.Fatal(err)
			}
			if len(sm.Conflicts) > 0 {
				t.Fatalf("conflicts: %q", sm.Conflicts)
			}
			merged := ApplySendmail(mc, sm)
			out, warnings := m4(t, cf, string(merged))
			if warnings != "" {
				t.Errorf("m4 warned:\n%s", warnings)
			}
			if got := regexp.MustCompile(`(?m)^Kaccess .*$`).FindAllString(out, -1); len(got) != 1 || got[0] != "Kaccess hash -T<TMPF> /etc/mail/access" {
				t.Errorf("access maps: %q, want Debian's one", got)
			}
			for _, want := range []string{
				"\nKtlspolicy socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock\n",
				"\nO InputMailFilters=" + tc.filters + "\n",
				"\nXtlsgate, S=unix:/run/tlsgate/milter.sock, F=T, T=C:30s;S:10s;R:10s;E:30s\n",
				"\nO CACertFile=/etc/mail/tls/tlsgate-ca.pem\n",
				"\nStls_server\nR$*\t\t\t$: $1 $| $>\"Local_tls_server\" $1\n",
				"\nSLocal_tls_server\nR$*\t\t$: $1 $| $>tlsgate_tls_server $1\n",
				"\nSLocal_tls_rcpt\n", "\nSLocal_srv_features\n", "\nStlsgate_tls_rcpt\n",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("the .cf lacks %q", strings.TrimSpace(want))
				}
			}
			if dbs := regexp.MustCompile(`(?m)^O DontBlameSendmail=.*$`).FindString(out); strings.Count(dbs, "GroupReadableKeyFile") != 1 || !strings.Contains(dbs, "TrustStickyBit") {
				t.Errorf("%s: want Debian's options and GroupReadableKeyFile once", dbs)
			}
			// Applying again changes nothing.
			mc2, err := ParseMC("sendmail.mc", merged)
			if err != nil {
				t.Fatal(err)
			}
			sm2, err := ForSendmail(p, SendmailFiles{GroupReadableKey: true}, mc2)
			if err != nil {
				t.Fatal(err)
			}
			if again := ApplySendmail(mc2, sm2); string(again) != string(merged) {
				t.Errorf("a second apply changed the .mc:\n%s", Diff("first", "second", merged, again))
			}
		})
	}
}

// TestSendmailWithoutAccessMap: an .mc without FEATURE(access_db) gets an
// optional one, which TLS_connection needs; m4 stays silent.
func TestSendmailWithoutAccessMap(t *testing.T) {
	cf := sendmailCF(t)
	sm, err := ForSendmail(mustParse(t, sendmailConf), SendmailFiles{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	head := "divert(-1)\ninclude(`" + cf + "m4/cf.m4')\ndivert(0)dnl\nOSTYPE(`linux')dnl\n"
	const mailers = "MAILER(`local')dnl\nMAILER(`smtp')dnl\n"
	out, warnings := m4(t, cf, head+strings.Join(sm.Before, "\n")+"\n"+mailers+strings.Join(sm.After, "\n")+"\n")
	if warnings != "" {
		t.Errorf("m4 warned:\n%s", warnings)
	}
	if got := regexp.MustCompile(`(?m)^Kaccess .*$`).FindAllString(out, -1); len(got) != 1 || got[0] != "Kaccess hash -o -T<TMPF> /etc/mail/access" {
		t.Errorf("access maps: %q", got)
	}
	if !strings.Contains(out, "\nSTLS_connection\n") {
		t.Error("no TLS_connection ruleset")
	}
	// Placed before MAILER(), the rulesets make m4 warn.
	if _, warnings := m4(t, cf, head+strings.Join(sm.Before, "\n")+"\n"+strings.Join(sm.After, "\n")+"\n"+mailers); !strings.Contains(warnings, "MAILER() should be before LOCAL_TLS_SERVER") {
		t.Errorf("m4 did not warn about LOCAL_TLS_SERVER before MAILER(): %q", warnings)
	}
}

// TestSendmailConflicts: what tlsgate cannot merge by itself is named,
// with the line and what to do.
func TestSendmailConflicts(t *testing.T) {
	p := mustParse(t, sendmailConf)
	for _, tc := range []struct{ name, mc, want string }{
		{"own tls_server ruleset", "FEATURE(`access_db')dnl\nMAILER(`smtp')dnl\nLOCAL_TLS_SERVER\nR$*\t$@ OK\n", "sendmail.mc:3 has its own LOCAL_TLS_SERVER: put these three lines first in it"},
		{"earlier tlsgate access map", "FEATURE(`access_db', `socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock')dnl\nMAILER(`smtp')dnl\n", "sendmail.mc:1 is tlsgate wiring from an earlier install"},
		{"filters after MAILER", "MAILER(`smtp')dnl\ndefine(`confINPUT_MAIL_FILTERS', `opendkim')dnl\n", "sendmail.mc:2 sets confINPUT_MAIL_FILTERS after the MAILER() lines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc, err := ParseMC("sendmail.mc", []byte(tc.mc))
			if err != nil {
				t.Fatal(err)
			}
			sm, err := ForSendmail(p, SendmailFiles{}, mc)
			if err != nil {
				t.Fatal(err)
			}
			if len(sm.Conflicts) != 1 || !strings.Contains(sm.Conflicts[0], tc.want) {
				t.Errorf("conflicts %q, want one with %q", sm.Conflicts, tc.want)
			}
		})
	}
	for _, bad := range []string{BlockBegin + "\nx\n", BlockEnd + "\n", BlockBegin + "\n" + BlockBegin + "\n" + BlockEnd + "\n"} {
		if _, err := ParseMC("sendmail.mc", []byte(bad)); err == nil {
			t.Errorf("ParseMC(%q) did not fail", bad)
		}
	}
}

// FuzzApplySendmail: any .mc text either fails to parse or merges, and
// merging the result again gives the same text.
func FuzzApplySendmail(f *testing.F) {
	f.Add("FEATURE(`access_db')dnl\nMAILER(`smtp')dnl\n")
	f.Add(BlockBegin + "\nold\n" + BlockEnd + "\nMAILER_DEFINITIONS\n")
	f.Add("")
	p, err := policyForFuzz()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		mc, err := ParseMC("f.mc", []byte(text))
		if err != nil {
			return
		}
		sm, err := ForSendmail(p, SendmailFiles{}, mc)
		if err != nil {
			t.Fatal(err)
		}
		once := ApplySendmail(mc, sm)
		mc2, err := ParseMC("f.mc", once)
		if err != nil {
			t.Fatalf("the merged text does not parse: %v\n%s", err, once)
		}
		sm2, err := ForSendmail(p, SendmailFiles{}, mc2)
		if err != nil {
			t.Fatal(err)
		}
		if twice := ApplySendmail(mc2, sm2); string(twice) != string(once) {
			t.Fatalf("not idempotent:\n%s", Diff("once", "twice", once, twice))
		}
	})
}

func policyForFuzz() (*policy.Policy, error) { return policy.Parse("t.toml", []byte(sendmailConf)) }
