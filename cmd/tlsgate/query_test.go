package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
	"github.com/tlsgate/tlsgate/policyd"
)

const sendmailExample = "../../deploy/tlsgate.sendmail.example.toml"

// TestQueryOutboundSendmailKeys checks which access-map keys the file
// answers: the tag in any case; for tls_rcpt the address by its domain,
// no user@ key, and a domain key by the subdomain patterns above it (the
// exact name company-b.example is decided by the address key Sendmail
// asks first).
func TestQueryOutboundSendmailKeys(t *testing.T) {
	const companyB = "OK TEMP+VERIFY:256+CN:mx1.company-b.example++CI:/C=US/O=Example+20CA/CN=Example+20Issuing+20CA+202\n"
	for _, tc := range []struct {
		key, want string
		code      int
	}{
		{"tls_rcpt:a@company-b.example", companyB, 0},
		{"TLS_Rcpt:A@Company-B.example", companyB, 0},
		{"TLS_SRV:MX1.Company-B.example", companyB, 0},
		{"tls_rcpt:a@", "NOTFOUND \n", 1},
		{"tls_rcpt:company-b.example", "NOTFOUND \n", 1},
		{"tls_rcpt:sub.company-b.example", companyB, 0},
		{"TLS_Rcpt:.company-b.example", companyB, 0},
		{"To:a@company-b.example", "NOTFOUND \n", 1},
	} {
		out, errs, code := runCLI(t, "query", "-c", sendmailExample, "outbound", tc.key)
		if out != tc.want || code != tc.code {
			t.Errorf("query %q = %q (%d), want %q (%d); stderr %q", tc.key, out, code, tc.want, tc.code, errs)
		}
	}
	_, errs, code := runCLI(t, "query", "-c", example, "outbound", "TLS_Rcpt:a@company-b.example")
	if code != exitUsage || !strings.Contains(errs, `is a Sendmail access-map key, but `+example+` has mta = "postfix"`) {
		t.Errorf("Sendmail key against a Postfix file: code %d, stderr %q", code, errs)
	}
}

