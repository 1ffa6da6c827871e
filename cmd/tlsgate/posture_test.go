package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var postureArgs = []string{"--since", "all", "--now", "2026-12-08T00:00:00Z", "--min-days", "0"}

// TestPostureCommand runs tlsgate posture on the captured lab logs in
// each format.
func TestPostureCommand(t *testing.T) {
	args := append([]string{"posture", "-c", labLogs + "current.toml"}, postureArgs...)
	logs := []string{labLogs + "postfix.log", labLogs + "sendmail.log"}

	out, errs, code := runCLI(t, append(args, logs...)...)
	if code != exitOK {
		t.Fatalf("text: exit %d %s", code, errs)
	}
	for _, want := range []string{
		"Outbound, by next-hop domain", "Inbound, by sender domain",
		"verified-partner: would pass under enforce: 4 of 4 sessions",
		"ready: verified, min_bits = 128",
		"not ready: 1 plaintext session, last 2026-12-07",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}

	out, _, code = runCLI(t, append(append(args, "--format", "json"), logs...)...)
	var r struct {
		Peers []struct {
			Peer     string `json:"peer"`
			Sessions int    `json:"sessions"`
		} `json:"peers"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || len(r.Peers) < 10 {
		t.Errorf("json: exit %d, %d peers", code, len(r.Peers))
	}

	// The TOML proposals pass tlsgate check, alone and appended to the
	// configuration they were made against.
	out, _, code = runCLI(t, append(append(args, "--format", "toml"), logs...)...)
	if code != exitOK || !strings.Contains(out, "mode  = \"monitor\"") || !strings.Contains(out, "# outbound evidence: 20 sessions") {
		t.Fatalf("toml: exit %d\n%s", code, out)
	}
	dir := t.TempDir()
	cur, err := os.ReadFile(labLogs + "current.toml")
	if err != nil {
		t.Fatal(err)
	}
	for name, conf := range map[string]string{"alone.toml": "mta = \"postfix\"\n\n" + out, "appended.toml": string(cur) + "\n" + out} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(conf), 0o644)
		cout, cerrs, code := runCLI(t, "check", "--no-detect", "-c", path)
		if code != exitOK || !strings.Contains(cout, "OK: mta=postfix") {
			t.Errorf("check %s: exit %d %s%s\n%s", name, code, cout, cerrs, conf)
		}
	}

	// --out and standard input.
	html := filepath.Join(dir, "posture.html")
	data, _ := os.ReadFile(logs[0])
	var stdout, stderr bytes.Buffer
	code = run(append(append(args, "--format", "html", "--out", html), "-"), bytes.NewReader(data), &stdout, &stderr)
	page, err := os.ReadFile(html)
	if code != exitOK || err != nil || !bytes.Contains(page, []byte("<table id=\"peers\">")) || stdout.Len() != 0 {
		t.Errorf("html from stdin: exit %d %v %s", code, err, stderr.String())
	}
	for _, bad := range []string{"http://", "https://", "src=", "@import", "url("} {
		if bytes.Contains(page, []byte(bad)) {
			t.Errorf("html page refers to an external resource: %q", bad)
		}
	}

	// Usage errors.
	for _, bad := range [][]string{
		{"posture"},
		{"posture", "--format", "xml", logs[0]},
		{"posture", "--since", "yesterday", logs[0]},
		{"posture", "-c", "/nonexistent.toml", logs[0]},
		{"posture", filepath.Join(dir, "missing.log")},
		{"posture", "-", "-"},
	} {
		if _, _, code := runCLI(t, bad...); code != exitUsage {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}

// TestPostureWarnsOnStderr: with --format json the warnings go to
// standard error too, so they are not lost in a pipeline.
func TestPostureWarnsOnStderr(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	data, _ := os.ReadFile(labLogs + "postfix.log")
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if !strings.Contains(l, "TLS connection established") && !strings.Contains(l, "TLS connection reused") {
			b.WriteString(l)
		}
	}
	path := filepath.Join(dir, "level0.log")
	os.WriteFile(path, []byte(b.String()), 0o644)
	_, errs, code := runCLI(t, append(append([]string{"posture", "-c", "", "--format", "json"}, postureArgs...), path)...)
	if code != exitOK || !strings.Contains(errs, "set smtp_tls_loglevel = 1") || !strings.Contains(errs, "set smtpd_tls_loglevel = 1") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}
