package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

const labLogs = "../../internal/posture/testdata/lab/"

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWhatifLogs re-judges the captured lab logs: enforcing the "mixed"
// endpoint (which saw 2 plaintext sessions) would have refused them.
func TestWhatifLogs(t *testing.T) {
	cur, err := os.ReadFile(labLogs + "current.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	same := writeFile(t, dir, "same.toml", string(cur))
	enforced := writeFile(t, dir, "enforce.toml", strings.Replace(string(cur), "name  = \"mixed\"\nhosts = [\"mx.mixed.test\", \"127.0.0.6\"]\nmode  = \"monitor\"", "name  = \"mixed\"\nhosts = [\"mx.mixed.test\", \"127.0.0.6\"]\nmode  = \"enforce\"", 1))
	if !strings.Contains(readString(t, enforced), "mode  = \"enforce\"") {
		t.Fatal("test setup: mixed endpoint not switched to enforce")
	}
	logs := []string{"--logs", labLogs + "postfix.log", labLogs + "sendmail.log", "--since", "all", "--now", "2026-12-08T00:00:00Z"}

	out, errs, code := runCLI(t, append([]string{"whatif", "-c", same, "--current", labLogs + "current.toml"}, logs...)...)
	if code != exitOK || !strings.Contains(out, "none more than today") || !strings.Contains(out, "Nothing would change for the worse.") {
		t.Errorf("same file: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = runCLI(t, append([]string{"whatif", "-c", enforced, "--current", labLogs + "current.toml"}, logs...)...)
	for _, want := range []string{
		"inbound client mx.mixed.test[127.0.0.6]: 2 of 8 sessions (today 0), endpoint mixed",
		"inbound sender mixed.test: 2 of 8 sessions (today 0), endpoint mixed",
		"check=encryption want=TLS got=plaintext",
		"Something would change for the worse.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("enforced: output lacks %q:\n%s", want, out)
		}
	}
	if code != exitFail {
		t.Errorf("enforced: exit %d, want 1\n%s", code, errs)
	}
	if _, errs, code := runCLI(t, "whatif", "--logs", labLogs+"postfix.log"); code != exitUsage || !strings.Contains(errs, "-c NEW.toml is required") {
		t.Errorf("no -c: exit %d %q", code, errs)
	}
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// forward listens on addr (another loopback address) and relays every
// connection to target, so that a second partner has an address of its
// own.
func forward(t *testing.T, addr, target string) int {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp4", target)
				if err != nil {
					return
				}
				defer s.Close()
				go io.Copy(s, c)
				io.Copy(c, s)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestWhatifPostfixQueue is the what-if on the real Postfix lab: three
// messages queued for a partner whose certificate has the wrong name, two
// for a partner without STARTTLS (both partners answer 451 for now, so
// the mail waits in the queue). A new file that requires the partner's
// real name says "3 would stay queued" and exits 1.
func TestWhatifPostfixQueue(t *testing.T) {
	mtalab.RequirePostfix(t)
	pki := testpki.NewT(t)
	later := func(stage, arg string) string {
		if stage == "RCPT" {
			return "451 4.3.0 try again later"
		}
		return ""
	}
	wrong := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.WrongCN, Reply: later})
	plain := mtalab.StartSink(t, mtalab.SinkOptions{Reply: later})
	plainPort := forward(t, "127.0.0.8:0", plain.Addr())
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		SMTPCAFile: pki.CA.CertFile,
		Transport: map[string]string{
			"wrongname.partner.test": wrong.Nexthop(),
			"plain.partner.test":     fmt.Sprintf("smtp:[127.0.0.8]:%d", plainPort),
		},
	})
	for i, rcpt := range []string{"a@wrongname.partner.test", "b@wrongname.partner.test", "c@wrongname.partner.test", "d@plain.partner.test", "e@plain.partner.test"} {
		if err := plainSend(pf.SMTPAddr("smtp"), rcpt, fmt.Sprintf("Subject: whatif %d\r\n\r\nqueued\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
		n := 0
		for _, e := range q {
			for _, r := range e.Recipients {
				if strings.Contains(r.Reason, "451 4.3.0") {
					n++
				}
			}
		}
		return n == 5
	}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := pf.WaitLog(regexp.MustCompile(`Trusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:`+fmt.Sprint(wrong.Port())), 10*time.Second); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	os.MkdirAll(store, 0o755)
	writeFile(t, store, "lab-ca.pem", readString(t, pki.CA.CertFile))
	today := writeFile(t, dir, "today.toml", "mta = \"postfix\"\n")
	next := writeFile(t, dir, "new.toml", fmt.Sprintf(`mta = "postfix"
[certs]
ca_store = %q

[[endpoint]]
name  = "wrongname"
hosts = ["wrongname.partner.test", "127.0.0.1"]   # its MX address
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"
`, store))
	base := []string{"whatif", "-c", next, "--current", today, "--queue", "--postfix-config", pf.ConfigDir(), "--now", time.Now().UTC().Format(time.RFC3339)}
	wrongHop := fmt.Sprintf("[127.0.0.1]:%d", wrong.Port())
	plainHop := fmt.Sprintf("[127.0.0.8]:%d", plainPort)

	// With a probe: the certificate's names are known.
	out, errs, code := runCLI(t, append(base, "--probe")...)
	if code != exitFail {
		t.Errorf("--probe: exit %d, want 1\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"Queue: 5 message(s) to 2 next hop(s)",
		"3 would stay queued, 2 would deliver.",
		"wrongname: secure match=sink.partner.test",
		"would stay queued: the certificate names wrong.partner.test, want sink.partner.test [worse]",
		"probe of 127.0.0.1: TLSv1.3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--probe: output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(wrongHop)+`\s+3\s`).MatchString(out) || !regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(plainHop)+`\s+2\s.*default\s+default\s.*would deliver$`).MatchString(out) {
		t.Errorf("--probe: hop lines:\n%s", out)
	}

	t.Logf("--probe:\n%s", out)
	// From the log alone: the chain was trusted, the names are not in
	// the log; the verdict cannot be made, and that is not "fine".
	out, _, code = runCLI(t, append(base, "--logs", pf.MaillogPath(), "--since", "all")...)
	if code != exitFail || !strings.Contains(out, "log, ") || !strings.Contains(out, "TLSv1.3, 128 bits, trusted") || !strings.Contains(out, "unknown: the chain verified, but the log does not show") ||
		!strings.Contains(out, "0 would stay queued, 3 cannot be judged (probe with --probe), 2 would deliver.") {
		t.Errorf("--logs: exit %d\n%s", code, out)
	}

	// The same file as today: nothing changes.
	out, _, code = runCLI(t, "whatif", "-c", today, "--current", today, "--queue", "--postfix-config", pf.ConfigDir())
	if code != exitOK || !strings.Contains(out, "0 would stay queued, 5 would deliver.") {
		t.Errorf("unchanged: exit %d\n%s", code, out)
	}

	// A queue that cannot be read is a runtime error.
	if _, errs, code := runCLI(t, "whatif", "-c", today, "--current", today, "--postqueue", filepath.Join(dir, "no-such-postqueue")); code != exitRuntime {
		t.Errorf("missing postqueue: exit %d %q", code, errs)
	}
}

func TestParseTransport(t *testing.T) {
	for _, tc := range []struct {
		value string
		key   string
		host  string
		port  int
		br    bool
		noTLS bool
	}{
		{"", "b.example", "", 0, false, false},
		{"smtp:", "b.example", "", 0, false, false},
		{"smtp:[mx.b.example]:587", "[mx.b.example]:587", "mx.b.example", 587, true, false},
		{"relay:[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]", "2001:db8::1", 25, true, false},
		{"smtp:mx.b.example:2525", "mx.b.example:2525", "mx.b.example", 2525, false, false},
		{"smtp:mx.b.example", "mx.b.example", "mx.b.example", 25, false, false},
		{"error:no route", "b.example", "", 0, false, true},
		{"discard:", "b.example", "", 0, false, true},
	} {
		nh := parseTransport("b.example", tc.value)
		if nh.Key != tc.key || nh.Host != tc.host || nh.Port != tc.port || nh.Bracketed != tc.br || nh.NoTLS != tc.noTLS {
			t.Errorf("%q: %+v", tc.value, nh)
		}
	}
}

// TestWhatifSendmailQueue: whatif on a real Sendmail's queue (mailq
// through "sendmail -C CF -bp") and log: three messages the smart host
// defers; the new file requires a name the log cannot show, so the
// verdict is "cannot be judged" and the exit status 1.
func TestWhatifSendmailQueue(t *testing.T) {
	mtalab.RequireSendmail(t)
	pki := testpki.NewT(t)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.WrongCN, Reply: func(stage, arg string) string {
		if stage == "RCPT" {
			return "451 4.3.0 try again later"
		}
		return ""
	}})
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{TLS: pki.Server, CAFile: pki.CA.CertFile, SmartHostPort: sink.Port()})
	for i, rcpt := range []string{"a@wrongname.partner.test", "b@wrongname.partner.test", "c@wrongname.partner.test"} {
		if err := plainSend(sm.Addr(), rcpt, fmt.Sprintf("Subject: whatif %d\r\n\r\nqueued\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool {
		n := 0
		for _, e := range q {
			for _, r := range e.Recipients {
				if strings.Contains(r.Reason, "451 4.3.0") {
					n++
				}
			}
		}
		return n == 3
	}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.WaitLog(regexp.MustCompile(`STARTTLS=client, relay=\[127\.0\.0\.1\], version=TLSv1\.3, verify=OK`), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mailqCmd, err := sm.MailqCommand()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	today := writeFile(t, dir, "today.toml", "mta = \"sendmail\"\n")
	next := writeFile(t, dir, "new.toml", `mta = "sendmail"
[[endpoint]]
name  = "wrongname"
hosts = ["wrongname.partner.test"]
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"
`)
	out, errs, code := runCLI(t, "whatif", "-c", next, "--current", today, "--queue", "--mailq", mailqCmd, "--logs", sm.MaillogPath(), "--since", "all")
	for _, want := range []string{
		"Queue: 3 message(s) to 1 next hop(s)",
		"wrongname: TEMP+VERIFY+CN:sink.partner.test",
		"TLSv1.3, 128 bits, trusted",
		"0 would stay queued, 3 cannot be judged (probe with --probe), 0 would deliver.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s%s", want, out, errs)
		}
	}
	if code != exitFail {
		t.Errorf("exit %d, want 1", code)
	}
}

// plainSend submits one message from sender@lab.test without STARTTLS.
func plainSend(addr, rcpt, msg string) error {
	return mtalab.SendPlain(addr, "sender@lab.test", rcpt, []byte(msg))
}