// TestQueryOutboundSocketMap checks the map name and key that
// query --socket sends.
func TestQueryOutboundSocketMap(t *testing.T) {
	type asked struct{ name, key string }
	var mu sync.Mutex
	var got []asked
	spec := startSocketmap(t, func(_ context.Context, name, key string) policyd.Reply {
		mu.Lock()
		got = append(got, asked{name, key})
		mu.Unlock()
		return policyd.Reply{Status: policyd.StatusOK, Data: "x"}
	})

	for _, tc := range []struct {
		args []string
		want asked
	}{
		{[]string{"TLS_Rcpt:A@Company-B.example"}, asked{"access", "tls_rcpt:a@company-b.example"}},
		{[]string{"tls_srv:mx1.company-b.example"}, asked{"access", "tls_srv:mx1.company-b.example"}},
		{[]string{"SRV_Features:192.0.2.10"}, asked{"access", "srv_features:192.0.2.10"}},
		{[]string{"[MX1.Company-B.example]:25"}, asked{"tlspolicy", "[MX1.Company-B.example]:25"}},
		{[]string{"--map", "other", "TLS_Srv:x.example"}, asked{"other", "tls_srv:x.example"}},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		args := append([]string{"query", "--socket", spec, "outbound"}, tc.args...)
		out, errs, code := runCLI(t, args...)
		if code != exitOK || out != "OK x\n" {
			t.Errorf("%v: code %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
		mu.Lock()
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%v: daemon was asked %v, want %v", tc.args, got, tc.want)
		}
		mu.Unlock()
	}
}

func TestQueryInboundNeedsClientAddr(t *testing.T) {
	for _, args := range [][]string{{}, {"--sender", "a@company-b.example"}, {"--client-name", "mx1.company-b.example", "--tls-version", "TLSv1.3"}} {
		out, errs, code := runCLI(t, append([]string{"query", "-c", example, "inbound"}, args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errs, "--client-addr is missing") {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want exit 2 naming --client-addr", args, code, out, errs)
		}
	}
}

const walkConf = `mta = "postfix"
[[endpoint]]
name  = "company-b"
hosts = ["company-b.example", ".company-b.example"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name         = "company-b-sub"
hosts        = ["sub.company-b.example"]
mode         = "monitor"
exception_to = "company-b"
reason       = "CHG-1"
expires      = 2099-01-01
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name  = "watch"
hosts = ["watch.example"]
mode  = "monitor"
  [endpoint.outbound]
  encryption = true
`

// TestQueryOutboundWalk: for a NOTFOUND key, query shows the rest of the
// MTA's walk and what is in effect, and says "monitor mode" only for an
// endpoint in monitor mode; the exit status is what is in effect.
func TestQueryOutboundWalk(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "walk.toml")
	if err := os.WriteFile(conf, []byte(walkConf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, out string
		code     int
		errs     []string
		not      []string
	}{
		{"sub.company-b.example", "NOTFOUND \n", 0, []string{
			"# endpoint company-b-sub, an exception to company-b until 2099-01-01 (CHG-1): monitor mode: answered NOTFOUND; enforce would answer OK encrypt\n",
			"# NOTFOUND; Postfix then asks .company-b.example -> OK verify match=hostname (endpoint company-b); in effect: verify match=hostname\n"}, nil},
		{"watch.example", "NOTFOUND \n", 1, []string{
			"# endpoint watch: monitor mode: answered NOTFOUND; enforce would answer OK encrypt\n",
			"# NOTFOUND; Postfix then asks .example -> NOTFOUND; in effect: Postfix's default (smtp_tls_security_level)\n"}, nil},
		{"mx.other.example", "NOTFOUND \n", 1, []string{
			"# NOTFOUND; Postfix then asks .other.example -> NOTFOUND, .example -> NOTFOUND; in effect: Postfix's default (smtp_tls_security_level)\n"},
			[]string{"monitor", "endpoint"}},
		{"[mx.company-b.example]:submission", "OK verify match=hostname\n", 0, []string{"# endpoint company-b\n"}, []string{"monitor", "NOTFOUND"}},
		{"[other.example]:submission", "NOTFOUND \n", 1, []string{"# NOTFOUND; in effect: Postfix's default (smtp_tls_security_level)\n"}, []string{"then asks"}},
	} {
		out, errs, code := runCLI(t, "query", "-c", conf, "outbound", tc.key)
		if out != tc.out || code != tc.code {
			t.Errorf("%s: stdout %q exit %d, want %q %d", tc.key, out, code, tc.out, tc.code)
		}
		for _, w := range tc.errs {
			if !strings.Contains(errs, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.key, w, errs)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(errs, w) {
				t.Errorf("%s: stderr says %q:\n%s", tc.key, w, errs)
			}
		}
	}
}

// TestQueryOutboundSendmailWalk: Sendmail's walks from a recipient, a
// domain key, a server literal and a client address.
func TestQueryOutboundSendmailWalk(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "walk.toml")
	if err := os.WriteFile(conf, []byte(strings.Replace(walkConf, `"postfix"`, `"sendmail"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, out string
		code     int
		errs     string
	}{
		{"tls_rcpt:a@sub.company-b.example", "NOTFOUND \n", 0,
			"# NOTFOUND; Sendmail then asks tls_rcpt:a@ -> NOTFOUND, tls_rcpt:sub.company-b.example -> OK TEMP+VERIFY (endpoint company-b); in effect: TEMP+VERIFY\n"},
		{"tls_rcpt:other.example", "NOTFOUND \n", 1,
			"# NOTFOUND; Sendmail then asks tls_rcpt:example -> NOTFOUND, tls_rcpt: -> NOTFOUND; in effect: Sendmail's default (no TLS requirement)\n"},
		{"tls_srv:[192.0.2.1]", "NOTFOUND \n", 1, "# NOTFOUND; Sendmail then asks tls_srv:[192.0.2] -> NOTFOUND, "},
		{"srv_features:192.0.2.9", "NOTFOUND \n", 0, "srv_features:192 -> NOTFOUND, srv_features: -> OK V; in effect: V\n"},
		{"srv_features:client.other.example", "NOTFOUND \n", 0,
			"# NOTFOUND; Sendmail then asks srv_features:other.example -> NOTFOUND, srv_features:example -> NOTFOUND, srv_features: -> OK V; in effect: V\n"},
	} {
		out, errs, code := runCLI(t, "query", "-c", conf, "outbound", tc.key)
		if out != tc.out || code != tc.code || !strings.Contains(errs, tc.errs) {
			t.Errorf("%s: stdout %q exit %d stderr %q; want %q %d %q", tc.key, out, code, errs, tc.out, tc.code, tc.errs)
		}
	}
}

// TestQueryOutboundSocketWalk: with --socket, query asks the running
// daemon each key of the walk until one is found.
func TestQueryOutboundSocketWalk(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	spec := startSocketmap(t, func(_ context.Context, name, key string) policyd.Reply {
		mu.Lock()
		asked = append(asked, key)
		mu.Unlock()
		if key == ".company-b.example" {
			return policyd.Reply{Status: policyd.StatusOK, Data: "verify match=hostname"}
		}
		return policyd.Reply{Status: policyd.StatusNotFound}
	})
	out, errs, code := runCLI(t, "query", "--socket", spec, "outbound", "mx.sub.company-b.example")
	if out != "NOTFOUND \n" || code != exitOK ||
		!strings.Contains(errs, "# NOTFOUND; Postfix then asks .sub.company-b.example -> NOTFOUND, .company-b.example -> OK verify match=hostname; in effect: verify match=hostname\n") {
		t.Errorf("stdout %q exit %d stderr %q", out, code, errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(asked, " ") != "mx.sub.company-b.example .sub.company-b.example .company-b.example" {
		t.Errorf("daemon asked %q", asked)
	}
}

// TestQueryOutboundSocketSTS: on the map sts of Sendmail's FEATURE(`sts')
// query asks the one key Sendmail asks, the domain: no walk.
func TestQueryOutboundSocketSTS(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	spec := startSocketmap(t, func(_ context.Context, name, key string) policyd.Reply {
		mu.Lock()
		asked = append(asked, name+" "+key)
		mu.Unlock()
		return policyd.Reply{Status: policyd.StatusNotFound}
	})
	out, errs, code := runCLI(t, "query", "--socket", spec, "--map", "sts", "outbound", "sub.example.net")
	if out != "NOTFOUND \n" || code != exitFail || errs != "" {
		t.Errorf("stdout %q exit %d stderr %q", out, code, errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(asked, ",") != "sts sub.example.net" {
		t.Errorf("daemon asked %q", asked)
	}
}

// TestQueryInboundException: a session let through by an exception says
// so, with what it gets once the exception ends.
func TestQueryInboundException(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "x.toml")
	if err := os.WriteFile(conf, []byte(labsException("sendmail", "2099-01-01")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCLI(t, "query", "-c", conf, "inbound", "--client-addr", "192.0.2.1", "--sender", "a@labs.company-b.example", "--tls-version", "TLSv1.3", "--cipher-bits", "256")
	want := "endpoints: labs\nexception: labs, an exception to company-b until 2099-01-01 (CHG-4711)\n" +
		"result: exception (mail is accepted only because of the exception; from 2099-01-01 on: defer (451 4.7.1 TLS required by local policy for this peer))\n"
	if out != want || code != exitOK {
		t.Errorf("exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", code, out, want, errs)
	}
}

// startSocketmap serves lookup on a unix socket until the test ends and
// returns its spec for --socket.
func startSocketmap(t *testing.T, lookup policyd.LookupFunc) string {
	t.Helper()
	srv, err := policyd.NewSocketmapServer(policyd.SocketmapOptions{Lookuper: lookup})
	if err != nil {
		t.Fatal(err)
	}
	spec := "unix:" + filepath.Join(t.TempDir(), "s.sock")
	ln, err := listen.Open(spec, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return spec
}

// labsException is a policy of company-b (.company-b.example, a validated
// client certificate inbound) with the exception company-b-labs
// (labs.company-b.example, TLS only) until expires, in TOML.
func labsException(mta, expires string) string {
	return `mta = "` + mta + `"
[[endpoint]]
name  = "company-b"
hosts = [".company-b.example"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name         = "labs"
hosts        = ["labs.company-b.example"]
exception_to = "company-b"
expires      = ` + expires + `
reason       = "CHG-4711"
  [endpoint.inbound]
  encryption = true
`
}
