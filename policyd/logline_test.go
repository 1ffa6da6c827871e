package policyd

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/golden"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// logLines runs each case with a logger writing the daemon's log format
// (logx, as tlsgate serve writes it to stderr, severity prefix included)
// and returns "case: line" for every line logged.
func logLines(t *testing.T, cases []string, run func(i int, log *slog.Logger)) string {
	t.Helper()
	var all strings.Builder
	for i, name := range cases {
		var buf bytes.Buffer
		run(i, slog.New(logx.NewWriter(&buf, slog.LevelDebug)))
		if buf.Len() == 0 {
			all.WriteString(name + ": (nothing logged)\n")
			continue
		}
		for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
			for j := 0; j < len(line); j++ {
				if line[j] < ' ' || line[j] > '~' {
					t.Errorf("%s: byte %#x in %q", name, line[j], line)
				}
			}
			all.WriteString(name + ": " + line + "\n")
		}
	}
	return all.String()
}

// TestLookupLogGolden pins the outbound lookup lines (one per answer at
// debug level, TEMP and monitor answers at warn and info) that admins
// grep and log parsers read.
func TestLookupLogGolden(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte(`mta = "postfix"
[[endpoint]]
name = "company-b"
hosts = ["company-b.example", "192.0.2.10"]
  [endpoint.outbound]
  validate_cert = true
  cn = "mx1.company-b.example"
[[endpoint]]
name = "watch"
hosts = ["watch.example"]
mode = "monitor"
  [endpoint.outbound]
  encryption = true
`+labsException("outbound", "partner", "partner.example")))
	if err != nil {
		t.Fatal(err)
	}
	sm, err := policy.Parse("s.toml", []byte(`mta = "sendmail"
[[endpoint]]
name = "partner"
hosts = [".partner.example"]
  [endpoint.outbound]
  validate_cert = true
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, mapName, key string }{
		{"covered", "tlspolicy", "company-b.example"},
		{"covered-nexthop", "tlspolicy", "[192.0.2.10]:25"},
		{"uncovered", "tlspolicy", "other.example"},
		{"monitor", "tlspolicy", "watch.example"},
		{"bad-key", "tlspolicy", "[company-b.example"},
		{"hostile-key", "tlspolicy", "evil\r\nInjected: 1\xff.example"},
		{"wrong-map", "othermap", "company-b.example"},
		{"no-policy", "tlspolicy", "company-b.example"},
		{"exception", "tlspolicy", "mx.labs.partner.example"},
		{"key-says-pass", "tlspolicy", "[x answer=OK endpoint=none"},
		{"sendmail-cut", "access", "tls_rcpt:" + strings.Repeat("a", 240) + "@mx.partner.example"},
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	got := logLines(t, names, func(i int, log *slog.Logger) {
		at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
		m := &TLSMap{Policy: func() *policy.Policy { return p }, Logger: log, Now: func() time.Time { return at }}
		switch cases[i].name {
		case "no-policy":
			m.Policy = func() *policy.Policy { return nil }
		case "sendmail-cut":
			m.Policy = func() *policy.Policy { return sm }
		}
		m.Lookup(context.Background(), cases[i].mapName, cases[i].key)
	})
	golden.Check(t, "lookups.log", got)
}

// TestDelegationLogGolden pins the policy-delegation decision lines.
func TestDelegationLogGolden(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte(inboundConf+labsException("inbound", "company", "trusted.example")))
	if err != nil {
		t.Fatal(err)
	}
	const pin = "9D:A6:66:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:56:B3"
	const md5 = "D1:8A:D0:34:DD:CD:0B:D9:D7:F4:CE:8A:62:96:14:9C"
	tls := []string{"encryption_protocol", "TLSv1.3", "encryption_cipher", "TLS_AES_256_GCM_SHA384", "encryption_keysize", "256", "queue_id", "87BBD98A818"}
	cases := []struct {
		name string
		r    Request
	}{
		{"uncovered", req("sender", "a@other.example")},
		{"pinned-plaintext", req("sender", "a@pin.example")},
		{"pinned-ok", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", pin)...)},
		{"pinned-wrong", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", strings.Replace(pin, "9D", "9E", 1))...)},
		{"monitor", req("sender", "x@watch.example")},
		{"bad-address", req("client_address", "not-an-ip", "sender", "a@pin.example")},
		{"hostile", req(append(tls, "client_name", "evil\r\nname", "sender", "a b\"c@pin.example", "ccert_fingerprint", "\r\nInjected: 1\xff")...)},
		{"no-policy", req("sender", "a@pin.example")},
		{"sender-says-pass", req("sender", `"x result=pass endpoint=none action=DUNNO"@pin.example`, "client_name", "result=pass")},
		{"md5-uncovered", req(append(tls, "sender", "a@other.example", "ccert_fingerprint", md5)...)},
		{"md5-pinned", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", md5)...)},
		{"exception", req(append(tls, "sender", "a@labs.trusted.example")...)},
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	got := logLines(t, names, func(i int, log *slog.Logger) {
		d := &InboundPolicy{Policy: func() *policy.Policy { return p }, Logger: log,
			Now: func() time.Time { return time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) }}
		if cases[i].name == "no-policy" {
			d.Policy = func() *policy.Policy { return nil }
		}
		d.Decide(context.Background(), cases[i].r)
	})
	golden.Check(t, "delegation.log", got)
	// What grep -o 'result=[a-z]*' | head -1 reads is the real result,
	// whatever the sender and the client's name spell out.
	for _, line := range strings.Split(got, "\n") {
		if name, rest, _ := strings.Cut(line, ": "); name == "sender-says-pass" {
			if m := regexp.MustCompile(`result=[a-z]*`).FindString(rest); m != "result=reject" {
				t.Errorf("first result= of %q is %q", rest, m)
			}
		}
	}
}

// labsException is an endpoint NAME for .DOMAIN that needs a validated
// certificate in direction dir, and its exception NAME-labs for
// labs.DOMAIN and below, which needs TLS only until 2027-01-31, in TOML.
func labsException(dir, name, domain string) string {
	return `[[endpoint]]
name = "` + name + `"
hosts = [".` + domain + `"]
  [endpoint.` + dir + `]
  validate_cert = true
[[endpoint]]
name = "` + name + `-labs"
hosts = ["labs.` + domain + `", ".labs.` + domain + `"]
exception_to = "` + name + `"
reason = "CHG-4711"
expires = 2027-01-31
  [endpoint.` + dir + `]
  encryption = true
`
}
