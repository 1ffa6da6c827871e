package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckCertificateExpiry runs `tlsgate check` on a configuration whose
// server certificate (made at test time) has expired or expires soon.
func TestCheckCertificateExpiry(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name      string
		notAfter  time.Time
		wantCode  int
		wantErr   string // after "FILE: server cert CERTFILE "; DATE is its NotAfter
		wantOK    bool
		forbidErr string
	}{
		{name: "expired", notAfter: now.Add(-3 * 24 * time.Hour), wantCode: exitUsage,
			wantErr: "expired on DATE", forbidErr: "warning:"},
		{name: "expires in 10 days", notAfter: now.Add(10*24*time.Hour + time.Hour), wantCode: exitOK,
			wantErr: "expires on DATE (in 10 days)", wantOK: true},
		{name: "expires in 60 days", notAfter: now.Add(60 * 24 * time.Hour), wantCode: exitOK, wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := issueServerCert(t, dir, tc.notAfter.Add(-90*24*time.Hour), tc.notAfter)
			conf := filepath.Join(dir, "tlsgate.toml")
			body := "mta = \"postfix\"\n[certs]\nserver_cert = \"" + c.CertFile + "\"\n"
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			out, errs, code := runCLI(t, "check", "-c", conf, "--no-detect")
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, out, errs)
			}
			if tc.wantErr == "" {
				if errs != "" {
					t.Errorf("unexpected stderr: %q", errs)
				}
			} else {
				prefix := conf + ": "
				if tc.wantCode == exitOK {
					prefix += "warning: "
				}
				if want := prefix + "server cert " + c.CertFile + " " + strings.Replace(tc.wantErr, "DATE", c.Cert.NotAfter.UTC().Format("2006-01-02"), 1) + "\n"; errs != want {
					t.Errorf("stderr %q\nwant   %q", errs, want)
				}
			}
			if tc.forbidErr != "" && strings.Contains(errs, tc.forbidErr) {
				t.Errorf("stderr has %q: %q", tc.forbidErr, errs)
			}
			if ok := strings.Contains(out, ": OK: ") && strings.Contains(out, "1 certificate(s) checked for expiry"); ok != tc.wantOK {
				t.Errorf("summary printed = %v, want %v: %q", ok, tc.wantOK, out)
			}
		})
	}
}

// TestCheckUnreadableCA: a file of the CA store that the store leaves out
// (cut short while being written, a dangling link) fails check at the line
// of [certs] ca_store, naming the file and why.
func TestCheckUnreadableCA(t *testing.T) {
	conf := exampleWithStore(t)
	store := filepath.Join(filepath.Dir(conf), "ca")
	ca, err := os.ReadFile(filepath.Join(store, "lab-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	line := 0
	data, _ := os.ReadFile(conf)
	for i, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "ca_store") {
			line = i + 1
		}
	}
	for _, tc := range []struct {
		name, want string
		make       func(path string) error
	}{
		{"cut short", "PEM blocks cannot be read", func(path string) error { return os.WriteFile(path, ca[:len(ca)/2], 0o644) }},
		{"dangling link", "no such file or directory", func(path string) error { return os.Symlink("gone.pem", path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(store, "partner-ca.pem")
			os.Remove(path)
			if err := tc.make(path); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(path)
			out, errs, code := runCLI(t, "check", "-c", conf, "--no-detect")
			want := fmt.Sprintf("%s:%d: [certs] ca_store: %s left out of the CA bundle: ", conf, line, path)
			if code != exitUsage || out != "" || !strings.HasPrefix(errs, want) || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d stdout %q stderr %q\nwant exit 2 and %q ... %q", code, out, errs, want, tc.want)
			}
		})
	}
	if _, errs, code := runCLI(t, "check", "-c", conf, "--no-detect"); code != exitOK {
		t.Errorf("without the bad file: exit %d %s", code, errs)
	}
}
