package partnerwatch

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/probe"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

func mustPolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTargets: exact names and single addresses of endpoints with an
// outbound table are probed, ranges and subdomain patterns are not; the
// router's next hop replaces a name's own MX hosts; probe_endpoints
// narrows the set.
func TestTargets(t *testing.T) {
	p := mustPolicy(t, `mta = "postfix"
[[endpoint]]
name  = "b"
hosts = ["B.example", ".b.example", "mx1.b.example", "192.0.2.10", "2001:db8::1", "198.51.100.0/24"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name  = "inbound-only"
hosts = ["c.example"]
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name  = "d"
hosts = ["d.example"]
  [endpoint.outbound]
  encryption = true
`)
	var asked []string
	route := func(_ context.Context, names []string) ([]probe.Target, []bool, error) {
		asked = append(asked, names...)
		ts, ok := make([]probe.Target, len(names)), make([]bool, len(names))
		for i, n := range names {
			if n == "b.example" {
				ts[i], ok[i] = probe.Target{Host: "127.0.0.1", Port: 2525}, true
			}
		}
		return ts, ok, nil
	}
	ts, err := Targets(context.Background(), p, nil, route)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range ts {
		got = append(got, x.Endpoint+" "+x.Pattern+" → "+x.Probe.String())
	}
	want := []string{
		"b b.example → [127.0.0.1]:2525",
		"b mx1.b.example → mx1.b.example",
		"b 192.0.2.10 → [192.0.2.10]",
		"b 2001:db8::1 → [IPv6:2001:db8::1]",
		"d d.example → d.example",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("targets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Join(asked, " ") != "b.example mx1.b.example d.example" {
		t.Errorf("router asked %q", asked)
	}
	ts, _ = Targets(context.Background(), p, []string{"d"}, nil)
	if len(ts) != 1 || ts[0].Endpoint != "d" || ts[0].Probe.Domain != "d.example" {
		t.Errorf("only d: %+v", ts)
	}
}

// logLines returns the lines logged since the last call, without times.
type logLines struct{ buf bytes.Buffer }

func (l *logLines) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(&l.buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
}

func (l *logLines) take() string {
	s := strings.TrimSpace(l.buf.String())
	l.buf.Reset()
	return s
}

// TestRoundSinks probes real STARTTLS servers on loopback (the lab's
// sinks; the router sends both partners' names there, so no name is
// resolved): a pinned partner whose certificate expires in 10 days,
// is renewed with the same key, then changes its key (warned once, the
// pin no longer matches), then changes back; an unpinned partner that
// changes its key and certificate to one no CA of ours signed; a server
// that is down.
func TestRoundSinks(t *testing.T) {
	pki := testpki.NewT(t)
	now := time.Now()
	issue := func(name, slot string, notAfter time.Time) *testpki.Cert {
		c, err := pki.Issue(testpki.Options{Name: name, KeySlot: slot, Subject: pkix.Name{CommonName: "sink.partner.test"},
			DNSNames: []string{"sink.partner.test"}, Signer: pki.CA, NotAfter: notAfter})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	soon := issue("soon", "partner-b", now.Add(10*24*time.Hour+time.Hour))
	renewed := issue("renewed", "partner-b", now.Add(90*24*time.Hour))
	otherKey := issue("other-key", "partner-b-new", now.Add(90*24*time.Hour))
	b := mtalab.StartSink(t, mtalab.SinkOptions{TLS: soon})
	c := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.Sink})
	down := mtalab.FreePort(t)

	p := mustPolicy(t, fmt.Sprintf(`mta = "postfix"
[[endpoint]]
name  = "b"
hosts = ["b.partner.test"]
  [endpoint.outbound]
  validate_cert = false
  fingerprints  = [%q]
[[endpoint]]
name  = "c"
mode  = "monitor"
hosts = ["c.partner.test"]
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"
[[endpoint]]
name  = "down"
hosts = ["down.partner.test"]
  [endpoint.outbound]
  encryption = true
`, soon.PubkeyFingerprint))
	ports := map[string]int{"b.partner.test": b.Port(), "c.partner.test": c.Port(), "down.partner.test": down}
	route := func(_ context.Context, names []string) ([]probe.Target, []bool, error) {
		ts, ok := make([]probe.Target, len(names)), make([]bool, len(names))
		for i, n := range names {
			ts[i], ok[i] = probe.Target{Host: "127.0.0.1", Port: ports[n]}, true
		}
		return ts, ok, nil
	}
	targets, err := Targets(context.Background(), p, nil, route)
	if err != nil {
		t.Fatal(err)
	}
	model := verdict.New(p)
	var log logLines
	w := &Watcher{
		Probe: func(ctx context.Context, tg probe.Target) ([]probe.Result, error) {
			return probe.Probe(ctx, tg, probe.Options{Roots: pki.CA.Pool(), Helo: "mx.lab.test", Timeout: 10 * time.Second})
		},
		Judge: func(tg Target, r *probe.Result) Verdict { return Judge(model, tg, r, now) },
		Log:   log.logger(),
	}
	hostB, hostC, hostDown := fmt.Sprintf("127.0.0.1:%d", b.Port()), fmt.Sprintf("127.0.0.1:%d", c.Port()), fmt.Sprintf("127.0.0.1:%d", down)
	round := func(step string, want ...string) {
		t.Helper()
		w.Round(context.Background(), targets, now)
		got := log.take()
		for _, re := range want {
			if !regexp.MustCompile(re).MatchString(got) {
				t.Errorf("%s: no line matching %s in:\n%s", step, re, got)
			}
		}
		if n := strings.Count(got, "\n") + 1; got != "" && n != len(want) {
			t.Errorf("%s: %d lines, want %d:\n%s", step, n, len(want), got)
		}
	}
	// The first certificate of the chain to expire: the server's, or the
	// lab CA's (30 days).
	status := func(step, host string, ok bool, cert *testpki.Cert) {
		t.Helper()
		var notAfter time.Time
		if cert != nil {
			notAfter = cert.Cert.NotAfter
			if ca := pki.CA.Cert.NotAfter; ca.Before(notAfter) {
				notAfter = ca
			}
		}
		for _, s := range w.Statuses() {
			if s.Host == host {
				if s.OK != ok || !s.NotAfter.Equal(notAfter.Truncate(time.Second)) {
					t.Errorf("%s: status %+v, want ok %v not after %v", step, s, ok, notAfter)
				}
				return
			}
		}
		t.Errorf("%s: no status for %s in %+v", step, host, w.Statuses())
	}

	round("first",
		`level=WARN msg=partner-cert endpoint=b host=`+hostB+` cert="CN=sink.partner.test" not_after=\S+ days_left=10 status=expires-soon`,
		`level=DEBUG msg=partner-probe endpoint=b host=`+hostB+` result="would deliver" tls="TLSv1.3, 128 bits"`,
		`level=DEBUG msg=partner-probe endpoint=c host=`+hostC+` result="would deliver"`,
		`level=WARN msg=partner-probe endpoint=down host=`+hostDown+` result=unknown reason="the probe failed: connect: .*refused"`)
	status("first", hostB, true, soon)
	status("first", hostDown, false, nil)

	// Renewed with the same key: no warning at all.
	b.SetTLS(renewed)
	round("renewed",
		`level=DEBUG msg=partner-probe endpoint=b host=`+hostB+` result="would deliver"`,
		`level=DEBUG msg=partner-probe endpoint=c host=`+hostC,
		`level=DEBUG msg=partner-probe endpoint=down host=`+hostDown+` result=unknown`)
	status("renewed", hostB, true, renewed)

	// A new key under the pin: one warning for the change, one for the
	// probe that now fails; the unpinned partner's new key and chain.
	b.SetTLS(otherKey)
	c.SetTLS(pki.OtherCASink)
	round("new keys",
		`level=WARN msg=partner-key endpoint=b host=`+hostB+` old=`+renewed.PubkeyFingerprint+` new=`+otherKey.PubkeyFingerprint+` pinned=yes verdict="would stay queued: `,
		`level=WARN msg=partner-probe endpoint=b host=`+hostB+` result="would stay queued" reason=`,
		`level=INFO msg=partner-key endpoint=c host=`+hostC+` old=`+pki.Sink.PubkeyFingerprint+` new=`+pki.OtherCASink.PubkeyFingerprint+` pinned=no`,
		`level=WARN msg=partner-probe endpoint=c host=`+hostC+` result="would stay queued" reason="the server certificate does not verify against our CA store"`,
		`level=DEBUG msg=partner-probe endpoint=down`)
	status("new keys", hostB, false, otherKey)

	// The same again: the change is not logged twice.
	round("unchanged",
		`level=DEBUG msg=partner-probe endpoint=b host=`+hostB+` result="would stay queued"`,
		`level=DEBUG msg=partner-probe endpoint=c`,
		`level=DEBUG msg=partner-probe endpoint=down`)

	// Back to the pinned key: the change and the recovery are logged.
	b.SetTLS(renewed)
	round("back",
		`level=WARN msg=partner-key endpoint=b host=`+hostB+` old=`+otherKey.PubkeyFingerprint+` new=`+renewed.PubkeyFingerprint+` pinned=yes verdict="would deliver"`,
		`level=INFO msg=partner-probe endpoint=b host=`+hostB+` result="would deliver" tls=`,
		`level=DEBUG msg=partner-probe endpoint=c`,
		`level=DEBUG msg=partner-probe endpoint=down`)

	// Each server was probed once per round; no mail was sent.
	if n := len(b.Sessions()); n != 5 {
		t.Errorf("sink b saw %d sessions, want 5", n)
	}
	if env := b.Envelopes(); len(env) != 0 {
		t.Errorf("a probe sent mail: %+v", env)
	}
	// A reload that removes endpoint c forgets its servers.
	w.Forget(targets[:1])
	for _, s := range w.Statuses() {
		if s.Endpoint != "b" {
			t.Errorf("after Forget: %+v", s)
		}
	}
}

// TestForgetDropsServersNoLongerProbed: a server a round no longer probed
// (its status dropped, its key still known) is forgotten with its
// endpoint.
func TestForgetDropsServersNoLongerProbed(t *testing.T) {
	w := &Watcher{
		seen:   map[seenKey]seenState{{"b", "mx1.b.example:25"}: {spki: "sha256:1"}, {"c", "mx.c.example:25"}: {spki: "sha256:2"}},
		status: map[seenKey]Status{},
	}
	w.Forget([]Target{{Endpoint: "b"}})
	if _, ok := w.seen[seenKey{"c", "mx.c.example:25"}]; ok || len(w.seen) != 1 {
		t.Errorf("after Forget: %+v", w.seen)
	}
}
