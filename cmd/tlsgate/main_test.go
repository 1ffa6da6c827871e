package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

const example = "../../deploy/tlsgate.example.toml"

// exampleWithStore copies the example configuration with its CA store
// (under /etc/tlsgate/) pointed at a temporary directory holding the lab
// CA (made at test time). The bundle and trust-anchor paths stay as
// shipped: check reads them, it does not write them.
func exampleWithStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pki := testpki.NewT(t)
	store := filepath.Join(dir, "ca")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(pki.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "lab-ca.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	conf := offlineDiscovery(t, strings.ReplaceAll(string(data), "/etc/tlsgate/", dir+"/"), dir)
	path := filepath.Join(dir, "tlsgate.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheck(t *testing.T) {
	out, errs, code := runCLI(t, "check", "-c", exampleWithStore(t), "--no-detect")
	if code != 0 || !strings.Contains(out, "OK: mta=postfix 3.7 endpoints=3") || !strings.Contains(out, "1 certificate(s) checked for expiry") {
		t.Fatalf("check example: code %d\n%s%s", code, out, errs)
	}
	_, errs, code = runCLI(t, "check", "-c", example, "--no-detect")
	if code != exitUsage || !regexp.MustCompile(`^`+regexp.QuoteMeta(example)+`:\d+: \[certs\] ca_store: CA store /etc/tlsgate/ca does not exist`).MatchString(errs) {
		t.Errorf("missing CA store: code %d %q, want FILE:LINE: [certs] ca_store: ...", code, errs)
	}
	bad, _ := filepath.Glob("../../internal/policy/testdata/bad/*.toml")
	for _, f := range bad {
		out, errs, code := runCLI(t, "check", "-c", f, "--no-detect")
		if code != exitUsage || out != "" || !strings.Contains(errs, f+":") || !strings.Contains(errs, "nothing was changed") {
			t.Errorf("check %s: code %d stdout %q stderr %q", f, code, out, errs)
		}
	}
}

func TestCheckDetectsOlderPostfix(t *testing.T) {
	dir := t.TempDir()
	// A fake postconf on PATH stands in for an old installed Postfix; the
	// real one is exercised by the harness tests.
	script := "#!/bin/sh\necho 3.5.18\n"
	if err := os.WriteFile(filepath.Join(dir, "postconf"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	_, errs, code := runCLI(t, "check", "-c", exampleWithStore(t))
	if code != exitUsage || !strings.Contains(errs, `installed Postfix is 3.5.18: set postfix_version = "3.5"`) {
		t.Fatalf("code %d stderr %q", code, errs)
	}
}

func TestQueryOutbound(t *testing.T) {
	example := exampleOffline(t, example)
	tests := []struct {
		key, want string
		code      int
	}{
		{"[MX1.Company-B.example]:25", "OK secure match=mx1.company-b.example ciphers=high\n", 0},
		{".company-b.example", "OK secure match=mx1.company-b.example ciphers=high\n", 0},
		{"company-c.example", "NOTFOUND \n", 1}, // monitor
		{"unrelated.example", "NOTFOUND \n", 1},
		{"[broken", "TEMP cannot decide key: policy: next hop \"[broken\": missing ']'\n", 3},
	}
	for _, tc := range tests {
		out, errs, code := runCLI(t, "query", "-c", example, "outbound", tc.key)
		if out != tc.want || code != tc.code {
			t.Errorf("query %q = %q (%d), want %q (%d); stderr %q", tc.key, out, code, tc.want, tc.code, errs)
		}
	}
	_, errs, _ := runCLI(t, "query", "-c", example, "outbound", "company-c.example")
	if !strings.Contains(errs, "monitor mode") {
		t.Errorf("monitor note missing: %q", errs)
	}
}

func TestQueryInbound(t *testing.T) {
	tests := []struct {
		args []string
		want []string
		code int
	}{
		{[]string{"--client-addr", "203.0.113.9", "--sender", "a@elsewhere.example"}, []string{"result: none"}, 0},
		{[]string{"--client-addr", "192.0.2.10"}, []string{"endpoints: company-b", "deferred", "check=encryption want=TLS got=plaintext"}, 1},
		{[]string{"--client-addr", "198.51.100.7", "--client-name", "mx1.company-b.example", "--tls-version", "TLSv1.3", "--cipher", "TLS_AES_256_GCM_SHA384",
			"--cipher-bits", "256", "--verify", "trusted", "--cert-subject", "mx1.company-b.example", "--cert-issuer", "Example Issuing CA 2"}, []string{"result: pass"}, 0},
		{[]string{"--client-addr", "198.51.100.7", "--tls-version", "TLSv1.2", "--cipher-bits", "56", "--verify", "trusted", "--cert-subject", "mx1.company-b.example", "--cert-issuer", "Other CA"},
			[]string{`check=min_bits want=">=128" got=56`, `check=issuer_cn want="Example Issuing CA 2" got="Other CA"`}, 1},
		{[]string{"--client-addr", "203.0.113.9", "--sender", "x@mx.company-c.example"}, []string{"monitor mode"}, 1},
	}
	for _, tc := range tests {
		args := append([]string{"query", "-c", example, "inbound"}, tc.args...)
		out, errs, code := runCLI(t, args...)
		if code != tc.code {
			t.Errorf("%v: code %d, want %d\n%s%s", tc.args, code, tc.code, out, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"query", "-c", example}, {"query", "-c", example, "sideways"}, {"check", "extra"}, {"query", "-c", example, "inbound", "--verify", "maybe", "--tls-version", "TLSv1.3"}} {
		if _, _, code := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: code %d, want %d", args, code, exitUsage)
		}
	}
	for _, cmd := range []string{"check", "query"} {
		out, _, code := runCLI(t, cmd, "-h")
		if code != 0 || !strings.Contains(out, "Usage: tlsgate "+cmd) {
			t.Errorf("%s -h: code %d output %q", cmd, code, out)
		}
	}
}

// offlineDiscovery rewrites the [discovery] of a configuration text for
// a test: the resolver a closed port of 127.0.0.1 (no DNS query may leave
// the machine, nor reach a resolver that would forward it), the cache
// file and control socket in dir.
func offlineDiscovery(t *testing.T, conf, dir string) string {
	t.Helper()
	conf = regexp.MustCompile(`(?m)^resolver\s*=.*$`).ReplaceAllString(conf, `resolver = "`+closedUDP(t)+`"`)
	conf = strings.ReplaceAll(conf, "/var/lib/tlsgate/discovery.cache", dir+"/discovery.cache")
	return strings.Replace(conf, "[discovery]\n", "[discovery]\ncontrol_socket = \""+dir+"/control.sock\"\n", 1)
}

// exampleOffline writes a copy of the configuration file path with
// offlineDiscovery and returns its path.
func exampleOffline(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(out, []byte(offlineDiscovery(t, string(data), dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// closedUDP returns "127.0.0.1:PORT" of a UDP port that nothing listens
// on: a query there is refused at once.
func closedUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}
