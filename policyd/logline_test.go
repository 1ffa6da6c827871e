package policyd

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

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
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	got := logLines(t, names, func(i int, log *slog.Logger) {
		m := &TLSMap{Policy: func() *policy.Policy { return p }, Logger: log}
		if cases[i].name == "no-policy" {
			m.Policy = func() *policy.Policy { return nil }
		}
		m.Lookup(context.Background(), cases[i].mapName, cases[i].key)
	})
	golden.Check(t, "lookups.log", got)
}

// TestDelegationLogGolden pins the policy-delegation decision lines.
func TestDelegationLogGolden(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte(inboundConf))
	if err != nil {
		t.Fatal(err)
	}
	const pin = "9D:A6:66:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:56:B3"
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
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	got := logLines(t, names, func(i int, log *slog.Logger) {
		d := &InboundPolicy{Policy: func() *policy.Policy { return p }, Logger: log}
		if cases[i].name == "no-policy" {
			d.Policy = func() *policy.Policy { return nil }
		}
		d.Decide(context.Background(), cases[i].r)
	})
	golden.Check(t, "delegation.log", got)
}
