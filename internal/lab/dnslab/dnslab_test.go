package dnslab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

func TestMain(m *testing.M) { Main(m) }

func query(t *testing.T, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r, err := Query(context.Background(), name, qtype)
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

// wantAnswer checks rcode, AD and that the answer has an RR of qtype.
func wantAnswer(t *testing.T, name string, qtype uint16, rcode int, ad bool) *dns.Msg {
	t.Helper()
	r := query(t, name, qtype)
	if r.Rcode != rcode || r.AuthenticatedData != ad {
		t.Fatalf("%s %s: rcode %s AD %v, want %s AD %v\n%v", name, dns.TypeToString[qtype],
			dns.RcodeToString[r.Rcode], r.AuthenticatedData, dns.RcodeToString[rcode], ad, r)
	}
	if rcode == dns.RcodeSuccess {
		found := false
		for _, rr := range r.Answer {
			if rr.Header().Rrtype == qtype {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s %s: no record of that type in %v", name, dns.TypeToString[qtype], r.Answer)
		}
	}
	return r
}

func ede(r *dns.Msg) uint16 {
	if o := r.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e.InfoCode
			}
		}
	}
	return 0
}

func TestNamespaceIsPrivate(t *testing.T) {
	Require(t)
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Fatalf("interfaces %v, want only lo, up", ifs)
	}
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil || !strings.Contains(string(data), "nameserver 127.0.0.53") || strings.Count(string(data), "nameserver") != 1 {
		t.Fatalf("/etc/resolv.conf = %q, %v; want only the lab resolver", data, err)
	}
	if os.Getpid() != 1 {
		t.Fatalf("test binary is PID %d, want 1 in its own PID namespace", os.Getpid())
	}
}

func TestZones(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.Issue(dir, testpki.Options{Name: "ca", KeyType: testpki.ECDSAP256, IsCA: true, Subject: pkix.Name{CommonName: "CA"}})
	if err != nil {
		t.Fatal(err)
	}
	mx, err := testpki.Issue(dir, testpki.Options{Name: "mx", KeyType: testpki.ECDSAP256, Signer: ca, DNSNames: []string{"mx.dane.test"}})
	if err != nil {
		t.Fatal(err)
	}
	tlsa := TLSA311("mx.dane.test", mx.Cert)
	l := Start(t, Options{Zones: []Zone{
		{Name: "dane.test", Records: append(MXHost("dane.test", "mx.dane.test", SinkIP(0)), tlsa)},
		{Name: "plain.test", Signing: Unsigned, Records: append(MXHost("plain.test", "mx.plain.test", SinkIP(1)),
			TLSA311("mx.plain.test", mx.Cert))},
		{Name: "bogus.test", Signing: Bogus, Records: append(MXHost("bogus.test", "mx.bogus.test", SinkIP(2)),
			STSRecords("bogus.test", "1")...)},
		{Name: "expired.test", Signing: Expired, Records: MXHost("expired.test", "mx.expired.test", SinkIP(3))},
	}})

	wantAnswer(t, ".", dns.TypeDNSKEY, dns.RcodeSuccess, true)
	r := wantAnswer(t, "_25._tcp.mx.dane.test", dns.TypeTLSA, dns.RcodeSuccess, true)
	got := r.Answer[0].(*dns.TLSA)
	if err := got.Verify(mx.Cert); err != nil {
		t.Fatalf("TLSA %v does not match the certificate: %v", got, err)
	}
	wantAnswer(t, "dane.test", dns.TypeMX, dns.RcodeSuccess, true)
	wantAnswer(t, "mx.dane.test", dns.TypeA, dns.RcodeSuccess, true)
	wantAnswer(t, "nothere.dane.test", dns.TypeA, dns.RcodeNameError, true)
	wantAnswer(t, "plain.test", dns.TypeMX, dns.RcodeSuccess, false)
	wantAnswer(t, "_25._tcp.mx.plain.test", dns.TypeTLSA, dns.RcodeSuccess, false)
	// Only the MX RRset of bogus.test is bogus; the rest validates.
	r = wantAnswer(t, "bogus.test", dns.TypeMX, dns.RcodeServerFailure, false)
	if c := ede(r); c != dns.ExtendedErrorCodeDNSBogus {
		t.Errorf("bogus.test MX: EDE %d, want %d (DNSSEC Bogus)", c, dns.ExtendedErrorCodeDNSBogus)
	}
	wantAnswer(t, "_mta-sts.bogus.test", dns.TypeTXT, dns.RcodeSuccess, true)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"expired.test", dns.TypeMX}, {"mx.expired.test", dns.TypeA}} {
		r = wantAnswer(t, q.name, q.qtype, dns.RcodeServerFailure, false)
		if c := ede(r); c != dns.ExtendedErrorCodeSignatureExpired && c != dns.ExtendedErrorCodeDNSBogus {
			t.Errorf("%s: EDE %d, want signature expired", q.name, c)
		}
	}
	wantAnswer(t, "nozone.test", dns.TypeMX, dns.RcodeNameError, true)

	// Changes are visible at once.
	if err := l.SetZone(Zone{Name: "dane.test", Records: MXHost("dane.test", "mx2.dane.test", SinkIP(4))}); err != nil {
		t.Fatal(err)
	}
	r = wantAnswer(t, "dane.test", dns.TypeMX, dns.RcodeSuccess, true)
	if mxr := r.Answer[0].(*dns.MX); mxr.Mx != "mx2.dane.test." {
		t.Fatalf("after SetZone: MX %v", mxr)
	}
	wantAnswer(t, "_25._tcp.mx.dane.test", dns.TypeTLSA, dns.RcodeNameError, true)
	if err := l.SetZone(Zone{Name: "dane.test", Signing: Unsigned, Records: MXHost("dane.test", "mx.dane.test", SinkIP(0))}); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, "dane.test", dns.TypeMX, dns.RcodeSuccess, false)
	if err := l.RemoveZone("dane.test"); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, "dane.test", dns.TypeMX, dns.RcodeNameError, true)

	// The resolver can be stopped and started.
	if err := l.StopResolver(); err != nil {
		t.Fatal(err)
	}
	if _, err := Query(context.Background(), "bogus.test", dns.TypeTXT); err == nil {
		t.Fatal("query answered with the resolver stopped")
	}
	if err := l.StartResolver(); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, "plain.test", dns.TypeMX, dns.RcodeSuccess, false)
}

