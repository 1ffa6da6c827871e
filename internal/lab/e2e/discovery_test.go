package e2e

import (
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/dnslab"
	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// mxPeer is one destination of the discovery tests: a zone of the dnslab
// lab whose one MX host, mx.<zone>, is a sink on SinkIP(ip):25.
type mxPeer struct {
	zone    string
	ip      int
	signing dnslab.Signing
	// cert is the certificate the sink presents ("" = no STARTTLS), by
	// the DNS name it is issued for.
	cert string
	// tlsa is the DNS name of the certificate whose TLSA 3 1 1 record the
	// zone publishes for mx.<zone> ("" = none).
	tlsa string
	// sts is the MTA-STS policy id the zone publishes ("" = none), and
	// policy the lab's HTTPS server's answer.
	sts    string
	policy dnslab.Response
	// plainMX, if not 0, adds a second MX host, mx0.<zone>, preferred
	// (MX 5) over mx.<zone>: a sink on SinkIP(plainMX):25 without
	// STARTTLS and without TLSA records.
	plainMX int
}

// discoveryLab is the dnslab lab of a discovery test with its MX sinks,
// their certificates (issued by the e2e lab's CA, which the MTAs trust
// through tlsgate's CA bundle and which signs the lab's HTTPS server) and
// tlsgate's [discovery] table.
type discoveryLab struct {
	*lab
	dns   *dnslab.Lab
	certs map[string]*testpki.Cert
	sinks map[string]*mtalab.Sink
	peers map[string]mxPeer
}

func newDiscoveryLab(t *testing.T, peers []mxPeer) *discoveryLab {
	t.Helper()
	dnslab.Require(t)
	l := newLab(t)
	d := &discoveryLab{lab: l, certs: map[string]*testpki.Cert{}, sinks: map[string]*mtalab.Sink{}, peers: map[string]mxPeer{}}
	dir := filepath.Join(l.dir, "mx")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cert := func(name string) *testpki.Cert {
		if c, ok := d.certs[name]; ok {
			return c
		}
		c, err := testpki.Issue(dir, testpki.Options{Name: name, KeyType: testpki.ECDSAP256, Signer: l.pki.CA,
			Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}})
		if err != nil {
			t.Fatal(err)
		}
		d.certs[name] = c
		return c
	}
	var zones []dnslab.Zone
	for _, p := range peers {
		mx := "mx." + p.zone
		recs := dnslab.MXHost(p.zone, mx, dnslab.SinkIP(p.ip))
		if p.tlsa != "" {
			recs = append(recs, dnslab.TLSA311(mx, cert(p.tlsa).Cert))
		}
		if p.sts != "" {
			recs = append(recs, dnslab.STSRecords(p.zone, p.sts)...)
		}
		if p.plainMX != 0 {
			recs = append(recs, p.zone+". IN MX 5 mx0."+p.zone+".", dnslab.A("mx0."+p.zone, dnslab.SinkIP(p.plainMX)))
		}
		zones = append(zones, dnslab.Zone{Name: p.zone, Signing: p.signing, Records: recs})
		d.peers[p.zone] = p
	}
	d.dns = dnslab.Start(t, dnslab.Options{Zones: zones, CA: l.pki.CA})
	for _, p := range peers {
		if p.sts != "" {
			d.dns.SetPolicy(p.zone, p.policy)
		}
		addr := dnslab.SinkIP(p.ip) + ":25"
		if _, taken := d.sinks[addr]; taken {
			continue
		}
		opts := mtalab.SinkOptions{Addr: addr, Hostname: "mx." + p.zone}
		if p.cert != "" {
			opts.TLS = cert(p.cert)
		}
		d.sinks[p.zone] = mtalab.StartSink(t, opts)
		d.sinks[addr] = d.sinks[p.zone]
		if p.plainMX != 0 {
			d.sinks["mx0."+p.zone] = mtalab.StartSink(t, mtalab.SinkOptions{Addr: dnslab.SinkIP(p.plainMX) + ":25", Hostname: "mx0." + p.zone})
		}
	}
	return d
}

