package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/control"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// TestServeDiscovery runs serve with a [discovery] table in this process
// against a resolver that refuses every query (the answers from real DNS
// and HTTPS are the lab's, internal/lab/e2e/discovery): the self-check
// turns DANE off with one error line, lookups answer the endpoints alone,
// the control socket (mode 0600) shows and purges the cache and explains
// answers to query, a reload that changes [discovery] is refused with
// "restart needed", and the cache file is written at stop.
func TestServeDiscovery(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "policy.sock")
	ctl := filepath.Join(dir, "control.sock")
	cache := filepath.Join(dir, "discovery.cache")
	conf := filepath.Join(dir, "tlsgate.toml")
	body := `mta = "postfix"
[policyd]
listen = "unix:` + sock + `"
[log]
syslog = "no"
level = "debug"
[discovery]
mta_sts = true
dane = true
resolver = "` + closedUDP(t) + `"
cache_file = "` + cache + `"
control_socket = "` + ctl + `"
[[endpoint]]
name = "enc"
hosts = ["sts.test"]
  [endpoint.outbound]
  encryption = true
`
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// postconf from a directory of its own, so that the host's Postfix
	// does not decide what the guard says.
	t.Setenv("PATH", fakePostconf(t, "disabled")+":"+os.Getenv("PATH"))
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "-c", conf, "--grace", "5s"}, strings.NewReader(""), &logs, &logs)
	}()
	waitFor(t, "start", func() bool { return strings.Contains(logs.String(), "NOQUEUE: start ") })
	for _, want := range []string{
		"discovery-selfcheck dane=off error=\"discovery: DANE is off: resolver self-check failed",
		`discovery-postfix dane=withheld error="Postfix cannot enforce DANE: set smtp_dns_support_level = dnssec (it is \"disabled\")`,
		"listening part=control listen=unix:" + ctl,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "discovery-selfcheck"); n != 1 {
		t.Errorf("%d self-check lines, want one:\n%s", n, logs.String())
	}
	fi, err := os.Stat(ctl)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v, want mode 0600", fi, err)
	}
	ask := func(key string) string { return askSocketmap(t, sock, key) }
	// DNS refuses: no discovered policy, the endpoints alone.
	if got := ask("sts.test"); got != "OK encrypt" {
		t.Errorf("sts.test: %q", got)
	}
	if got := ask("open.test"); got != "NOTFOUND " {
		t.Errorf("open.test: %q", got)
	}
	waitFor(t, "lookup line", func() bool {
		return strings.Contains(logs.String(), `tls-policy-lookup answer="OK encrypt" endpoint=enc source=endpoint cache=miss map=tlspolicy key=sts.test reason="MTA-STS record lookup failed`)
	})
	if !strings.Contains(logs.String(), "discovery-dns-failed domain=sts.test") {
		t.Errorf("no DNS failure line:\n%s", logs.String())
	}

	out, errs, code := runCLI(t, "query", "-c", conf, "outbound", "open.test")
	if code != exitFail || out != "NOTFOUND \n" || !strings.Contains(errs, "# source: none\n") || !regexp.MustCompile(`# cache: (hit|miss|refreshed|stale)\n`).MatchString(errs) || strings.Contains(errs, "discovered here") {
		t.Errorf("query open.test through the daemon: %d %q %q", code, out, errs)
	}
	// Postfix goes on with the parent domain, which gets no discovery.
	if !strings.Contains(errs, "# NOTFOUND; Postfix then asks .test -> NOTFOUND; in effect: Postfix's default (smtp_tls_security_level)\n") {
		t.Errorf("query open.test does not show the rest of Postfix's walk: %q", errs)
	}
	out, errs, code = runCLI(t, "query", "-c", conf, "outbound", "sts.test")
	if code != exitOK || out != "OK encrypt\n" || !strings.Contains(errs, "# source: endpoint\n# endpoint: enc\n") {
		t.Errorf("query sts.test through the daemon: %d %q %q", code, out, errs)
	}
	out, _, code = runCLI(t, "discovery", "-c", conf, "show", "nothing.test")
	if code != exitFail || out != "cached: no\n" {
		t.Errorf("show nothing.test: %d %q", code, out)
	}
	out, _, code = runCLI(t, "discovery", "--socket", ctl, "show", "open.test")
	if code != exitOK || !strings.Contains(out, "cached: yes\ndomain: open.test\npostfix: NOTFOUND\n") {
		t.Errorf("show open.test: %d %q", code, out)
	}
	if out, _, code = runCLI(t, "discovery", "-c", conf, "purge", "open.test"); code != exitOK || out != "purged: yes\n" {
		t.Errorf("purge open.test: %d %q", code, out)
	}
	if out, _, code = runCLI(t, "discovery", "-c", conf, "purge", "open.test"); code != exitFail || !strings.HasPrefix(out, "purged: no") {
		t.Errorf("purge open.test again: %d %q", code, out)
	}
	if _, errs, code = runCLI(t, "discovery", "-c", conf, "show", "[192.0.2.1]"); code != exitUsage || !strings.Contains(errs, "no discovery") {
		t.Errorf("show of an address: %d %q", code, errs)
	}
	if out, _, code = runCLI(t, "discovery", "-c", conf, "refresh", "open.test"); code != exitOK || !strings.Contains(out, "cache: ") {
		t.Errorf("refresh open.test: %d %q", code, out)
	}
	if lines, err := control.Ask(context.Background(), ctl, "frob"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("frob: %q %v", lines, err)
	}

	// A reload that changes [discovery] keeps everything as it was.
	if err := os.WriteFile(conf, []byte(strings.Replace(body, "mta_sts = true", "mta_sts = false", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "failed reload", func() bool { return strings.Contains(logs.String(), "reload result=failed") })
	if !strings.Contains(logs.String(), "[discovery] settings differ from those the daemon started with: restart needed") {
		t.Errorf("the refused reload does not say why:\n%s", logs.String())
	}
	// One that leaves it alone is applied, and the guard asks postconf again.
	t.Setenv("PATH", fakePostconf(t, "dnssec")+":"+os.Getenv("PATH"))
	if err := os.WriteFile(conf, []byte(strings.Replace(body, `hosts = ["sts.test"]`, `hosts = ["sts.test", "b.test"]`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "good reload", func() bool { return strings.Contains(logs.String(), "reload result=ok") })
	waitFor(t, "guard", func() bool { return strings.Contains(logs.String(), "discovery-postfix dane=on") })
	if got := ask("b.test"); got != "OK encrypt" {
		t.Errorf("b.test after reload: %q", got)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d\n%s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file after stop: %v %v", fi, err)
	}
	if _, err := os.Stat(ctl); err == nil {
		t.Error("control socket left behind")
	}
}

// fakePostconf writes a postconf that answers the four parameters the
// DANE guard asks, with smtp_dns_support_level = level, into a new
// directory, and returns it.
func fakePostconf(t *testing.T, level string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\ncase \"$*\" in\n*smtp_dns_support_level*) printf '%s\\n' " + level + " dns dane 3.7.11 ;;\n*) echo 3.7.11 ;;\nesac\n"
	if err := os.WriteFile(filepath.Join(dir, "postconf"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shortDir is a temporary directory with a path short enough for unix
// sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestCheckDiscovery: check says what the daemon would do with
// [discovery]: DANE off when the resolver does not validate, the Postfix
// settings DANE needs, a missing cache directory.
func TestCheckDiscovery(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "t.toml")
	write := func(extra string) {
		body := "mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/x.sock\"\n[discovery]\nmta_sts = true\ndane = true\nresolver = \"" + closedUDP(t) + "\"\n" + extra
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	t.Setenv("PATH", fakePostconf(t, "disabled")+":"+os.Getenv("PATH"))
	out, errs, code := runCLI(t, "check", "-c", conf)
	if code != exitOK || !strings.Contains(out, "discovery mta-sts, dane withheld") {
		t.Errorf("check: %d %q %q", code, out, errs)
	}
	for _, want := range []string{
		conf + ":6: warning: DANE is off: resolver self-check failed",
		conf + `:6: warning: Postfix cannot enforce DANE: set smtp_dns_support_level = dnssec (it is "disabled")`,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("check stderr lacks %q:\n%s", want, errs)
		}
	}
	t.Setenv("PATH", fakePostconf(t, "dnssec")+":"+os.Getenv("PATH"))
	if out, errs, _ := runCLI(t, "check", "-c", conf); strings.Contains(errs, "Postfix cannot enforce") || !strings.Contains(out, "dane off (resolver") {
		t.Errorf("check with dnssec: %q %q", out, errs)
	}
	write("cache_file = \"" + dir + "/nodir/discovery.cache\"\n")
	if _, errs, code := runCLI(t, "check", "-c", conf, "--no-detect"); code != exitUsage || !strings.Contains(errs, conf+":8: [discovery] cache_file: the directory of") {
		t.Errorf("missing cache directory: %d %q", code, errs)
	}
	write("sts_ca_file = \"" + dir + "/none.pem\"\n")
	if _, errs, code := runCLI(t, "check", "-c", conf, "--no-detect"); code != exitUsage || !strings.Contains(errs, conf+":8: [discovery] sts_ca_file:") {
		t.Errorf("missing sts_ca_file: %d %q", code, errs)
	}
	p, err := policy.Parse("t.toml", []byte("mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/x.sock\"\n[discovery]\ndane = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	resolvConf = filepath.Join(dir, "resolv.conf")
	defer func() { resolvConf = "/etc/resolv.conf" }()
	os.WriteFile(resolvConf, []byte("# x\nnameserver 192.0.2.53\nnameserver 127.0.0.1\n"), 0o644)
	if _, err := discoveryConfig(p); err == nil || !strings.Contains(err.Error(), "t.toml:5: [discovery] dane: DANE needs a validating resolver on this host, but the first nameserver of "+resolvConf+" is 192.0.2.53") {
		t.Errorf("remote default resolver with DANE: %v", err)
	}
	os.WriteFile(resolvConf, []byte("nameserver ::1\n"), 0o644)
	if cfg, err := discoveryConfig(p); err != nil || cfg.Resolver != "[::1]:53" {
		t.Errorf("resolver from resolv.conf: %q %v", cfg.Resolver, err)
	}
}
