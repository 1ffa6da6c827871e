package verdict

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/maillog"
	"github.com/tlsgate/tlsgate/internal/policy"
)

func model(t *testing.T, conf string) *Model {
	t.Helper()
	p, err := policy.Parse("test.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return New(p)
}

const postfixConf = `mta = "postfix"
[[endpoint]]
name  = "b"
hosts = ["b.example", ".b.example", "192.0.2.10"]
mode  = "monitor"
  [endpoint.inbound]
  encryption = true
  min_bits   = 128
  [endpoint.outbound]
  encryption = true
  min_bits   = 128

[[endpoint]]
name  = "c"
hosts = ["c.example", "198.51.100.7"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  cn            = "mx.c.example"
  [endpoint.outbound]
  validate_cert = true
  cn            = "mx.c.example"
`

var now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func TestOutbound(t *testing.T) {
	m := model(t, postfixConf)
	for _, tc := range []struct {
		a        Answer
		endpoint string
		text     string
		active   bool
	}{
		{m.Domain("b.example", "", now), "b", "encrypt ciphers=high", false},
		{m.Domain("mx.sub.b.example", "", now), "b", "encrypt ciphers=high", false},
		{m.Domain("c.example", "", now), "c", "secure match=mx.c.example", true},
		{m.Domain("x.c.example", "", now), "", "", false},
		{m.Host("198.51.100.7", 2525, now), "c", "secure match=mx.c.example", true},
		{m.Host("192.0.2.10", 25, now), "b", "encrypt ciphers=high", false},
		{m.Key("[c.example]:587", now), "c", "secure match=mx.c.example", true},
		{m.Domain("none.example", "", now), "", "", false},
	} {
		if tc.a.Endpoint != tc.endpoint || tc.a.Text != tc.text || tc.a.Active() != tc.active || tc.a.Err != nil {
			t.Errorf("%+v, want endpoint %q text %q active %v", tc.a, tc.endpoint, tc.text, tc.active)
		}
	}
	// A monitor endpoint gives the MTA nothing today; judged as enforced
	// its text counts.
	a := m.Domain("b.example", "", now)
	today, _ := m.Requirement(a, false)
	enforced, _ := m.Requirement(a, true)
	if !today.None || !enforced.Encrypt || enforced.MinBits != 128 {
		t.Errorf("monitor: today %+v enforced %+v", today, enforced)
	}
	if a := m.Key("[x", now); a.Err == nil {
		t.Errorf("bad key: no error")
	}
	// The wrapped policy is not changed by the enforced view.
	if m.Policy().Endpoints[0].Mode != policy.Monitor {
		t.Error("New changed the policy's modes")
	}
}

func TestInbound(t *testing.T) {
	m := model(t, postfixConf)
	c := netip.MustParseAddr("198.51.100.7")
	b := netip.MustParseAddr("192.0.2.10")
	for _, tc := range []struct {
		name   string
		s      Session
		want   Result
		refuse bool
		reason string
	}{
		{"plaintext to an enforced endpoint", Session{ClientAddr: c}, Fail, true, "check=encryption"},
		{"trusted cert: the CN is not in the log", Session{ClientAddr: c, TLSVersion: "TLSv1.3", Bits: 256, Trust: maillog.Trusted}, Undecided, false, "check=cn"},
		{"untrusted cert", Session{ClientAddr: c, TLSVersion: "TLSv1.3", Bits: 256, Trust: maillog.Untrusted}, Fail, true, "check=validate_cert"},
		{"monitor endpoint fails but refuses nothing", Session{ClientAddr: b, TLSVersion: "TLSv1.2", Bits: 56}, Fail, false, "check=min_bits"},
		{"monitor endpoint passes", Session{ClientAddr: b, TLSVersion: "TLSv1.3", Bits: 256, Trust: maillog.Anonymous}, Pass, false, ""},
		{"sender domain covers", Session{ClientAddr: netip.MustParseAddr("203.0.113.1"), Sender: "a@b.example", TLSVersion: "TLSv1.3", Bits: 256}, Pass, false, ""},
		{"not covered", Session{ClientAddr: netip.MustParseAddr("203.0.113.1")}, NotCovered, false, ""},
	} {
		v := m.Inbound(tc.s, now)
		got := strings.Join(v.Reasons, "; ")
		if v.Result != tc.want || v.Refuse != tc.refuse || !strings.Contains(got, tc.reason) {
			t.Errorf("%s: %v refuse=%v %q, want %v refuse=%v %q", tc.name, v.Result, v.Refuse, got, tc.want, tc.refuse, tc.reason)
		}
	}
}

// TestSendmailAnswers: the access-map text the model gives Sendmail is
// read back by mtapolicy as written (DNs with xtext).
func TestSendmailAnswers(t *testing.T) {
	m := model(t, `mta = "sendmail"
[[endpoint]]
name  = "s"
hosts = ["s.example"]
  [endpoint.outbound]
  validate_cert = true
  min_bits      = 128
  cn            = "mx.s.example"
  subject_dn    = "CN=mx.s.example, O=S Org, C=DE"
`)
	a := m.Domain("s.example", "u@s.example", now)
	if a.Endpoint != "s" || !strings.HasPrefix(a.Text, "TEMP+VERIFY:128+CN:mx.s.example") || a.Key != "tls_rcpt:u@s.example" {
		t.Fatalf("%+v", a)
	}
	r, err := m.Requirement(a, true)
	if err != nil || !r.Verify || r.MinBits != 128 || r.Names[0] != "mx.s.example" || r.SubjectDN != "/C=DE/O=S Org/CN=mx.s.example" {
		t.Errorf("%q read as %+v %v", a.Text, r, err)
	}
	if h := m.Host("mx.s.example", 25, now); h.Key != "" && h.Endpoint != "" {
		t.Errorf("tls_srv for an uncovered host: %+v", h)
	}
}
