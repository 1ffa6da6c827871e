package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandsSeeIncludedFiles: check, query and mta-config read the
// files the main file includes, as serve does (they all call
// policy.Load): check counts their endpoints and names a mistake in one
// of them with its file and line, query answers their hosts, mta-config
// wires the policy service an included pin needs.
func TestCommandsSeeIncludedFiles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tlsgate.toml")
	files := map[string]string{
		conf: `mta = "postfix"
include = ["conf.d/*.toml"]
[policyd]
listen = "unix:` + dir + `/policy.sock"
delegation_listen = "unix:` + dir + `/delegation.sock"
[[endpoint]]
name = "main"
hosts = ["main.example"]
  [endpoint.outbound]
  encryption = true
`,
		filepath.Join(dir, "conf.d/a.toml"): `[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  validate_cert = true
`,
		filepath.Join(dir, "conf.d/pinned.toml"): `[[endpoint]]
name = "pinned"
hosts = ["192.0.2.30"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["sha256:3D:95:34:A2:1B:7E:0F:C8:9D:11:5A:6B:E4:72:90:CC:41:0E:BA:58:77:23:9F:D6:8A:C5:13:44:60:B2:E9:0F"]
`,
	}
	for path, data := range files {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, errs, code := runCLI(t, "check", "-c", conf, "--no-detect")
	if code != exitOK || !strings.Contains(out, "endpoints=3 ") || !strings.Contains(out, " files=3") {
		t.Errorf("check: exit %d %q %q", code, out, errs)
	}
	out, errs, code = runCLI(t, "query", "-c", conf, "outbound", "a.example")
	if code != 0 || strings.TrimSpace(out) != "OK verify match=hostname" {
		t.Errorf("query a.example: exit %d %q %q", code, out, errs)
	}
	mainCF := filepath.Join(dir, "main.cf")
	os.WriteFile(mainCF, []byte("smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"), 0o644)
	out, errs, code = runCLI(t, "mta-config", "-c", conf, "--main-cf", mainCF)
	if code != 0 || !strings.Contains(out, "check_policy_service { unix:"+dir+"/delegation.sock") {
		t.Errorf("mta-config: exit %d %s %s", code, out, errs)
	}
	bad := filepath.Join(dir, "conf.d/b.toml")
	os.WriteFile(bad, []byte("[[endpoint]]\nname = \"b\"\nhosts = [\"a.example\"]\n  [endpoint.outbound]\n  encryption = true\n"), 0o644)
	for _, args := range [][]string{{"check", "-c", conf, "--no-detect"}, {"query", "-c", conf, "outbound", "a.example"}, {"mta-config", "-c", conf, "--main-cf", mainCF}} {
		_, errs, code := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(errs, bad+`:3: host "a.example" of endpoint "b" is already listed by endpoint "a"`) || !strings.Contains(errs, "line 3 of "+filepath.Join(dir, "conf.d/a.toml")) {
			t.Errorf("%s with a duplicate in b.toml: exit %d %q", args[0], code, errs)
		}
	}
}

// TestPostureAndWhatifSeeIncludedFiles: posture and whatif judge with the
// endpoints of included files as serve would. The lab's "mixed" endpoint
// moves to conf.d/mixed.toml: whatif finds the sessions that its enforce
// mode would refuse, and posture reports the endpoint's evidence, the
// same as with everything in one file.
func TestPostureAndWhatifSeeIncludedFiles(t *testing.T) {
	cur := readString(t, labLogs+"current.toml")
	const mixed = "[[endpoint]]\nname  = \"mixed\"\nhosts = [\"mx.mixed.test\", \"127.0.0.6\"]\nmode  = \"monitor\"\n  [endpoint.inbound]\n  encryption = true\n  min_bits   = 128\n"
	if !strings.Contains(cur, mixed) {
		t.Fatal("test setup: the lab's mixed endpoint is not as expected")
	}
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "conf.d"), 0o755)
	main := strings.Replace(cur, mixed, "", 1)
	main = strings.Replace(main, "mta = \"postfix\"\n", "mta = \"postfix\"\ninclude = [\"conf.d/*.toml\"]\n", 1)
	conf := writeFile(t, dir, "tlsgate.toml", main)
	writeFile(t, dir, "conf.d/mixed.toml", strings.Replace(mixed, "mode  = \"monitor\"", "mode  = \"enforce\"", 1))

	logs := []string{"--logs", labLogs + "postfix.log", labLogs + "sendmail.log", "--since", "all", "--now", "2026-12-08T00:00:00Z"}
	out, errs, code := runCLI(t, append([]string{"whatif", "-c", conf, "--current", labLogs + "current.toml"}, logs...)...)
	if code != exitFail || !strings.Contains(out, "inbound client mx.mixed.test[127.0.0.6]: 2 of 8 sessions (today 0), endpoint mixed") {
		t.Errorf("whatif with mixed in conf.d: exit %d\n%s%s", code, out, errs)
	}

	one, errs1, code1 := runCLI(t, append(append([]string{"posture", "-c", labLogs + "current.toml"}, postureArgs...), labLogs+"postfix.log", labLogs+"sendmail.log")...)
	inc, errs2, code2 := runCLI(t, append(append([]string{"posture", "-c", conf}, postureArgs...), labLogs+"postfix.log", labLogs+"sendmail.log")...)
	if code1 != exitOK || code2 != exitOK {
		t.Fatalf("posture: exit %d %s / %d %s", code1, errs1, code2, errs2)
	}
	if !strings.Contains(inc, "mixed") || !strings.Contains(inc, "not ready: 1 plaintext session") {
		t.Errorf("posture with mixed in conf.d lacks the endpoint's evidence:\n%s", inc)
	}
	// The reports differ only where they name the configuration file
	// or the mode the included file changed.
	if strings.Count(one, "mixed") != strings.Count(inc, "mixed") {
		t.Errorf("posture names mixed %d times with one file, %d with conf.d:\n%s\n----\n%s", strings.Count(one, "mixed"), strings.Count(inc, "mixed"), one, inc)
	}
}