func TestHTTPS(t *testing.T) {
	l := Start(t, Options{Zones: []Zone{
		{Name: "sts.test", Records: append(MXHost("sts.test", "mx.sts.test", SinkIP(0)), STSRecords("sts.test", "1")...)},
	}})
	pool := x509.NewCertPool()
	pool.AddCert(l.CA.Cert)
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	get := func() (*http.Response, string, error) {
		// Resolved through the private /etc/resolv.conf, i.e. the lab's
		// unbound.
		resp, err := client.Get("https://mta-sts.sts.test/.well-known/mta-sts.txt")
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}
	if resp, _, err := get(); err != nil || resp.StatusCode != 404 {
		t.Fatalf("no policy set: %v %v, want 404", resp, err)
	}
	body := Policy("enforce", 86400, "mx.sts.test")
	l.SetPolicy("sts.test", Response{Body: body})
	resp, got, err := get()
	if err != nil || resp.StatusCode != 200 || got != body || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("policy: %v %q %v", resp, got, err)
	}
	l.SetPolicy("sts.test", Response{Status: 302, Location: "https://elsewhere.test/"})
	if resp, _, err := get(); err != nil || resp.StatusCode != 302 || resp.Header.Get("Location") != "https://elsewhere.test/" {
		t.Fatalf("302: %v %v", resp, err)
	}
	l.SetPolicy("sts.test", Response{Body: body, CertName: "www.sts.test"})
	if _, _, err := get(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("wrong certificate name: err %v, want a certificate error", err)
	}
	if n := l.PolicyHits("sts.test"); n != 3 {
		t.Errorf("PolicyHits = %d, want 3 (the TLS failure never reached the handler)", n)
	}
	if err := l.StopSTS(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(); err == nil {
		t.Fatal("HTTPS answered after StopSTS")
	}
	if err := l.StartSTS(); err != nil {
		t.Fatal(err)
	}
	l.SetPolicy("sts.test", Response{Body: body, Delay: 50 * time.Millisecond})
	if resp, got, err := get(); err != nil || resp.StatusCode != 200 || got != body {
		t.Fatalf("after restart: %v %q %v", resp, got, err)
	}
}

func TestStopLeavesNothing(t *testing.T) {
	var pgids []int
	t.Run("lab", func(t *testing.T) {
		l := Start(t, Options{Zones: []Zone{{Name: "a.test"}}})
		pgids = []int{l.nsd.cmd.Process.Pid, l.unbound.cmd.Process.Pid}
		if len(groupMembers(pgids[0])) < 2 {
			t.Fatalf("nsd group %v: want nsd and its forked children", groupMembers(pgids[0]))
		}
	})
	for _, g := range pgids {
		if m := groupMembers(g); len(m) > 0 {
			t.Errorf("process group %d still has %v after the lab stopped", g, m)
		}
	}
	for _, a := range []string{ResolverAddr, AuthAddr} {
		c, err := net.ListenPacket("udp4", a)
		if err != nil {
			t.Errorf("%s still in use: %v", a, err)
			continue
		}
		c.Close()
	}
	if ln, err := net.Listen("tcp4", STSAddr); err != nil {
		t.Errorf("%s still in use: %v", STSAddr, err)
	} else {
		ln.Close()
	}
}
