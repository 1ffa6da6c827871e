package e2e

import (
	"crypto/x509/pkix"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// TestPartnerProbes is serve's partner probes ([watch] probe_interval)
// against the lab's TLS sinks, reached the way Postfix's transport_maps
// send the partners' mail (the private Postfix's configuration directory:
// nothing is resolved, nothing leaves the machine):
//   - at start, the partners probe_endpoints names are probed: "b",
//     whose certificate expires in 10 days (a warning line and
//     tlsgate_partner_cert_expiry_seconds), and "c"; tlsgate_partner_probe_ok
//     is 1 for both; the probes send no mail;
//   - "e", not named, is never probed;
//   - a reload that names "e" probes it at once (and only it); a reload
//     that drops "c" removes its series.
func TestPartnerProbes(t *testing.T) {
	mtalab.RequirePostfix(t)
	l := newLab(t)
	p := l.pki
	soon, err := p.Issue(testpki.Options{Name: "soon", Subject: pkix.Name{CommonName: "sink.partner.test"}, DNSNames: []string{"sink.partner.test"},
		Signer: p.CA, NotAfter: time.Now().Add(10*24*time.Hour + time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sinks := map[string]*mtalab.Sink{
		"b": mtalab.StartSink(t, mtalab.SinkOptions{TLS: soon}),
		"c": mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.Sink}),
		"e": mtalab.StartSink(t, mtalab.SinkOptions{TLS: p.Sink}),
	}
	transport := map[string]string{}
	for name, s := range sinks {
		transport[name+".partner.test"] = s.Nexthop()
	}
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{Transport: transport})
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", mtalab.FreePort(t))
	config := func(probe ...string) string {
		q := make([]string, len(probe))
		for i, e := range probe {
			q[i] = fmt.Sprintf("%q", e)
		}
		return gateConfig{MTA: "postfix", Listen: "unix:" + l.dir + "/policy.sock", Endpoints: []string{
			endpoint("b", []string{"b.partner.test"}, fmt.Sprintf("[endpoint.outbound]\nvalidate_cert = false\nfingerprints = [%q]", soon.PubkeyFingerprint)),
			endpoint("c", []string{"c.partner.test"}, "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\""),
			endpoint("e", []string{"e.partner.test"}, "[endpoint.outbound]\nencryption = true"),
		}}.render(l) + watchTable(metricsAddr, "off", fmt.Sprintf("postfix_config = %q\nprobe_interval = \"24h\"\nprobe_endpoints = [%s]", pf.ConfigDir(), strings.Join(q, ", ")))
	}
	host := func(name string) string { return fmt.Sprintf("127.0.0.1:%d", sinks[name].Port()) }
	series := func(metric, name string) string {
		return fmt.Sprintf(`%s{endpoint=%q,host=%q}`, metric, name, host(name))
	}

	l.writeConfig(config("b", "c"))
	g := newGate(l)
	g.Start()
	line, err := g.waitLogAfter(0, regexp.MustCompile(`partner-cert endpoint=b `), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^(<4>)?NOQUEUE: partner-cert endpoint=b host=` + regexp.QuoteMeta(host("b")) + ` cert="CN=sink.partner.test" not_after=\S+Z days_left=10 status=expires-soon$`).MatchString(line) {
		t.Errorf("partner-cert: %s", line)
	}
	waitSeries(t, metricsAddr, series("tlsgate_partner_probe_ok", "b"), 1, false)
	waitSeries(t, metricsAddr, series("tlsgate_partner_probe_ok", "c"), 1, false)
	if left, ok := scrape(t, metricsAddr, series("tlsgate_partner_cert_expiry_seconds", "b")); !ok || left < 10*86400 || left > 10*86400+3600 {
		t.Errorf("b's certificate expires in %v s (present %v), want about 10 days", left, ok)
	}
	if left, ok := scrape(t, metricsAddr, series("tlsgate_partner_cert_expiry_seconds", "c")); !ok || left < 20*86400 {
		t.Errorf("c's chain expires in %v s (present %v), want about 30 days (the lab CA's)", left, ok)
	}
	for name, want := range map[string]int{"b": 1, "c": 1, "e": 0} {
		if n := len(sinks[name].Sessions()); n != want {
			t.Errorf("sink %s saw %d sessions, want %d", name, n, want)
		}
		if env := sinks[name].Envelopes(); len(env) != 0 {
			t.Errorf("a probe sent mail to %s: %+v", name, env)
		}
	}

	// Name "e": it is probed at once, the others are not probed again.
	g.Reload(config("b", "c", "e"))
	waitSeries(t, metricsAddr, series("tlsgate_partner_probe_ok", "e"), 1, false)
	for name, want := range map[string]int{"b": 1, "c": 1, "e": 1} {
		if n := len(sinks[name].Sessions()); n != want {
			t.Errorf("after naming e: sink %s saw %d sessions, want %d", name, n, want)
		}
	}
	// Drop "c": its series go.
	g.Reload(config("b", "e"))
	waitSeries(t, metricsAddr, series("tlsgate_partner_probe_ok", "c"), 0, true)
	if _, ok := scrape(t, metricsAddr, series("tlsgate_partner_cert_expiry_seconds", "c")); ok {
		t.Error("c's expiry series is still there")
	}
	t.Logf("tlsgate partner lines:\n%s", strings.Join(logLines(g.Log(), regexp.MustCompile(`partner-`)), "\n"))
}
