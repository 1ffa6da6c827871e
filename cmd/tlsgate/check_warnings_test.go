package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckWarnings: check prints the policy's warnings as
// FILE:LINE: warning: ... and still exits 0: an exception that ends within
// 14 days, and outbound addresses Postfix never asks for.
func TestCheckWarnings(t *testing.T) {
	end := time.Now().Add(5 * 24 * time.Hour).Format(time.DateOnly)
	conf := filepath.Join(t.TempDir(), "tlsgate.toml")
	body := `mta = "postfix"
[[endpoint]]
name  = "company-b"
hosts = [".company-b.example", "198.51.100.0/24"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name         = "labs"
hosts        = ["labs.company-b.example"]
exception_to = "company-b"
reason       = "CHG-4711"
expires      = ` + end + `
  [endpoint.outbound]
  encryption = true
`
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCLI(t, "check", "-c", conf, "--no-detect")
	if code != exitOK || !strings.Contains(out, "endpoints=2") || !strings.Contains(out, "exceptions=1") {
		t.Fatalf("code %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		conf + `:4: warning: endpoint "company-b" outbound: Postfix looks up its TLS policy with the next-hop domain`,
		conf + `:12: warning: the exception of endpoint "labs" to "company-b" ends on ` + end + ` (in `,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

// TestCheckExceptionWarningWindow: check warns about an exception 14 days
// ahead and not before, and says so when one has ended (the date is local
// midnight), each at the line of expires.
func TestCheckExceptionWarningWindow(t *testing.T) {
	day := func(n int) string { return time.Now().AddDate(0, 0, n).Format(time.DateOnly) }
	for _, tc := range []struct {
		expires, want string
	}{
		{day(15), ""},
		{day(13), ":11: warning: the exception of endpoint \"labs\" to \"company-b\" ends on " + day(13) + " (in 1"},
		{day(0), ":11: warning: the exception of endpoint \"labs\" to \"company-b\" ended on " + day(0) + ": inbound, \"company-b\"'s rules apply to its hosts again (CHG-4711)"},
	} {
		conf := filepath.Join(t.TempDir(), "tlsgate.toml")
		if err := os.WriteFile(conf, []byte(labsException("sendmail", tc.expires)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, errs, code := runCLI(t, "check", "-c", conf)
		if code != exitOK {
			t.Fatalf("expires %s: exit %d\n%s", tc.expires, code, errs)
		}
		if tc.want == "" {
			if strings.Contains(errs, "exception") {
				t.Errorf("expires %s: warned:\n%s", tc.expires, errs)
			}
		} else if !strings.Contains(errs, conf+tc.want) {
			t.Errorf("expires %s: stderr lacks %q:\n%s", tc.expires, conf+tc.want, errs)
		}
	}
}
