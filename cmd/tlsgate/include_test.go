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
	out, errs, code = runCLI(t, "mta-config", "-c", conf)
	if code != 0 || !strings.Contains(out, "check_policy_service { unix:"+dir+"/delegation.sock") {
		t.Errorf("mta-config: exit %d %s %s", code, out, errs)
	}
	bad := filepath.Join(dir, "conf.d/b.toml")
	os.WriteFile(bad, []byte("[[endpoint]]\nname = \"b\"\nhosts = [\"a.example\"]\n  [endpoint.outbound]\n  encryption = true\n"), 0o644)
	for _, args := range [][]string{{"check", "-c", conf, "--no-detect"}, {"query", "-c", conf, "outbound", "a.example"}, {"mta-config", "-c", conf}} {
		_, errs, code := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(errs, bad+`:3: host "a.example" of endpoint "b" is already listed by endpoint "a"`) || !strings.Contains(errs, "line 3 of "+filepath.Join(dir, "conf.d/a.toml")) {
			t.Errorf("%s with a duplicate in b.toml: exit %d %q", args[0], code, errs)
		}
	}
}