// discovery is tlsgate's [discovery] table for the lab.
func (d *discoveryLab) discovery(dane bool) string {
	return fmt.Sprintf("mta_sts = true\ndane = %v\nresolver = %q\nsts_ca_file = %q\ncache_file = %q\ncontrol_socket = %q\n",
		dane, dnslab.ResolverAddr, d.pki.CA.CertFile, filepath.Join(d.dir, "discovery.cache"), filepath.Join(d.dir, "control.sock"))
}

// zone returns peer's zone as newDiscoveryLab made it, with the MTA-STS
// record of id ("" = none).
func (d *discoveryLab) zone(zone, id string) dnslab.Zone {
	z, ok := d.dns.Zone(zone)
	if !ok {
		d.t.Fatalf("no zone %s", zone)
	}
	var recs []string
	for _, r := range z.Records {
		if !strings.HasPrefix(r, "_mta-sts.") && !strings.HasPrefix(r, "mta-sts.") {
			recs = append(recs, r)
		}
	}
	if id != "" {
		recs = append(recs, dnslab.STSRecords(zone, id)...)
	}
	z.Records = recs
	return z
}

// postmapQ asks the daemon as Postfix does: postmap -q KEY
// socketmap:unix:SOCK:tlspolicy. It returns the value ("" when not
// found) and an error for anything else (TEMP included).
func postmapQ(t *testing.T, pf *mtalab.Postfix, sock, key string) (string, error) {
	t.Helper()
	out, err := exec.Command("/usr/sbin/postmap", "-c", pf.ConfigDir(), "-q", key, "socketmap:unix:"+sock+":tlspolicy").CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 && len(out) == 0 {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postmap -q %s: %v: %s", key, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// TestDiscoveryPostfix runs the real Postfix 3.7 of the lab with
// smtp_dns_support_level = dnssec (from tlsgate mta-config), resolving
// through the dnslab lab's validating unbound on 127.0.0.53, against MX
// sinks on 127.0.0.35-.49:25 with the TLSA records and MTA-STS policies
// their zones publish, and tlsgate discovering them. It proves, for mail
// to each domain (what the sink got, Postfix's log and queue, the answer
// tlsgate logged):
//   - DANE (signed zone, TLSA 3 1 1 of the MX's key): "dane", delivered
//     with "Verified TLS connection established";
//   - wrong TLSA: "dane", deferred 4.7.5 "Server certificate not
//     verified" and kept queued;
//   - an unsigned zone with TLSA records never gets "dane";
//   - bogus signatures: no policy without a cache, TEMP while an MTA-STS
//     policy is held;
//   - MTA-STS enforce: "secure match=mx.<zone> servername=hostname",
//     delivered verified; a wrong certificate name deferred 4.7.5, no
//     STARTTLS deferred 4.7.4; mode testing no policy (delivered in
//     clear); 302, 404, text/html and a 65 KiB body no policy;
//   - DANE and MTA-STS together give "dane";
//   - an endpoint "encrypt min_bits = 128" on an MTA-STS domain gets
//     "secure match=... servername=hostname ciphers=high";
//   - the same endpoint on a DANE domain whose preferred MX host has no
//     TLSA records and no STARTTLS gets "dane-only ciphers=high" (with
//     "dane" Postfix would deliver there in clear, "may"): Postfix skips
//     that host ("no TLSA records found") and delivers to the DANE MX,
//     verified; the plain host never sees a connection;
//   - while Postfix lacks smtp_dns_support_level = dnssec (found by
//     postconf at a reload) no "dane" answer is sent;
//   - the cache: a vanished TXT record keeps the policy, a new id
//     refetches it (tlsgate discovery refresh), and after a restart with
//     the resolver and the HTTPS server down the answers come from
//     cache_file;
//   - tlsgate query outbound says where an answer comes from and its
//     cache state.
func TestDiscoveryPostfix(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	big := dnslab.Policy("enforce", 86400, "mx.stsbig.test") + strings.Repeat("x: y\n", 65<<10/5)
	d := newDiscoveryLab(t, []mxPeer{
		{zone: "dane.test", ip: 0, cert: "mx.dane.test", tlsa: "mx.dane.test"},
		{zone: "danebad.test", ip: 1, cert: "mx.danebad.test", tlsa: "other.test"},
		{zone: "plain.test", ip: 2, signing: dnslab.Unsigned, cert: "mx.plain.test", tlsa: "mx.plain.test"},
		{zone: "bogus.test", ip: 3, signing: dnslab.Bogus, cert: "mx.bogus.test", tlsa: "mx.bogus.test"},
		{zone: "sts.test", ip: 4, signing: dnslab.Unsigned, cert: "mx.sts.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test")}},
		{zone: "stsname.test", ip: 5, signing: dnslab.Unsigned, cert: "wrong.stsname.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsname.test")}},
		{zone: "stsplain.test", ip: 6, signing: dnslab.Unsigned, sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsplain.test")}},
		{zone: "ststesting.test", ip: 7, signing: dnslab.Unsigned, sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("testing", 86400, "mx.ststesting.test")}},
		{zone: "stsdane.test", ip: 8, cert: "mx.stsdane.test", tlsa: "mx.stsdane.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsdane.test")}},
		{zone: "stsenc.test", ip: 9, signing: dnslab.Unsigned, cert: "mx.stsenc.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stsenc.test")}},
		{zone: "bogussts.test", ip: 10, signing: dnslab.Bogus, sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.bogussts.test")}},
		{zone: "sts302.test", ip: 11, signing: dnslab.Unsigned, sts: "1",
			policy: dnslab.Response{Status: 302, Location: "https://mta-sts.sts.test/.well-known/mta-sts.txt"}},
		{zone: "sts404.test", ip: 11, signing: dnslab.Unsigned, sts: "1", policy: dnslab.Response{Status: 404, Body: "no"}},
		{zone: "ststype.test", ip: 11, signing: dnslab.Unsigned, sts: "1",
			policy: dnslab.Response{ContentType: "text/html", Body: dnslab.Policy("enforce", 86400, "mx.ststype.test")}},
		{zone: "stsbig.test", ip: 11, signing: dnslab.Unsigned, sts: "1", policy: dnslab.Response{Body: big}},
		{zone: "danepart.test", ip: 12, cert: "mx.danepart.test", tlsa: "mx.danepart.test", plainMX: 13},
	})
	transport := map[string]string{}
	for zone := range d.peers {
		transport[zone] = "smtp:" // by MX, the recipient domain as next hop
	}
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{Nameserver: "127.0.0.53", Transport: transport, MainCF: postfixRetry})
	sock := filepath.Join(pf.QueueDir(), "tlsgate", "policy.sock")
	if err := os.Mkdir(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	d.writeConfig(gateConfig{MTA: "postfix", Listen: "unix:" + sock, SocketGroup: "postfix", Discovery: d.discovery(true),
		Endpoints: []string{endpoint("enc", []string{"stsenc.test", "danepart.test"}, "[endpoint.outbound]\nencryption = true\nmin_bits = 128")}}.render(d.lab))
	applied := applyMTAConfig(t, d.lab, pf)
	for _, want := range []string{"smtp_dns_support_level = dnssec", "smtp_host_lookup = dns", "smtp_tls_dane_insecure_mx_policy = dane"} {
		if !contains(applied, want) {
			t.Fatalf("mta-config did not print %q:\n%s", want, strings.Join(applied, "\n"))
		}
	}
	g := newGate(d.lab)
	g.env = []string{"MAIL_CONFIG=" + pf.ConfigDir()}
	g.Start()
	if strings.Contains(g.Log(), "discovery-selfcheck") || strings.Contains(g.Log(), "discovery-postfix") {
		t.Fatalf("DANE is not on at start:\n%s", g.Log())
	}
	setup := time.Since(start)

	verified := func(zone string, ip int) outcome {
		return outcome{delivered: true, tls: true, tlsLog: `Verified TLS connection established to mx\.` + regexp.QuoteMeta(zone) + `\[` + regexp.QuoteMeta(dnslab.SinkIP(ip)) + `\]:25`}
	}
	notVerified := outcome{dsn: "4.7.5", reason: `Server certificate not verified`}
	cases := []struct {
		zone, answer, source string
		want                 outcome
	}{
		{"dane.test", `OK dane"`, "dane", verified("dane.test", 0)},
		{"danebad.test", `OK dane"`, "dane", notVerified},
		{"plain.test", `NOTFOUND "`, "none", outcome{delivered: true, tls: true}},
		{"sts.test", `OK secure match=mx.sts.test servername=hostname"`, "mta-sts", verified("sts.test", 4)},
		{"stsname.test", `OK secure match=mx.stsname.test servername=hostname"`, "mta-sts", notVerified},
		{"stsplain.test", `OK secure match=mx.stsplain.test servername=hostname"`, "mta-sts",
			outcome{dsn: "4.7.4", reason: `TLS is required, but was not offered by host mx\.stsplain\.test\[`}},
		{"ststesting.test", `NOTFOUND "`, "none", outcome{delivered: true}},
		{"stsdane.test", `OK dane"`, "dane", verified("stsdane.test", 8)},
		{"stsenc.test", `OK secure match=mx.stsenc.test servername=hostname ciphers=high"`, "mta-sts", verified("stsenc.test", 9)},
		{"danepart.test", `OK dane-only ciphers=high"`, "dane", verified("danepart.test", 12)},
	}
	mark := pf.LogMark()
	for _, c := range cases {
		mustSubmit(t, pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{"user@" + c.zone}, Subject: c.zone})
	}
	for _, c := range cases {
		t.Run(c.zone, func(t *testing.T) {
			checkOutcome(t, pf, mark, d.sinks[c.zone], "user@"+c.zone, c.want)
			lines := g.lookups(c.zone)
			if len(lines) == 0 {
				t.Fatalf("tlsgate logged no lookup of %s", c.zone)
			}
			for _, line := range lines {
				if !strings.Contains(line, ` answer="`+c.answer) || !strings.Contains(line, " source="+c.source+" ") {
					t.Errorf("want answer %q source=%s, logged: %s", c.answer, c.source, line)
				}
			}
		})
	}
	if got := g.lookups("stsenc.test"); len(got) > 0 && !strings.Contains(got[0], " endpoint=enc ") {
		t.Errorf("stsenc.test: the endpoint is not named: %s", got[0])
	}
	t.Run("danepart.test/mx0", func(t *testing.T) {
		// Postfix skipped the preferred MX host without TLSA records
		// (smtp_connect.c: "TLS policy lookup for DEST/HOST: REASON") and
		// never connected to it; tlsgate said why the answer is dane-only.
		if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`postfix/smtp\[\d+\]: warning: TLS policy lookup for danepart\.test/mx0\.danepart\.test: no TLSA records found`), 10*time.Second); err != nil {
			t.Error(err)
		}
		if n := len(d.sinks["mx0.danepart.test"].Sessions()); n != 0 {
			t.Errorf("the MX host without TLSA records saw %d session(s)", n)
		}
		for _, line := range g.lookups("danepart.test") {
			if !strings.Contains(line, " endpoint=enc ") || !strings.Contains(line, " merged=dane-only ") ||
				!strings.Contains(line, `reason="the endpoint requires encryption and not every MX host has usable TLSA records`) {
				t.Errorf("danepart.test logged: %s", line)
			}
		}
	})

	t.Run("answers", func(t *testing.T) {
		for _, tc := range []struct{ key, want string }{
			{"dane.test", "dane"},
			{"plain.test", ""},
			{"bogus.test", ""},
			{"sts302.test", ""},
			{"sts404.test", ""},
			{"ststype.test", ""},
			{"stsbig.test", ""},
			{"ststesting.test", ""},
			{"stsdane.test", "dane"},
			{".sts.test", ""},
			{"[mx.sts.test]:25", ""},
		} {
			if got, err := postmapQ(t, pf, sock, tc.key); err != nil || got != tc.want {
				t.Errorf("postmap -q %s: %q %v, want %q", tc.key, got, err, tc.want)
			}
		}
		// bogus.test's MX is bogus: no policy without one held; bogussts.test
		// holds an MTA-STS policy: TEMP (the MTA defers).
		out, err := exec.Command(tlsgateBin, "query", "--socket", "unix:"+sock, "outbound", "bogussts.test").Output()
		if !strings.HasPrefix(string(out), "TEMP discovered policy undecided: DANE state unknown") || err == nil {
			t.Errorf("bogussts.test: %q %v", out, err)
		}
		if n := d.dns.PolicyHits("sts.test"); n != 1 {
			t.Errorf("sts.test's policy fetched %d times, want 1 (the 302 of sts302.test is not followed)", n)
		}
		// query says where the answer comes from.
		cmd := exec.Command(tlsgateBin, "query", "-c", d.config, "outbound", "stsenc.test")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil || string(out) != "OK secure match=mx.stsenc.test servername=hostname ciphers=high\n" ||
			!strings.Contains(stderr.String(), "# source: mta-sts\n# endpoint: enc\n# cache: hit\n") {
			t.Errorf("query stsenc.test: %q %v\n%s", out, err, stderr.String())
		}
	})

	t.Run("dane-withheld", func(t *testing.T) {
		// Without smtp_dns_support_level = dnssec Postfix would turn
		// "dane" into "may": after a reload tlsgate withholds DANE, and
		// gives it back once the setting is right again.
		postconf := func(setting string) {
			t.Helper()
			if out, err := exec.Command("/usr/sbin/postconf", "-c", pf.ConfigDir(), "-e", setting).CombinedOutput(); err != nil {
				t.Fatalf("postconf -e %s: %v %s", setting, err, out)
			}
		}
		config, err := os.ReadFile(d.config)
		if err != nil {
			t.Fatal(err)
		}
		postconf("smtp_dns_support_level=disabled")
		mark := g.LogMark()
		g.Reload(string(config))
		if _, err := g.waitLogAfter(mark, regexp.MustCompile(`discovery-postfix dane=withheld error="Postfix cannot enforce DANE: set smtp_dns_support_level = dnssec \(it is .+disabled.+\)`), 10*time.Second); err != nil {
			t.Error(err)
		}
		for _, tc := range []struct{ key, want string }{
			{"dane.test", ""},
			{"stsdane.test", "secure match=mx.stsdane.test servername=hostname"},
		} {
			if got, err := postmapQ(t, pf, sock, tc.key); err != nil || got != tc.want {
				t.Errorf("DANE withheld, postmap -q %s: %q %v, want %q", tc.key, got, err, tc.want)
			}
		}
		postconf("smtp_dns_support_level=dnssec")
		mark = g.LogMark()
		g.Reload(string(config))
		if _, err := g.waitLogAfter(mark, regexp.MustCompile(`discovery-postfix dane=on`), 10*time.Second); err != nil {
			t.Error(err)
		}
		if got, err := postmapQ(t, pf, sock, "dane.test"); err != nil || got != "dane" {
			t.Errorf("DANE back, postmap -q dane.test: %q %v", got, err)
		}
	})

	t.Run("cache", func(t *testing.T) {
		// The TXT record vanishes: the policy held is still applied.
		if err := d.dns.SetZone(d.zone("sts.test", "")); err != nil {
			t.Fatal(err)
		}
		out := d.tlsgate("discovery", "-c", d.config, "refresh", "sts.test")
		if !strings.Contains(out, "postfix: OK secure match=mx.sts.test servername=hostname\n") {
			t.Errorf("after the TXT record vanished: %s", out)
		}
		if got, err := postmapQ(t, pf, sock, "sts.test"); err != nil || got != "secure match=mx.sts.test servername=hostname" {
			t.Errorf("postmap -q sts.test after the TXT record vanished: %q %v", got, err)
		}
		// A new id: the policy is fetched again.
		d.dns.SetPolicy("sts.test", dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test", "*.sts.test")})
		if err := d.dns.SetZone(d.zone("sts.test", "2")); err != nil {
			t.Fatal(err)
		}
		mark := g.LogMark()
		out = d.tlsgate("discovery", "-c", d.config, "refresh", "sts.test")
		if !strings.Contains(out, "postfix: OK secure match=mx.sts.test:.sts.test servername=hostname\n") || !strings.Contains(out, "sts_id: 2\n") {
			t.Errorf("after the id changed: %s", out)
		}
		if n := d.dns.PolicyHits("sts.test"); n != 2 {
			t.Errorf("sts.test's policy fetched %d times, want 2", n)
		}
		if _, err := g.waitLogAfter(mark, regexp.MustCompile(`discovery-change domain=sts\.test change=sts-new source=mta-sts answer="OK secure match=mx\.sts\.test:\.sts\.test servername=hostname" sts_id=2`), 10*time.Second); err != nil {
			t.Error(err)
		}
		show := d.tlsgate("discovery", "-c", d.config, "show", "dane.test")
		if !strings.Contains(show, "cached: yes\n") || !strings.Contains(show, "dane_state: usable\n") {
			t.Errorf("show dane.test:\n%s", show)
		}

		// Restart with the network down: the answers come from cache_file.
		g.Stop()
		if err := d.dns.StopResolver(); err != nil {
			t.Fatal(err)
		}
		if err := d.dns.StopSTS(); err != nil {
			t.Fatal(err)
		}
		mark = g.LogMark()
		g.Start()
		if _, err := g.waitLogAfter(mark, regexp.MustCompile(`discovery-selfcheck dane=off`), 10*time.Second); err != nil {
			t.Error(err)
		}
		for _, tc := range []struct{ key, want string }{
			{"sts.test", "secure match=mx.sts.test:.sts.test servername=hostname"},
			{"dane.test", "dane"},
			{"stsenc.test", "secure match=mx.stsenc.test servername=hostname ciphers=high"},
		} {
			if got, err := postmapQ(t, pf, sock, tc.key); err != nil || got != tc.want {
				t.Errorf("after a restart with the network down, postmap -q %s: %q %v, want %q", tc.key, got, err, tc.want)
			}
		}
		if lines := g.lookups("sts.test"); len(lines) == 0 || !strings.Contains(lines[len(lines)-1], " cache=hit ") {
			t.Errorf("sts.test after the restart was not a cache hit: %v", lines)
		}
	})
	t.Logf("setup %v, whole test %v", setup.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestDiscoverySendmail runs a real Sendmail 8.17 with the FEATURE(`sts')
// line of "tlsgate mta-config", resolving MX records through the dnslab
// lab's unbound, with tlsgate answering its map "sts" from MTA-STS
// discovery and its access map from an endpoint "encrypt" that covers the
// same domains. It proves that Sendmail applies both:
//   - sts.test, MX inside the policy's patterns with a certificate that
//     the CA bundle verifies and whose subjectAltName is the MX name: the
//     map answers the policy, the mail is delivered over verified TLS;
//   - stsmx.test, whose MX is not in the policy's patterns: deferred with
//     "450 ... not found in" (RFC 8461 §4.1, which Postfix 3.7 does not
//     enforce), kept queued, the recipient never offered, although the
//     endpoint's "encrypt" alone would have passed;
//   - stssan.test, the MX name missing from the certificate's
//     subjectAltNames: deferred with "not listed in SANs";
//   - nosts.test, no policy: NOTFOUND, delivered.
func TestDiscoverySendmail(t *testing.T) {
	mtalab.RequireSendmail(t)
	d := newDiscoveryLab(t, []mxPeer{
		{zone: "sts.test", ip: 0, signing: dnslab.Unsigned, cert: "mx.sts.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.sts.test")}},
		{zone: "stsmx.test", ip: 1, signing: dnslab.Unsigned, cert: "mx.stsmx.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx1.stsmx.test", "*.other.test")}},
		{zone: "stssan.test", ip: 2, signing: dnslab.Unsigned, cert: "wrong.stssan.test", sts: "1",
			policy: dnslab.Response{Body: dnslab.Policy("enforce", 86400, "mx.stssan.test")}},
		{zone: "nosts.test", ip: 3, signing: dnslab.Unsigned, cert: "mx.nosts.test"},
	})
	sock := filepath.Join(d.dir, "policy.sock")
	d.writeConfig(gateConfig{MTA: "sendmail", Listen: "unix:" + sock, ServerCert: d.pki.Server, Discovery: d.discovery(false),
		Endpoints: []string{endpoint("enc", []string{"sts.test", "stsmx.test", "stssan.test"}, "[endpoint.outbound]\nencryption = true")}}.render(d.lab))
	mc, afterMailer := sendmailMC(t, d.lab)
	wantMC := "FEATURE(`sts', `socket -d5 -T<TMPF> unix:" + sock + "')dnl"
	if !contains(mc, wantMC) {
		t.Fatalf("mta-config did not print %q:\n%s", wantMC, strings.Join(mc, "\n"))
	}
	g := newGate(d.lab)
	g.Start()
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{Nameserver: "127.0.0.53", MC: mc, MCAfterMailer: afterMailer, LogLevel: 14})
	mark := sm.LogMark()
	for _, zone := range []string{"sts.test", "stsmx.test", "stssan.test", "nosts.test"} {
		mustSubmit(t, sm.Addr(), message{From: "sender@lab.test", To: []string{"user@" + zone}, Subject: zone})
	}
	delivered := func(t *testing.T, zone string) {
		t.Helper()
		if !waitUntil(30*time.Second, func() bool { return countTo(d.sinks[zone].Messages())["user@"+zone] == 1 }) {
			t.Fatalf("user@%s not delivered; Sendmail's queue: %v", zone, queueSummarySM(sm))
		}
		if m := d.sinks[zone].Messages()[0]; m.TLS == nil {
			t.Errorf("user@%s arrived in clear", zone)
		}
	}
	refused := func(t *testing.T, zone, reject string) {
		t.Helper()
		rcpt := "user@" + zone
		line, err := sm.WaitLogAfter(mark, regexp.MustCompile(`ruleset=tls_rcpt, arg1=`+regexp.QuoteMeta(rcpt)+`, relay=\S+, reject=`+reject), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Sendmail: %s", line[strings.Index(line, "ruleset="):])
		if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool { return len(queued(q, rcpt)) == 1 }, 10*time.Second); err != nil {
			t.Error(err)
		}
		for _, m := range d.sinks[zone].Envelopes() {
			for _, to := range m.To {
				if strings.EqualFold(to, rcpt) {
					t.Errorf("the sink was offered %s", rcpt)
				}
			}
		}
	}
	t.Run("sts.test", func(t *testing.T) {
		delivered(t, "sts.test")
		if _, err := sm.WaitLogAfter(mark, regexp.MustCompile(`STARTTLS=client, relay=mx\.sts\.test\.?, version=TLSv1\.[23], verify=OK`), 10*time.Second); err != nil {
			t.Error(err)
		}
		lines := g.lookups("sts.test")
		if len(lines) == 0 || !strings.Contains(lines[0], `answer="OK secure match=mx.sts.test servername=hostname" source=mta-sts`) || !strings.Contains(lines[0], " map=sts ") {
			t.Errorf("tlsgate's lookups of sts.test: %q", lines)
		}
		if lines := g.lookups("tls_rcpt:user@sts.test"); len(lines) == 0 || !strings.Contains(lines[0], `answer="OK TEMP+ENCR:40"`) {
			t.Errorf("the endpoint is not asked in tlsgate's own map: %q", lines)
		}
		out, _ := exec.Command(tlsgateBin, "query", "--socket", "unix:"+sock, "--map", "sts", "outbound", "sts.test").Output()
		if string(out) != "OK secure match=mx.sts.test servername=hostname\n" {
			t.Errorf("query --map sts: %q", out)
		}
	})
	t.Run("mx-outside-patterns", func(t *testing.T) {
		refused(t, "stsmx.test", `450 4\.7\.0 <user@stsmx\.test>\.\.\. mx\.stsmx\.test not found in mx1\.stsmx\.test:\.other\.test`)
	})
	t.Run("san-mismatch", func(t *testing.T) {
		refused(t, "stssan.test", `450 4\.7\.0 <user@stssan\.test>\.\.\. mx\.stssan\.test not listed in SANs`)
	})
	t.Run("no-policy", func(t *testing.T) {
		delivered(t, "nosts.test")
		if lines := g.lookups("nosts.test"); len(lines) == 0 || !strings.Contains(lines[0], `answer="NOTFOUND "`) {
			t.Errorf("tlsgate's lookups of nosts.test: %q", lines)
		}
	})
}

// queueSummarySM lists Sendmail's queue for a failure message.
func queueSummarySM(sm *mtalab.Sendmail) string {
	q, err := sm.Queue()
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range q {
		for _, r := range e.Recipients {
			out = append(out, r.Address+": "+r.Reason)
		}
	}
	return strings.Join(out, "; ")
}
