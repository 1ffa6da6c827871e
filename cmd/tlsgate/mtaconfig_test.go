package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMTAConfigMainCF: merged with a main.cf given as a file, the output
// adds tlsgate's milter to the existing list and leaves the global
// milter_default_action alone.
func TestMTAConfigMainCF(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tlsgate.toml")
	os.WriteFile(conf, []byte(`mta = "postfix"
[milter]
listen = "unix:/var/spool/postfix/tlsgate/milter.sock"
`), 0o644)
	main := filepath.Join(dir, "main.cf")
	os.WriteFile(main, []byte("compatibility_level = 3.6\nsmtpd_milters = inet:localhost:8891\nmilter_default_action = accept\n"), 0o644)
	out, errs, code := runCLI(t, "mta-config", "-c", conf, "--main-cf", main)
	if code != exitOK {
		t.Fatalf("code %d: %s", code, errs)
	}
	if !strings.Contains(out, "\nsmtpd_milters = { unix:tlsgate/milter.sock, default_action=tempfail }, inet:localhost:8891\n") || strings.Contains(out, "\nmilter_default_action") {
		t.Errorf("output:\n%s", out)
	}
	if _, errs, code := runCLI(t, "mta-config", "-c", conf, "--main-cf", main, "--apply"); code != exitUsage || !strings.Contains(errs, "--postconf-dir") {
		t.Errorf("--apply with --main-cf: code %d %s", code, errs)
	}
	if _, errs, code := runCLI(t, "mta-config", "-c", conf, "--postconf-dir", filepath.Join(dir, "none")); code != exitUsage || !strings.Contains(errs, "cannot read the current main.cf") {
		t.Errorf("no main.cf: code %d %s", code, errs)
	}
}

// TestMTAConfigSendmailApply: --apply puts the blocks into the .mc after
// a backup, a second run changes nothing, and an .mc with its own
// LOCAL_TLS_SERVER is left alone with the reason.
func TestMTAConfigSendmailApply(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tlsgate.toml")
	os.WriteFile(conf, []byte(`mta = "sendmail"
[milter]
listen = "unix:/run/tlsgate/milter.sock"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  encryption = true
`), 0o644)
	mc := filepath.Join(dir, "sendmail.mc")
	orig := "divert(0)dnl\nFEATURE(`access_db')dnl\nMAILER_DEFINITIONS\nMAILER(`smtp')dnl\n"
	os.WriteFile(mc, []byte(orig), 0o640)
	out, errs, code := runCLI(t, "mta-config", "-c", conf, "--mc", mc, "--apply")
	if code != exitOK {
		t.Fatalf("code %d: %s%s", code, out, errs)
	}
	got, _ := os.ReadFile(mc)
	if !strings.Contains(string(got), "dnl tlsgate mta-config: begin (before MAILER)\n") || !strings.HasSuffix(string(got), "dnl tlsgate mta-config: end\n") ||
		!strings.Contains(out, "+Ktlspolicy socket -T<TMPF> -d5 unix:/run/tlsgate/policy.sock") {
		t.Errorf("after --apply:\n%s\noutput:\n%s", got, out)
	}
	if b, err := os.ReadFile(mc + ".before-tlsgate"); err != nil || string(b) != orig {
		t.Errorf("backup: %q %v", b, err)
	}
	if fi, _ := os.Stat(mc); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the .mc's 0640 kept", fi.Mode().Perm())
	}
	if out, _, code := runCLI(t, "mta-config", "-c", conf, "--mc", mc, "--apply"); code != exitOK || !strings.Contains(out, "nothing changed") {
		t.Errorf("second --apply: code %d\n%s", code, out)
	}

	own := orig + "LOCAL_TLS_SERVER\nR$*\t$@ OK\n"
	os.WriteFile(mc, []byte(own), 0o644)
	if _, errs, code := runCLI(t, "mta-config", "-c", conf, "--mc", mc, "--apply"); code != exitUsage || !strings.Contains(errs, "has its own LOCAL_TLS_SERVER") {
		t.Errorf("own ruleset: code %d %s", code, errs)
	}
	if b, _ := os.ReadFile(mc); string(b) != own {
		t.Error("the .mc changed despite the conflict")
	}
}
