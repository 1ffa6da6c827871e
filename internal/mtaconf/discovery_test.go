package mtaconf

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const discoveryPostfixConf = `mta = "postfix"
[policyd]
listen = "unix:/var/spool/postfix/tlsgate/policy.sock"
[discovery]
mta_sts = true
dane = true
`

// TestDiscoveryPostfix: with [discovery], Postfix asks tlsgate's map even
// without outbound endpoints, and DANE's settings merge by their rules:
// a weaker value is raised, one that already serves DANE is kept.
func TestDiscoveryPostfix(t *testing.T) {
	pf, err := ForPostfix(mustParse(t, discoveryPostfixConf), Options{})
	if err != nil {
		t.Fatal(err)
	}
	debianRelay := "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
	for _, tc := range []struct {
		name string
		// defaults are what postconf -x says of the parameters main.cf
		// does not set; main what main.cf sets.
		defaults, main map[string]string
		want           map[string]string
		same           []string
	}{
		{
			name:     "Debian 12's defaults",
			defaults: map[string]string{"smtp_dns_support_level": "", "smtp_host_lookup": "dns", "smtp_tls_dane_insecure_mx_policy": "may"},
			main:     map[string]string{"smtpd_relay_restrictions": debianRelay},
			want: map[string]string{
				"smtp_tls_policy_maps":             ourMap,
				"smtp_dns_support_level":           "dnssec",
				"smtp_host_lookup":                 "dns",
				"smtp_tls_dane_insecure_mx_policy": "dane",
			},
		},
		{
			name: "weaker values are raised",
			main: map[string]string{"smtp_dns_support_level": "enabled", "smtp_host_lookup": "native", "smtp_tls_dane_insecure_mx_policy": "may"},
			want: map[string]string{"smtp_dns_support_level": "dnssec", "smtp_host_lookup": "dns", "smtp_tls_dane_insecure_mx_policy": "dane"},
		},
		{
			name: "values that serve DANE are kept",
			main: map[string]string{"smtp_dns_support_level": "dnssec", "smtp_host_lookup": "dns, native", "smtp_tls_dane_insecure_mx_policy": "dane"},
			same: []string{"smtp_dns_support_level", "smtp_host_lookup", "smtp_tls_dane_insecure_mx_policy"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Values{}
			for _, n := range pf.Names() {
				v[n] = Current{Value: tc.defaults[n]}
			}
			for n, val := range tc.main {
				v[n] = Current{Value: val, Set: true}
			}
			changes, err := pf.Merge(v)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Change{}
			for _, c := range changes {
				got[c.Name] = c
			}
			for n, want := range tc.want {
				if c := got[n]; !c.Changed || c.New != want {
					t.Errorf("%s: changed %v to %q, want %q", n, c.Changed, c.New, want)
				}
			}
			for _, n := range tc.same {
				if c, ok := got[n]; !ok || c.Changed {
					t.Errorf("%s: %+v, want it left alone at %q", n, c, tc.main[n])
				}
			}
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
	changes, err := pf.Merge(Values{"smtpd_relay_restrictions": {Value: debianRelay, Set: true}})
	if err != nil {
		t.Fatal(err)
	}
	text := pf.Text("t.toml", "main.cf", changes)
	for _, want := range []string{
		"\nsmtp_tls_policy_maps = " + ourMap + "\n",
		"\nsmtp_dns_support_level = dnssec\n", "\nsmtp_host_lookup = dns\n", "\nsmtp_tls_dane_insecure_mx_policy = dane\n",
		"\n#   apt install unbound\n", "\n#   echo 'nameserver 127.0.0.1' >/etc/resolv.conf\n", `#   resolver = "127.0.0.1:53" in tlsgate's [discovery]`,
		"keep smtp_tls_CApath = /etc/ssl/certs",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Postfix lines lack %q:\n%s", want, text)
		}
	}

	// MTA-STS alone: the map, none of DANE's settings.
	pf, err = ForPostfix(mustParse(t, strings.Replace(discoveryPostfixConf, "dane = true\n", "", 1)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	changes, err = pf.Merge(Values{"smtpd_relay_restrictions": {Value: debianRelay, Set: true}})
	if err != nil {
		t.Fatal(err)
	}
	if text := pf.Text("t.toml", "main.cf", changes); strings.Contains(text, "dnssec") || strings.Contains(text, "unbound") || !strings.Contains(text, "\nsmtp_tls_policy_maps = "+ourMap+"\n") {
		t.Errorf("MTA-STS alone:\n%s", text)
	}
}

// TestDiscoveryMainCFDefaults: read from main.cf without Postfix, DANE's
// parameters have Postfix 3.7's defaults, the insecure-MX policy's
// depending on smtp_tls_security_level as its default expression does.
func TestDiscoveryMainCFDefaults(t *testing.T) {
	names := []string{"smtp_dns_support_level", "smtp_host_lookup", "smtp_tls_dane_insecure_mx_policy"}
	for _, tc := range []struct{ main, insecure string }{
		{"compatibility_level = 3.6\n", "may"},
		{"smtp_tls_security_level = dane\n", "dane"},
	} {
		path := filepath.Join(t.TempDir(), "main.cf")
		if err := os.WriteFile(path, []byte(tc.main), 0o644); err != nil {
			t.Fatal(err)
		}
		v, err := ReadMainCF(path, names)
		if err != nil {
			t.Fatal(err)
		}
		if v["smtp_dns_support_level"] != (Current{}) || v["smtp_host_lookup"] != (Current{Value: "dns"}) || v["smtp_tls_dane_insecure_mx_policy"] != (Current{Value: tc.insecure}) {
			t.Errorf("%q: %+v", tc.main, v)
		}
	}
}

// TestDiscoverySendmail: with [discovery] mta_sts, FEATURE(`sts') on
// tlsgate's socket goes before MAILER(), also without outbound
// endpoints; merged into Debian's sendmail.mc beside tlsgate's own map,
// m4 stays silent, the .cf has the sts map and Sendmail's tls_rcpt asks
// tlsgate's ruleset before its MTA-STS check; applying again changes
// nothing. An MTA-STS resolver of the administrator's is a conflict.
func TestDiscoverySendmail(t *testing.T) {
	const feature = "FEATURE(`sts', `socket -d5 -T<TMPF> unix:/run/tlsgate/policy.sock')dnl"
	sm, err := ForSendmail(mustParse(t, `mta = "sendmail"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[discovery]
mta_sts = true
`), SendmailFiles{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(sm.Before, "\n"), feature) || len(sm.After) != 0 {
		t.Errorf("MTA-STS alone:\n%s", sm.Text("t.toml", "no sendmail.mc"))
	}

	cf := sendmailCF(t)
	p := mustParse(t, sendmailConf+"[discovery]\nmta_sts = true\n")
	mc, err := ParseMC("sendmail.mc", []byte(debianMC(t, cf)))
	if err != nil {
		t.Fatal(err)
	}
	sm, err = ForSendmail(p, SendmailFiles{GroupReadableKey: true}, mc)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.Conflicts) > 0 {
		t.Fatalf("conflicts: %q", sm.Conflicts)
	}
	if !strings.Contains(strings.Join(sm.Before, "\n"), feature) {
		t.Fatalf("no FEATURE(`sts') before MAILER():\n%s", strings.Join(sm.Before, "\n"))
	}
	merged := ApplySendmail(mc, sm)
	out, warnings := m4(t, cf, string(merged))
	if warnings != "" {
		t.Errorf("m4 warned:\n%s", warnings)
	}
	for _, want := range []string{
		"\nKsts socket -d5 -T<TMPF> unix:/run/tlsgate/policy.sock\n",
		"\nKtlspolicy socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock\n",
		"\nO StrictTransportSecurity=true\n", "\nO SetCertAltnames=true\n", "\nSSTS_Check\n",
		"\nStls_rcpt\nR$*\t\t\t$: $1 $| $>\"Local_tls_rcpt\" $1\nR$* $| $#$*\t\t$#$2\nR$* $| $*\t\t$: $1\nR$*\t\t\t$: $1 $| $>\"STS_Check\" $1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the .cf lacks %q", strings.TrimSpace(want))
		}
	}
	if got := regexp.MustCompile(`(?m)^Kaccess .*$`).FindAllString(out, -1); len(got) != 1 || got[0] != "Kaccess hash -T<TMPF> /etc/mail/access" {
		t.Errorf("access maps: %q, want Debian's one", got)
	}
	mc2, err := ParseMC("sendmail.mc", merged)
	if err != nil {
		t.Fatal(err)
	}
	sm2, err := ForSendmail(p, SendmailFiles{GroupReadableKey: true}, mc2)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm2.Conflicts) > 0 {
		t.Errorf("conflicts after apply: %q", sm2.Conflicts)
	}
	if again := ApplySendmail(mc2, sm2); string(again) != string(merged) {
		t.Errorf("a second apply changed the .mc:\n%s", Diff("first", "second", merged, again))
	}

	own, err := ParseMC("sendmail.mc", []byte("FEATURE(`sts', `socket -d5 -T<TMPF> inet:5461@127.0.0.1')dnl\nMAILER(`smtp')dnl\n"))
	if err != nil {
		t.Fatal(err)
	}
	sm, err = ForSendmail(p, SendmailFiles{}, own)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.Conflicts) != 1 || !strings.Contains(sm.Conflicts[0], "sendmail.mc:1 has its own FEATURE(`sts')") {
		t.Errorf("conflicts %q, want one for the administrator's FEATURE(`sts')", sm.Conflicts)
	}
}
